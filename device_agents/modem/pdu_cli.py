"""``simbridge pdu encode|decode``: the PDU codec from the command line, for
debugging modems in PDU mode.

    simbridge pdu encode --to +33612345678 [--report] [--smsc +33609001390] TEXT
        one hex PDU per part, SMSC octets first, as AT+CMGS takes it
        (--verbose adds the AT+CMGS=<n> length as a "#" comment line)
    simbridge pdu decode HEX
        one JSON object; exit code 2 and a message on stderr when malformed
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from typing import Any

from device_agents.modem.pdu import (
    Deliver,
    StatusReport,
    Submit,
    decode,
    encode_submit,
)

EXIT_USAGE = 2

_TYPES = {Deliver: "deliver", Submit: "submit", StatusReport: "status_report"}


def main(argv: list[str]) -> int:
    """Entry for ``simbridge pdu``; ``argv`` excludes "pdu". Returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.run(args)
    except ValueError as exc:  # PduError (malformed PDU) or a bad argument
        print(f"simbridge pdu {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simbridge pdu", description="SMS PDU codec (3GPP TS 23.040)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    enc = sub.add_parser("encode", help="text to SMS-SUBMIT PDUs, one hex line per part")
    enc.add_argument("--to", required=True, metavar="NUMBER", help="+international or national")
    enc.add_argument("--report", action="store_true", help="request a status report (TP-SRR)")
    enc.add_argument("--smsc", metavar="NUMBER", help="SMSC address (default: the SIM's, \"00\")")
    enc.add_argument("--validity", type=int, metavar="MINUTES", help="relative validity period")
    enc.add_argument("--ucs2", action="store_true", help="force UCS-2 even for GSM 7-bit text")
    enc.add_argument("--ref", type=int, metavar="N", help="concatenation reference (0-255)")
    enc.add_argument("-v", "--verbose", action="store_true", help="show AT+CMGS=<length> per part")
    enc.add_argument("text", nargs="+", metavar="TEXT", help="message text (words joined by spaces)")
    enc.set_defaults(run=_encode)

    dec = sub.add_parser("decode", help="a PDU in hex (SMSC octets first) to JSON")
    dec.add_argument("--outgoing", action="store_true", help="read it as sent by a phone (SUBMIT)")
    dec.add_argument("hex", nargs="+", metavar="HEX", help="the PDU; spaces between groups allowed")
    dec.set_defaults(run=_decode)
    return parser


def _encode(args: argparse.Namespace) -> int:
    validity = timedelta(minutes=args.validity) if args.validity is not None else None
    parts = encode_submit(
        args.to,
        " ".join(args.text),
        smsc=args.smsc,
        request_report=args.report,
        validity=validity,
        concat_ref=args.ref,
        force_ucs2=args.ucs2,
    )
    for part in parts:
        if args.verbose:
            print(f"# part {part.seq}/{part.total}: AT+CMGS={part.tpdu_length}")
        print(part.hex)
    return 0


def _decode(args: argparse.Namespace) -> int:
    message = decode("".join(args.hex), incoming=not args.outgoing)
    print(json.dumps(as_json(message), ensure_ascii=False))
    return 0


def as_json(message: Deliver | Submit | StatusReport) -> dict[str, Any]:
    """The JSON object ``simbridge pdu decode`` prints for ``message``."""
    out: dict[str, Any] = {
        "type": _TYPES[type(message)],
        "number": message.number,
        "text": None,
        "encoding": None,
        "smsc": message.smsc,
        "timestamp": None,
        "concat": None,
        "reference": None,
    }
    if isinstance(message, StatusReport):
        out |= {
            "timestamp": message.scts.isoformat(),
            "reference": message.reference,
            "status": message.status,
            "status_code": message.status_code,
            "discharge": message.discharge.isoformat(),
        }
        return out
    out |= {"text": message.text, "encoding": message.encoding}
    if message.concat is not None:
        c = message.concat
        out["concat"] = {"ref": c.ref, "total": c.total, "seq": c.seq}
    if isinstance(message, Deliver):
        out["timestamp"] = message.timestamp.isoformat()
    else:
        out |= {
            "reference": message.reference,
            "request_report": message.request_report,
            "validity": _validity_json(message.validity),
        }
    return out


def _validity_json(validity: timedelta | datetime | None) -> int | str | None:
    """Relative validity in seconds, absolute as ISO 8601, or null."""
    if isinstance(validity, timedelta):
        return int(validity.total_seconds())
    if isinstance(validity, datetime):
        return validity.isoformat()
    return None


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
