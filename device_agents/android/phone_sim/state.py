"""What the virtual phone holds: providers, settings, packages, the radio log.

Thread-safe (one lock): the phone's event loop and a test's thread both use it.
Saved as JSON in the phone's data folder when it has one, so a phone restarted
on the same folder keeps its messages, grants and settings.

Sources for the columns: AOSP ``frameworks/base/core/java/android/provider/
Telephony.java`` (``TextBasedSmsColumns``: ``type`` 1 inbox, 2 sent, 3 draft,
4 outbox, 5 failed, 6 queued; ``status`` -1 none, 0 complete, 32 pending, 64
failed; ``date`` / ``date_sent`` in ms) and ``CallLog.java`` (``Calls.type`` 1
incoming, 2 outgoing, 3 missed, 4 voicemail, 5 rejected, 6 blocked;
``duration`` in seconds; ``date`` in ms).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SMS_INBOX, SMS_SENT, SMS_DRAFT, SMS_OUTBOX, SMS_FAILED, SMS_QUEUED = 1, 2, 3, 4, 5, 6
STATUS_NONE, STATUS_COMPLETE, STATUS_PENDING, STATUS_FAILED = -1, 0, 32, 64
CALL_INCOMING, CALL_OUTGOING, CALL_MISSED, CALL_VOICEMAIL, CALL_REJECTED, CALL_BLOCKED = range(1, 7)

SMS_COLUMNS = ("_id", "thread_id", "address", "person", "date", "date_sent", "protocol", "read",
               "status", "type", "reply_path_present", "subject", "body", "service_center",
               "locked", "sub_id", "error_code", "creator", "seen")
CALL_COLUMNS = ("_id", "number", "presentation", "date", "duration", "type", "new", "name",
                "numbertype", "numberlabel", "countryiso", "geocoded_location",
                "subscription_id", "is_read", "features", "last_modified")


@dataclass
class Package:
    name: str
    requested: tuple[str, ...] = ()
    granted: set[str] = field(default_factory=set)  # runtime permissions granted
    uid: int = 10000
    version: str = "1.0"
    services: dict[str, str] = field(default_factory=dict)  # class -> permission it requires
    enabled: bool = True
    system: bool = False  # on the system image (not listed by `pm list packages -3`)


def _now_ms() -> int:
    return int(time.time() * 1000)


class PhoneState:
    def __init__(self, *, path: Path | None = None, serial: str = "SIMPHONE01",
                 model: str = "Pixel 7", sdk: int = 34, release: str = "14",
                 timezone: str = "Europe/Paris") -> None:
        self.path = path
        self.lock = threading.RLock()
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.props: dict[str, str] = {
            "ro.product.model": model, "ro.product.brand": "google", "ro.product.name": "panther",
            "ro.product.device": "panther", "ro.product.manufacturer": "Google",
            "ro.build.version.sdk": str(sdk), "ro.build.version.release": release,
            "ro.build.type": "user", "ro.build.tags": "release-keys", "ro.debuggable": "0",
            "ro.secure": "1", "ro.adb.secure": "1", "ro.serialno": serial,
            "ro.boot.serialno": serial, "persist.sys.timezone": timezone,
            "gsm.sim.state": "READY", "gsm.operator.alpha": "Orange F",
            "gsm.operator.numeric": "20801", "sys.boot_completed": "1",
            "ro.product.cpu.abi": "arm64-v8a", "persist.sys.locale": "fr-FR",
        }
        self.sms: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.settings: dict[str, dict[str, str]] = {"global": {}, "secure": {}, "system": {}}
        self.device_config: dict[str, dict[str, str]] = {}
        self.packages: dict[str, Package] = {}
        self.deviceidle_whitelist: set[str] = set()
        self.radio_log: list[dict[str, Any]] = []
        self.app_data: dict[str, dict[str, Any]] = {}  # per helper app, its own settings
        self.next_sms_id = 1
        self.next_call_id = 1
        if path is not None and path.exists():
            self._load(json.loads(path.read_text()))

    # -- persistence ----------------------------------------------------------------
    def _load(self, data: dict[str, Any]) -> None:
        self.props.update(data.get("props", {}))
        self.sms = data.get("sms", [])
        self.calls = data.get("calls", [])
        self.settings.update(data.get("settings", {}))
        self.device_config = data.get("device_config", {})
        self.deviceidle_whitelist = set(data.get("deviceidle_whitelist", []))
        self.radio_log = data.get("radio_log", [])
        self.app_data = data.get("app_data", {})
        self.next_sms_id = data.get("next_sms_id", 1 + max((r["_id"] for r in self.sms), default=0))
        self.next_call_id = data.get("next_call_id", 1 + max((r["_id"] for r in self.calls), default=0))
        self._saved_grants: dict[str, list[str]] = data.get("grants", {})

    def restore_grants(self) -> None:
        for name, perms in getattr(self, "_saved_grants", {}).items():
            if name in self.packages:
                self.packages[name].granted |= set(perms)

    def save(self) -> None:
        if self.path is None:
            return
        with self.lock:
            data = {"props": self.props, "sms": self.sms, "calls": self.calls,
                    "settings": self.settings, "device_config": self.device_config,
                    "deviceidle_whitelist": sorted(self.deviceidle_whitelist),
                    "radio_log": self.radio_log, "app_data": self.app_data,
                    "next_sms_id": self.next_sms_id, "next_call_id": self.next_call_id,
                    "grants": {p.name: sorted(p.granted) for p in self.packages.values()}}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
            tmp.replace(self.path)

    def notify(self, event: str, payload: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(event, payload)

    # -- providers ----------------------------------------------------------------------
    @property
    def timezone(self) -> str:
        return self.props["persist.sys.timezone"]

    def _thread_id(self, address: str) -> int:
        for row in self.sms:
            if row["address"] == address:
                return int(row["thread_id"])
        return 1 + len({r["address"] for r in self.sms})

    def add_sms(self, *, box: int, address: str, body: str, date_ms: int | None = None,
                date_sent_ms: int | None = None, status: int = STATUS_NONE, read: int | None = None,
                sub_id: int = 1, creator: str | None = None) -> dict[str, Any]:
        with self.lock:
            now = _now_ms() if date_ms is None else date_ms
            row = {"_id": self.next_sms_id, "thread_id": self._thread_id(address), "address": address,
                   "person": None, "date": now,
                   "date_sent": (date_sent_ms if date_sent_ms is not None else
                                 (now - 2000 if box == SMS_INBOX else 0)),
                   "protocol": 0 if box == SMS_INBOX else None,
                   "read": (0 if box == SMS_INBOX else 1) if read is None else read,
                   "status": status, "type": box, "reply_path_present": 0 if box == SMS_INBOX else None,
                   "subject": None, "body": body,
                   "service_center": "+33689004000" if box == SMS_INBOX else None,
                   "locked": 0, "sub_id": sub_id, "error_code": 0, "creator": creator,
                   "seen": 0 if box == SMS_INBOX else 1}
            self.next_sms_id += 1
            self.sms.append(row)
        self.save()
        return dict(row)

    def update_sms(self, sms_id: int, **changes: Any) -> None:
        with self.lock:
            for row in self.sms:
                if row["_id"] == sms_id:
                    row.update(changes)
        self.save()

    def add_call(self, *, number: str, kind: int, duration: int = 0, date_ms: int | None = None,
                 name: str | None = None, sub_id: int = 1) -> dict[str, Any]:
        with self.lock:
            now = _now_ms() if date_ms is None else date_ms
            row = {"_id": self.next_call_id, "number": number, "presentation": 1, "date": now,
                   "duration": duration, "type": kind,
                   "new": 1 if kind == CALL_MISSED else 0, "name": name, "numbertype": None,
                   "numberlabel": None, "countryiso": "FR", "geocoded_location": "",
                   "subscription_id": str(sub_id), "is_read": 0, "features": 0,
                   "last_modified": now}
            self.next_call_id += 1
            self.calls.append(row)
        self.save()
        return dict(row)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy({"sms": self.sms, "calls": self.calls, "settings": self.settings,
                                  "device_config": self.device_config, "radio_log": self.radio_log,
                                  "props": self.props})

    def log_radio(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.radio_log.append(dict(entry, at=_now_ms()))
        self.save()
