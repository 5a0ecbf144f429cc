"""Fake Termux:API for tests: the ``termux-*`` commands and the phone behind them.

The executables beside this file (``termux-sms-send``, ``termux-sms-list``,
``termux-call-log``, ``termux-battery-status``, ``termux-telephony-deviceinfo``,
``termux-telephony-cellinfo``, ``termux-telephony-call``) behave like
termux-api's: same options, same JSON shapes (SmsInboxAPI, CallLogAPI,
BatteryStatusAPI, TelephonyAPI), newest entries last, times as the phone's
zone-less wall clock, and silence (nothing printed, exit 0) when the
Termux:API app would fail. The phone's state lives in the directory named by
``$TERMUX_FAKE_STATE``; tests drive it with :class:`PhoneState`.

Standard library only: the commands run under any ``python3``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

STATE_ENV = "TERMUX_FAKE_STATE"
HERE = os.path.dirname(os.path.abspath(__file__))
COMMANDS = ("termux-sms-send", "termux-sms-list", "termux-call-log", "termux-battery-status",
            "termux-telephony-deviceinfo", "termux-telephony-cellinfo", "termux-telephony-call")
SMS_TYPES = {"all": None, "inbox": "inbox", "sent": "sent", "draft": "draft", "outbox": "outbox"}

DEFAULT_PHONE = {
    "timezone": "UTC",
    "next_id": 1,
    "sms": [],
    "calls": [],
    "send_mode": "sent",  # sent | failed | silent | outbox (stays queued)
    "fail_numbers": [],
    "broken": False,  # Termux:API app missing / killed: every command prints nothing
    "battery": {"present": True, "technology": "Li-ion", "health": "GOOD", "plugged": "PLUGGED_USB",
                "status": "CHARGING", "temperature": 27.5, "voltage": 4123, "current": 350000,
                "percentage": 81, "level": 81, "scale": 100},
    "deviceinfo": {"data_enabled": "true", "data_activity": "none", "data_state": "connected",
                   "device_id": None, "device_software_version": "01", "phone_count": 1,
                   "phone_type": "gsm", "network_operator": "20801",
                   "network_operator_name": "Orange F", "network_country_iso": "fr",
                   "network_type": "lte", "network_roaming": False, "sim_country_iso": "fr",
                   "sim_operator": "20801", "sim_operator_name": "Orange", "sim_serial_number": None,
                   "sim_subscriber_id": None, "sim_state": "ready"},
    "cellinfo": [{"type": "lte", "registered": True, "asu": 40, "dbm": -100, "level": 3,
                  "ci": 1234, "pci": 7, "tac": 300, "mcc": 208, "mnc": 1}],
}


class PhoneState:
    """The fake phone's SMS provider, call log and health, in one JSON file."""

    def __init__(self, directory: str | os.PathLike[str], *, timezone: str | None = None) -> None:
        self.dir = os.fspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "phone.json")
        self.sends_path = os.path.join(self.dir, "sends.jsonl")
        if not os.path.exists(self.path):
            with self._locked() as state:
                state.update(json.loads(json.dumps(DEFAULT_PHONE)))
        if timezone:
            with self._locked() as state:
                state["timezone"] = timezone

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(os.path.join(self.dir, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(self.path, encoding="utf-8") as f:
                    state = json.load(f)
            except (OSError, ValueError):
                state = {}
            yield state
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f, ensure_ascii=False)
            os.replace(tmp, self.path)

    def read(self) -> dict[str, Any]:
        with self._locked() as state:
            return json.loads(json.dumps(state))

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which ``termux-*`` are these fakes."""
        env = dict(os.environ if base is None else base)
        env[STATE_ENV] = self.dir
        env["PATH"] = HERE + os.pathsep + env.get("PATH", "")
        return env

    # -- the phone's clock ----------------------------------------------------

    @staticmethod
    def _zone(name: str) -> dt.tzinfo:
        from zoneinfo import ZoneInfo
        return ZoneInfo(name)

    def local(self, state: dict[str, Any], at: float | None) -> str:
        at = time.time() if at is None else at
        return dt.datetime.fromtimestamp(at, self._zone(state["timezone"])).strftime("%Y-%m-%d %H:%M:%S")

    # -- scripting ------------------------------------------------------------

    def _add_sms(self, state: dict[str, Any], box: str, address: str, body: str,
                 at: float | None) -> int:
        sms_id = state["next_id"]
        state["next_id"] += 1
        state["sms"].append({"_id": sms_id, "threadid": 1 + sum(map(ord, address)) % 97,
                             "type": box, "read": box != "inbox", "address": address,
                             "body": body, "received": self.local(state, at)})
        return sms_id

    def receive_sms(self, sender: str, text: str, *, at: float | None = None) -> int:
        with self._locked() as state:
            return self._add_sms(state, "inbox", sender, text, at)

    def add_call(self, number: str, kind: str = "MISSED", *, duration: int = 0,
                 at: float | None = None, name: str | None = None) -> None:
        with self._locked() as state:
            state["calls"].append({"name": name or "UNKNOWN_CALLER", "phone_number": number,
                                   "type": kind, "date": self.local(state, at),
                                   "duration": duration_text(duration), "sim_id": "1"})

    def set(self, **changes: Any) -> None:
        """e.g. ``set(send_mode="failed")``, ``set(broken=True)``,
        ``set(battery={...})``."""
        with self._locked() as state:
            state.update(changes)

    def settle_outbox(self, box: str = "sent") -> None:
        """Messages left queued (``send_mode="outbox"``) now go out (or fail)."""
        with self._locked() as state:
            for row in state["sms"]:
                if row["type"] == "outbox":
                    row["type"] = box

    def sms(self, box: str | None = None) -> list[dict[str, Any]]:
        rows = self.read()["sms"]
        return [r for r in rows if box is None or r["type"] == box]

    def sends(self) -> list[dict[str, Any]]:
        """Every termux-sms-send invocation, in order."""
        try:
            with open(self.sends_path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []


def duration_text(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours:02d}:" if hours else "") + f"{minutes:02d}:{secs:02d}"


# -- the commands -------------------------------------------------------------


def _getopts(argv: list[str], spec: str) -> tuple[dict[str, str | bool], list[str]]:
    """POSIX getopts, as the termux-api shell scripts parse their options."""
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        if argv[i] == "--":
            i += 1
            break
        letters = argv[i][1:]
        i += 1
        while letters:
            letter, letters = letters[0], letters[1:]
            pos = spec.find(letter)
            if pos < 0:
                raise SystemExit(f"illegal option -{letter}")
            if pos + 1 < len(spec) and spec[pos + 1] == ":":
                if letters:
                    opts[letter], letters = letters, ""
                elif i < len(argv):
                    opts[letter] = argv[i]
                    i += 1
                else:
                    raise SystemExit(f"option requires an argument -- {letter}")
            else:
                opts[letter] = True
    return opts, argv[i:]


def _print_json(value: Any) -> None:
    # termux-api's JsonWriter indents with two spaces
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _newest_last(rows: list[dict[str, Any]], key: str, offset: int, limit: int) -> list[dict[str, Any]]:
    ordered = sorted(rows, key=lambda r: (r[key], r.get("_id", 0)), reverse=True)  # date DESC
    return list(reversed(ordered[offset:offset + limit]))


def run_command(name: str, argv: list[str]) -> int:
    phone = PhoneState(os.environ[STATE_ENV])
    state = phone.read()
    if state.get("broken"):
        if name == "termux-sms-send":
            with contextlib.suppress(OSError, ValueError):
                sys.stdin.read()
        return 0  # Termux:API unreachable: the command says nothing
    if name == "termux-sms-send":
        opts, rest = _getopts(argv, "hn:s:")
        if "n" not in opts:
            print("termux-sms-send: no recipient number given")
            return 1
        text = " ".join(rest) if rest else sys.stdin.read()
        text = text.strip()  # ResultReturner trims its input
        numbers = str(opts["n"]).split(",")
        slot = opts.get("s")
        with open(phone.sends_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"to": numbers, "slot": slot, "text": text, "at": time.time()}) + "\n")
        with phone._locked() as st:
            mode = st.get("send_mode", "sent")
            if mode == "silent" or (slot is not None and int(slot) >= st["deviceinfo"].get("phone_count", 1)):
                return 0  # permission missing or no such slot: Android drops it without a word
            for number in numbers:
                box = "failed" if (mode == "failed" or number in st.get("fail_numbers", [])) else \
                    "outbox" if mode == "outbox" else "sent"
                phone._add_sms(st, box, number, text, None)
        return 0
    if name == "termux-sms-list":
        opts, rest = _getopts(argv, "hdl:t:f:cno:")
        box = str(opts.get("t", "all"))
        if box not in SMS_TYPES:
            print(f"termux-sms-list: Unsupported type '{box}'. Use one of: all|inbox|sent|draft|outbox")
            return 1
        rows = state["sms"]
        if "f" in opts:
            rows = [r for r in rows if r["address"] == opts["f"]]
        elif SMS_TYPES[box]:
            rows = [r for r in rows if r["type"] == SMS_TYPES[box]]
        out = []
        for r in _newest_last(rows, "received", int(opts.get("o", 0)), int(opts.get("l", 10))):
            out.append({"threadid": r["threadid"], "type": r["type"], "read": r["read"],
                        "address": r["address"], "number": r["address"],
                        "received": r["received"], "body": r["body"], "_id": r["_id"]})
        _print_json(out)
        return 0
    if name == "termux-call-log":
        opts, rest = _getopts(argv, "hl:o:")
        calls = [dict(c, _id=i) for i, c in enumerate(state["calls"])]
        out = [{k: c[k] for k in ("name", "phone_number", "type", "date", "duration", "sim_id")}
               for c in _newest_last(calls, "date", int(opts.get("o", 0)), int(opts.get("l", 10)))]
        _print_json(out)
        return 0
    if name == "termux-battery-status":
        _print_json(state["battery"])
        return 0
    if name == "termux-telephony-deviceinfo":
        _print_json(state["deviceinfo"])
        return 0
    if name == "termux-telephony-cellinfo":
        _print_json(state["cellinfo"])
        return 0
    if name == "termux-telephony-call":
        if argv:
            phone.add_call(argv[0], "OUTGOING", duration=0)
        return 0
    print(f"{name}: not faked", file=sys.stderr)
    return 127


def main() -> None:
    sys.exit(run_command(os.path.basename(sys.argv[0]), sys.argv[1:]))
