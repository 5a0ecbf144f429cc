"""The Termux helper: sends SMS with Termux:API for the bridge (runs on the phone).

Python standard library only (Termux's ``pkg install python``). The bridge
serves it, and the one-time install script that starts it, on the phone's
loopback through ``adb reverse``; the person with the phone runs, once, in
Termux::

    pkg install -y python termux-api; python3 -c "import urllib.request as u; exec(u.urlopen('http://127.0.0.1:<port>/termux/install/<code>').read())"

The helper then long-polls the bridge for commands (``GET …/next``), runs
``termux-sms-send`` for each and posts what it printed and its exit code
(``POST …/result``). It holds a lock so that one copy runs; when the bridge
has a newer helper it says ``update`` and the helper replaces its file and
starts again. It is kept running by a persisted ``termux-job-scheduler`` job
(termux-api ``JobSchedulerAPI``: runs again after a reboot and every 15
minutes if it died) and ``termux-wake-lock``.

What it cannot do, and so what the bridge does itself over adb: read the SMS
inbox and call log, learn whether a message was sent (Android writes it to
``content://sms``), place calls. ``termux-sms-send`` passes no sent or
delivery intent to ``SmsManager.sendMultipartTextMessage`` (termux-api
``SmsSendAPI.java``), so there are no delivery reports on this route.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

COMMAND_TIMEOUT = 60.0  # termux-api commands wait forever when the Termux:API app is missing
POLL_TIMEOUT = 40.0


def version() -> str:
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _call(url: str, body: dict | None = None, timeout: float = POLL_TIMEOUT) -> dict | None:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the bridge on loopback
        raw = resp.read()
    return json.loads(raw) if raw else None


def run_command(cmd: dict, bin_dir: str | None) -> dict:
    if cmd.get("cmd") != "sms-send":
        return {"rc": 2, "out": f"unknown command {cmd.get('cmd')!r}"}
    exe = os.path.join(bin_dir, "termux-sms-send") if bin_dir else "termux-sms-send"
    argv = [exe, "-n", str(cmd["to"])]
    if cmd.get("slot") is not None:
        argv += ["-s", str(int(cmd["slot"]))]
    try:
        # The text on stdin: termux-api reads it there (SmsSendAPI: WithStringInput).
        proc = subprocess.run(argv, input=str(cmd.get("text", "")).encode(), capture_output=True,
                              timeout=COMMAND_TIMEOUT, check=False)
    except FileNotFoundError:
        return {"rc": 127, "out": "termux-sms-send not found: pkg install termux-api"}
    except subprocess.TimeoutExpired:
        return {"rc": 124, "out": "termux-sms-send did not return (is the Termux:API app installed?)"}
    out = (proc.stdout + proc.stderr).decode(errors="replace")[:2000]
    return {"rc": proc.returncode, "out": out}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: helper.py CONFIG.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        config = json.load(f)
    base = config["url"].rstrip("/")
    bin_dir = config.get("bin_dir")
    lock = open(os.path.join(os.path.dirname(os.path.abspath(args[0])), "helper.lock"), "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # one runs already
    lock.write(str(os.getpid()))
    lock.flush()
    mine = version()
    delay = 1.0
    while True:
        try:
            cmd = _call(f"{base}/next?version={mine}")
            delay = 1.0
        except (OSError, urllib.error.URLError, ValueError):
            time.sleep(delay)  # the phone is unplugged or the bridge restarts: try again
            delay = min(delay * 2, 5.0)
            continue
        if not cmd:
            continue
        if cmd.get("cmd") == "update":
            try:
                with urllib.request.urlopen(f"{base}/helper.py", timeout=30) as resp:  # noqa: S310
                    source = resp.read()
                path = os.path.abspath(__file__)
                with open(path + ".new", "wb") as f:
                    f.write(source)
                os.replace(path + ".new", path)
            except OSError:
                continue
            lock.close()
            os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *args])
        result = run_command(cmd, bin_dir)
        result["id"] = cmd.get("id")
        # If the answer is lost, the bridge asks the phone's SMS boxes what became of it.
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            _call(f"{base}/result", result, timeout=30)


if __name__ == "__main__":
    sys.exit(main())
