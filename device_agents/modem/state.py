"""What a modem agent must remember across restarts, beside its journal.

One small JSON file, rewritten atomically (write, flush, rename) on every
change. It holds:

``sends``
    per SMS job being transmitted or awaiting its status reports: recipient,
    part count, concatenation reference, the TP-MR of every part the modem
    confirmed, the part being attempted (written *before* its AT+CMGS, so
    that a crash or an unplug knows the part's fate is uncertain), and the
    parts' delivery outcomes.
``refs``
    ``"<TP-MR>:<last 9 digits of the recipient>"`` → ``[job id, part]``: how
    a status report (+CDS / +CDSI) finds its job, even after a restart.
``incoming``
    SIM records already reported to the bridge and not yet deleted:
    ``"<index>:<pdu hash>"`` → event id. A record is deleted from the SIM only
    once the bridge has acked its event.
``concat_ref``
    the rolling reference for concatenated SMS.
``bad_pin``
    a hash of a PIN the SIM refused: never tried again (SIM tries are few).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

RETENTION_S = 7 * 86400


def ref_key(mr: int, number: str) -> str:
    digits = "".join(c for c in number if c.isdigit())
    return f"{mr}:{digits[-9:]}"


def pin_hash(pin: str) -> str:
    return hashlib.sha256(f"simbridge-pin:{pin}".encode()).hexdigest()[:32]


class ModemState:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.sends: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, list[Any]] = {}
        self.incoming: dict[str, str] = {}
        self.concat_ref = int.from_bytes(os.urandom(1), "big")
        self.bad_pin: str | None = None
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except ValueError:
            return  # torn by a crash mid-rename cannot happen; a hand-edited file can
        self.sends = dict(data.get("sends", {}))
        self.refs = dict(data.get("refs", {}))
        self.incoming = dict(data.get("incoming", {}))
        self.concat_ref = int(data.get("concat_ref", self.concat_ref)) & 0xFF
        self.bad_pin = data.get("bad_pin")
        cutoff = time.time() - RETENTION_S
        for job_id in [j for j, s in self.sends.items() if s.get("at", 0) < cutoff]:
            self.forget_send(job_id)

    def save(self) -> None:
        data = {"concat_ref": self.concat_ref, "bad_pin": self.bad_pin, "sends": self.sends,
                "refs": self.refs, "incoming": self.incoming}
        tmp = self.path + ".tmp"
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, self.path)

    def next_concat_ref(self) -> int:
        self.concat_ref = (self.concat_ref + 1) & 0xFF
        return self.concat_ref

    def forget_send(self, job_id: str) -> None:
        self.sends.pop(job_id, None)
        for key in [k for k, (j, _) in self.refs.items() if j == job_id]:
            del self.refs[key]
