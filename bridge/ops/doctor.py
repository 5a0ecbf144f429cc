"""``simbridge doctor``: is this installation able to work, and if not, what to do.

Run it as the service user (``sudo -u simbridge simbridge doctor``) so that
file and serial-port permissions are checked for the right user. Each check
gives ok / warn / FAIL and, when something is wrong, what to do about it.
Exit code 1 when anything FAILed, else 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import grp
import os
import pwd
import shutil
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bridge import config as config_module
from bridge.config import Config, ConfigError
from bridge.ops import client
from bridge.store.factory import describe
from bridge.store.schema import MIGRATIONS, SCHEMA_VERSION

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    level: str
    what: str
    detail: str
    fix: str = ""


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _owner_group(path: Path) -> str:
    try:
        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return "?"


# -- the checks ------------------------------------------------------------------


def check_store(config: Config) -> Iterator[Finding]:
    if config.store.url:
        yield from check_data_dir(config)
        yield from check_postgres(config.store.url)
        return
    path = config.store.path
    folder = path.parent
    if not folder.exists():
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK | os.X_OK):
            yield Finding(OK, "store", f"{folder} does not exist yet; it will be created")
        else:
            yield Finding(FAIL, "store", f"{folder} does not exist and {parent} is not writable by {_user()}",
                          f"create it: sudo install -d -o {_user()} -m 0750 {folder} "
                          "(the unit's StateDirectory=simbridge does this for /var/lib/simbridge)")
        return
    if not os.access(folder, os.W_OK | os.X_OK):
        yield Finding(FAIL, "store", f"{folder} is not writable by {_user()} (SQLite needs to create its "
                      "-wal and -shm files there)", f"sudo chown -R {_user()} {folder}")
        return
    if not path.exists():
        yield Finding(OK, "store", f"{path} will be created at first start")
        return
    if not os.access(path, os.R_OK | os.W_OK):
        yield Finding(FAIL, "store", f"{path} is not readable and writable by {_user()}",
                      f"sudo chown {_user()} {path}*")
        return
    try:
        db = sqlite3.connect(path, timeout=2.0, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute("BEGIN IMMEDIATE")  # takes the write lock: the store is really writable
            db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            yield Finding(WARN, "store", f"{path}: busy for more than 2 s (a long write in progress?)",
                          "run doctor again; if it stays busy, look for another process using the file")
        else:
            yield Finding(FAIL, "store", f"{path}: {exc}", "check the disk (df -h) and the file's permissions")
        return
    except sqlite3.DatabaseError as exc:
        yield Finding(FAIL, "store", f"{path}: not a usable SQLite database ({exc})",
                      "restore it from a backup (see docs/operations.md)")
        return
    if version > len(MIGRATIONS):
        yield Finding(FAIL, "store", f"{path}: schema {version} is newer than this simbridge "
                      f"({len(MIGRATIONS)})", "upgrade simbridge (docs/operations.md, Upgrade)")
        return
    yield Finding(OK, "store", f"{path} writable (schema {version}"
                  f"{'' if version == len(MIGRATIONS) else f', migrated to {len(MIGRATIONS)} at next start'})")


def check_data_dir(config: Config) -> Iterator[Finding]:
    """On PostgreSQL the store's folder still holds secret.key and the agents' journals."""
    folder = config.data_dir
    if folder.exists():
        if os.access(folder, os.W_OK | os.X_OK):
            yield Finding(OK, "data folder", f"{folder} writable (secret.key, journals)")
        else:
            yield Finding(FAIL, "data folder", f"{folder} is not writable by {_user()} (secret.key and the "
                          "agents' journals live there)", f"sudo chown -R {_user()} {folder}")
        return
    parent = next((p for p in folder.parents if p.exists()), Path("/"))
    if os.access(parent, os.W_OK | os.X_OK):
        yield Finding(OK, "data folder", f"{folder} does not exist yet; it will be created")
    else:
        yield Finding(FAIL, "data folder", f"{folder} does not exist and {parent} is not writable by {_user()}",
                      f"create it: sudo install -d -o {_user()} -m 0750 {folder}")


PG_MIN_VERSION = 150000  # docs/operations.md, section 8
PG_TIMEOUT_S = 5.0
CLOCK_SKEW_WARN_S = 2.0  # leases, due dates and heartbeats are the daemons' clocks, compared across boxes
MIGRATION_STUCK_S = 60.0
PG_FIX = ("check [store] url (host, port, database, user); on the database host: systemctl status postgresql, "
          "and that pg_hba.conf lets this box's address and user in")


def check_postgres(url: str) -> Iterator[Finding]:
    """The PostgreSQL store: reachable, its version, the schema against this build, a migration
    under way (the advisory lock), the synchronous commit, and this box's clock against the database's."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # a loop of its own, whatever runs here
        yield from pool.submit(asyncio.run, _postgres_findings(url)).result()


async def _postgres_findings(url: str) -> list[Finding]:
    import asyncpg  # type: ignore[import-untyped]

    from bridge.store.postgres.base import MIGRATION_LOCK

    where = describe(url, Path())
    try:
        conn = await asyncpg.connect(url, timeout=PG_TIMEOUT_S)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return [Finding(FAIL, "store", f"{where}: the server refused the login ({exc})",
                        "check the user and password in [store] url, and pg_hba.conf on the database host")]
    except asyncpg.InvalidCatalogNameError as exc:
        return [Finding(FAIL, "store", f"{where}: {exc}",
                        "create it: CREATE DATABASE … OWNER … (docs/operations.md, section 8)")]
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        why = f"no answer within {PG_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else \
            f"{type(exc).__name__}: {exc}"
        return [Finding(FAIL, "store", f"{where}: PostgreSQL does not answer ({why})", PG_FIX)]
    out: list[Finding] = []
    try:
        before = time.time()
        db_now, version_num, version, sync = await conn.fetchrow(
            "SELECT extract(epoch FROM clock_timestamp())::float8, current_setting('server_version_num')::int, "
            "current_setting('server_version'), current_setting('synchronous_commit')")
        after = time.time()
        if version_num < PG_MIN_VERSION:
            out.append(Finding(FAIL, "store", f"{where}: PostgreSQL {version}; simbridge needs 15 or later",
                               "upgrade the server (or use a managed PostgreSQL 15+)"))
        else:
            out.append(Finding(OK, "store", f"{where}: PostgreSQL {version} answers"))
        out.append(await _schema_finding(conn, where))
        holders = await conn.fetch(
            "SELECT a.pid, extract(epoch FROM clock_timestamp() - a.backend_start)::float8 AS age, "
            "a.application_name, host(a.client_addr) AS addr FROM pg_locks AS l "
            "JOIN pg_stat_activity AS a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1",
            (MIGRATION_LOCK >> 32) & 0xFFFFFFFF, MIGRATION_LOCK & 0xFFFFFFFF)
        if holders:
            h = holders[0]
            who = f"server pid {h['pid']}" + (f" from {h['addr']}" if h["addr"] else "")
            if h["age"] > MIGRATION_STUCK_S:
                out.append(Finding(WARN, "store migration", f"the migration lock has been held by {who} for "
                                   f"{h['age']:.0f} s: other daemons wait for it to start",
                                   "if no simbridge is starting or upgrading, end that session: "
                                   f"SELECT pg_terminate_backend({h['pid']})"))
            else:
                out.append(Finding(OK, "store migration", f"a daemon is migrating the schema now ({who})"))
        else:
            out.append(Finding(OK, "store migration", "no migration under way"))
        if sync in ("off", "local"):
            out.append(Finding(WARN, "store durability", f"synchronous_commit = {sync}: a crash of the database "
                               "server may lose messages already answered as accepted",
                               "ALTER DATABASE … SET synchronous_commit = on (or remote_write/on with standbys)"))
        skew = db_now - (before + after) / 2
        if abs(skew) > CLOCK_SKEW_WARN_S + (after - before) / 2:
            out.append(Finding(WARN, "clock", f"this box's clock is {abs(skew):.1f} s "
                               f"{'behind' if skew > 0 else 'ahead of'} the database's: boxes with skewed clocks "
                               "misjudge each other's leases, heartbeats and due dates",
                               "keep every box on NTP: timedatectl set-ntp true (and the database host too)"))
        else:
            out.append(Finding(OK, "clock", f"within {max(abs(skew), 0.001):.3f} s of the database's"))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        out.append(Finding(FAIL, "store", f"{where}: {type(exc).__name__}: {exc}", PG_FIX))
    finally:
        await conn.close()
    return out


async def _schema_finding(c: Any, where: str) -> Finding:
    if await c.fetchval("SELECT to_regclass('schema_version')") is None:
        can = await c.fetchval("SELECT has_schema_privilege(current_schema(), 'CREATE')")
        if not can:
            return Finding(FAIL, "store schema", f"{where}: no tables yet, and this user may not create them "
                           "in the schema", "make the user own the database (docs/operations.md, section 8)")
        return Finding(OK, "store schema", f"empty database: the first daemon creates schema {SCHEMA_VERSION}")
    version = await c.fetchval("SELECT MAX(version) FROM schema_version") or 0
    if version > SCHEMA_VERSION:
        return Finding(FAIL, "store schema", f"{where}: schema {version} is newer than this simbridge "
                       f"({SCHEMA_VERSION})", "upgrade simbridge on this box (docs/operations.md, Upgrade)")
    if version < SCHEMA_VERSION:
        return Finding(OK, "store schema", f"schema {version}, migrated to {SCHEMA_VERSION} at next start")
    return Finding(OK, "store schema", f"schema {version}, as this simbridge")


def _daemon_up(config: Config) -> bool:
    try:
        client.request(config, "GET", "/healthz", timeout=10, raw=True)
        return True
    except client.DaemonError as exc:
        return exc.status == 503  # up, but its store takes no writes (check_daemon_store says why)
    except client.DaemonUnreachable:
        return False


def check_daemon_store(config: Config, daemon_up: bool) -> Iterator[Finding]:
    """The running daemon's store takes writes (not full, not deleted, in reach)."""
    if not daemon_up:
        return
    try:
        fault = client.store_fault(config)
    except (client.DaemonUnreachable, client.DaemonError) as exc:
        yield Finding(WARN, "store (running daemon)", f"not asked: {exc}", "")
        return
    if fault is not None:
        yield Finding(FAIL, "store (running daemon)", f"takes no writes: {fault}; the API refuses with 503",
                      "free space where the store lives, or see docs/operations.md, Storage faults")
    else:
        yield Finding(OK, "store (running daemon)", "takes writes")


def check_ports(config: Config, daemon_up: bool) -> Iterator[Finding]:
    for section, (host, port) in (("api", config.api.listen), ("agents", config.agents.listen)):
        what = f"port {section}"
        if port == 0:
            yield Finding(OK, what, f"{host}:0 (any free port)")
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemon's servers do
            try:
                s.bind((host, port))
                yield Finding(OK, what, f"{host}:{port} is free")
                continue
            except OSError as exc:
                error = exc
        if error.errno == errno.EADDRINUSE:
            if daemon_up:
                yield Finding(OK, what, f"{host}:{port} is held by the running simbridge")
            else:
                yield Finding(FAIL, what, f"{host}:{port} is in use by another program",
                              f"find it with: ss -ltnp 'sport = :{port}'; stop it or change [{section}] listen")
        elif error.errno == errno.EACCES:
            yield Finding(FAIL, what, f"{host}:{port}: permission denied (ports under 1024 need privileges)",
                          f"use a port above 1024 in [{section}] listen, or put a reverse proxy in front")
        elif error.errno == errno.EADDRNOTAVAIL:
            yield Finding(FAIL, what, f"{host}:{port}: this host has no address {host}",
                          f"fix [{section}] listen (127.0.0.1 for local only, 0.0.0.0 for every interface)")
        else:
            yield Finding(FAIL, what, f"{host}:{port}: {error.strerror}", f"check [{section}] listen")


def _adb_version(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(b"000chost:version")
        status = s.recv(4)
        if status != b"OKAY":
            raise OSError(f"unexpected answer {status!r}")
        length = int(s.recv(4), 16)
        return str(int(s.recv(length), 16))


def check_adb(config: Config, daemon_up: bool) -> Iterator[Finding]:
    phones = [d for d in config.devices if d.kind == "android"]
    if not phones:
        yield Finding(OK, "adb", "no Android device configured: adb not needed")
        return
    path = shutil.which("adb")
    if path is None:
        yield Finding(FAIL, "adb", "the adb command is not installed (Android devices are configured)",
                      "sudo apt install adb")
    else:
        yield Finding(OK, "adb", f"{path}")
    host, port = config.android.adb_server
    try:
        version = _adb_version(host, port)
        yield Finding(OK, "adb server", f"{host}:{port} answers (protocol {version})")
    except (OSError, ValueError) as exc:
        yield Finding(FAIL if daemon_up else WARN, "adb server", f"{host}:{port} does not answer ({exc})",
                      "start it: adb start-server (the daemon starts it too when it runs)")


MM_FIX = ("install systemd/99-simbridge-modems.rules (it marks the whole USB modem for ModemManager to "
          "ignore), then: sudo udevadm control --reload && sudo udevadm trigger && "
          "sudo systemctl restart ModemManager — or, if nothing else needs it: "
          "sudo systemctl disable --now ModemManager")


def _processes() -> Iterator[tuple[int, str, str]]:
    """(pid, comm, cmdline) of every process we may look at."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                comm = Path(entry.path, "comm").read_text().strip()
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            yield int(entry.name), comm, cmdline


def _holders(port: Path) -> list[tuple[int, str, str]]:
    """Other processes that have ``port`` open (from /proc/<pid>/fd)."""
    target = os.path.realpath(port)
    out = []
    for pid, comm, cmdline in _processes():
        if pid == os.getpid():
            continue
        try:
            fds = list(os.scandir(f"/proc/{pid}/fd"))
        except OSError:
            continue  # not ours to look at
        for fd in fds:
            try:
                if os.readlink(fd.path) == target:
                    out.append((pid, comm, cmdline))
                    break
            except OSError:
                continue
    return out


def check_serial(config: Config) -> Iterator[Finding]:
    modems = [d for d in config.devices if d.kind == "modem" and not d.options.get("standalone")]
    mm = [pid for pid, comm, _ in _processes() if comm == "ModemManager"] if modems else []
    for device in modems:
        port = Path(device.options["port"])
        what = f"modem {device.id}"
        if not port.exists():
            yield Finding(FAIL, what, f"{port} does not exist",
                          "plug the modem in; list candidates with ls -l /dev/serial/by-id/ /dev/simbridge/; "
                          "the udev rules in systemd/99-simbridge-modems.rules give stable names")
            continue
        if not os.access(port, os.R_OK | os.W_OK):
            group = _owner_group(port)
            yield Finding(FAIL, what, f"{port} is not readable and writable by {_user()} (group {group})",
                          f"sudo usermod -aG {group} {_user()} (the unit has SupplementaryGroups=dialout plugdev)")
            continue
        problems = 0
        for pid, comm, cmdline in _holders(port):
            if comm == "ModemManager":
                problems += 1
                yield Finding(FAIL, what, f"{port} is held by ModemManager (pid {pid}): it will grab the modem",
                              MM_FIX)
            elif not any(ours in cmdline for ours in ("simbridge", "bridge.cli", "device_agents")):
                problems += 1
                yield Finding(WARN, what, f"{port} is open in {comm} (pid {pid}): two programs on one modem "
                              "garble each other's commands", f"stop it (sudo kill {pid}) unless it is meant to be")
        if not problems:
            yield Finding(OK, what, f"{port} readable and writable")
    if mm:
        yield Finding(WARN, "ModemManager", f"running (pid {mm[0]}): it probes new modems and may take one",
                      MM_FIX)


def check_devices(config: Config, daemon_up: bool) -> Iterator[Finding]:
    if not config.devices:
        yield Finding(WARN, "devices", "no device configured: nothing can send",
                      "add a [[devices]] table (config.example.toml) and reload: systemctl reload simbridge")
        return
    if not daemon_up:
        yield Finding(WARN, "daemon", f"not running at {client.api_base(config)}: devices not checked",
                      "start it: sudo systemctl start simbridge (then: journalctl -u simbridge -e)")
        return
    try:
        rows = {r["id"]: r for r in client.devices(config)}
    except (client.DaemonUnreachable, client.DaemonError, KeyError) as exc:
        yield Finding(FAIL, "daemon", f"GET /api/v1/devices failed: {exc}",
                      "check the accounts' access keys in the configuration match the running daemon's "
                      "(systemctl reload simbridge)")
        return
    yield Finding(OK, "daemon", f"running at {client.api_base(config)}")
    hints = {"android": "the reason says what to do on the phone (docs/android.md); for route = \"termux\", "
                        "simbridge pair --device {id} prints the command to type once in Termux",
             "modem": "check the modem is plugged in and its SIM is registered; journalctl -u simbridge -e",
             "virtual": "an in-daemon virtual device should connect by itself: journalctl -u simbridge -e"}
    for device in config.devices:
        row: dict[str, Any] | None = rows.get(device.id)
        what = f"device {device.id}"
        if row is None:
            yield Finding(FAIL, what, "not known to the running daemon (configuration changed since it started)",
                          "sudo systemctl reload simbridge")
        elif row.get("state") == "online":
            extra = ", ".join(f"{k} {row[k]}%" for k in ("signal", "battery") if row.get(k) is not None)
            yield Finding(OK, what, f"online{f' ({extra})' if extra else ''}")
        else:
            hint = hints.get(device.kind, "").format(id=device.id)
            if device.options.get("standalone"):
                hint = "start its agent on the other host; check it has this device's token (simbridge pair)"
            at = f" at step {row['step']}" if row.get("step") else ""
            yield Finding(FAIL, what, f"{row.get('state', 'offline')}{at}: {row.get('reason') or 'unknown'}", hint)


def checks(config: Config) -> Iterator[Finding]:
    yield Finding(OK, "config", f"{config.source}: {len(config.accounts)} account(s), "
                  f"{len(config.devices)} device(s)")
    yield from check_store(config)
    up = _daemon_up(config)
    yield from check_daemon_store(config, up)
    yield from check_ports(config, up)
    yield from check_adb(config, up)
    yield from check_serial(config)
    yield from check_devices(config, up)


def doctor(config_path: str, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    print(f"simbridge doctor (as user {_user()})", file=out)
    try:
        config = config_module.load(config_path)
    except ConfigError as exc:
        _show(Finding(FAIL, "config", str(exc), "fix the file; check it with: simbridge check-config "
                      f"--config {config_path}"), out)
        print("\n1 problem", file=out)
        return 1
    problems = warnings = 0
    for finding in checks(config):
        _show(finding, out)
        problems += finding.level == FAIL
        warnings += finding.level == WARN
    print(f"\n{problems} problem(s), {warnings} warning(s)" if problems or warnings else "\nall good", file=out)
    return 1 if problems else 0


def _show(finding: Finding, out: TextIO) -> None:
    print(f"  {finding.level:<5} {finding.what}: {finding.detail}", file=out)
    if finding.fix and finding.level != OK:
        print(f"        -> {finding.fix}", file=out)
