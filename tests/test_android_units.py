"""The pure parts of the Android routes: content query rows, remembered
positions, Android's send limit, SMSGate state folding, Termux:API answers."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.devices.android import smsgate, termux
from bridge.devices.android.content import (
    CALL_COLUMNS,
    INBOX_COLUMNS,
    CallRow,
    ContentError,
    Mark,
    Position,
    SmsRow,
    call_event,
    ids_match,
    parse_rows,
    sms_event,
)
from bridge.devices.android.limits import ANDROID_MAX_COUNT, MARGIN_S, PartsWindow
from bridge.devices.android.steps import granted_permissions
from device_agents import protocol


def content_output(rows: list[dict[str, object]], columns: tuple[str, ...]) -> str:
    """What AOSP's ``content query`` prints (Content.java QueryCommand): nothing escaped."""
    if not rows:
        return "No result found.\n"
    return "".join(f"Row: {i} " + ", ".join(f"{c}={'NULL' if r[c] is None else r[c]}" for c in columns) + "\n"
                   for i, r in enumerate(rows))


def test_rows_with_commas_new_lines_and_nulls():
    rows = [{"_id": 7, "date": 1700000000123, "sub_id": None, "address": "+33612345678",
             "body": "Bonjour, ça va ?\nOui, address=x, body=y\n"},
            {"_id": 9, "date": 1700000000999, "sub_id": 2, "address": "ORANGE", "body": ""}]
    parsed = parse_rows(content_output(rows, INBOX_COLUMNS), INBOX_COLUMNS)
    assert parsed == [{k: (None if v is None else str(v)) for k, v in r.items()} for r in rows]
    sms = [SmsRow.from_row(r) for r in parsed]
    assert sms[0].sub_id is None and sms[1].sub_id == 2 and sms[0].body.endswith("body=y\n")


def test_no_result_and_errors():
    assert parse_rows("No result found.\n", INBOX_COLUMNS) == []
    assert parse_rows("", INBOX_COLUMNS) == []
    with pytest.raises(ContentError, match="Permission Denial"):
        parse_rows("Error while accessing provider:sms\njava.lang.SecurityException: Permission Denial", INBOX_COLUMNS)
    with pytest.raises(ContentError):
        parse_rows("Row: 0 _id=1, date=2\n", INBOX_COLUMNS)  # a column missing


def test_a_body_imitating_the_next_row_is_caught_by_the_id_check():
    evil = {"_id": 3, "date": 5, "sub_id": 1, "address": "+1", "body": "x\nRow: 1 _id=99, date=1, sub_id=1, "
                                                                        "address=+2, body=faux"}
    text = content_output([evil], INBOX_COLUMNS)
    rows = parse_rows(text, INBOX_COLUMNS)
    ids = parse_rows(content_output([{"_id": 3}], ("_id",)), ("_id",))
    assert not ids_match(rows, ids)  # two rows where there is one: read it alone
    assert parse_rows(text, INBOX_COLUMNS, single=True)[0]["body"] == evil["body"]


@given(st.lists(st.tuples(st.integers(0, 10**6), st.text(alphabet=st.characters(blacklist_categories=("Cs",)),
                                                          max_size=40)), max_size=5))
def test_any_body_round_trips_when_read_alone(items):
    for i, (ident, body) in enumerate(items):
        row = {"_id": ident, "date": 1000 + i, "duration": 3, "type": 1, "number": body}
        [parsed] = parse_rows(content_output([row], CALL_COLUMNS), CALL_COLUMNS, single=True)
        # Content.java prints a null as NULL: a text "NULL" reads back as null (its own ambiguity)
        assert parsed["number"] == (None if body == "NULL" else body)
        assert parsed["_id"] == str(ident)


def test_events_carry_ids_derived_from_the_row():
    sms = SmsRow(id=4, address="+33698765432", date_ms=1700000000500, body="Oui")
    event = sms_event(sms)
    assert event.event_id == "sms-4-1700000000500" and event.at == 1700000000.5
    assert sms_event(sms).event_id == event.event_id  # read again after a crash: the same id
    missed = call_event(CallRow(id=2, number="", date_ms=1000, duration_s=0, type=3))
    assert missed is not None and missed.direction == "missed" and missed.number == "private"
    assert call_event(CallRow(id=3, number="+1", date_ms=1, duration_s=9, type=4)) is None  # voicemail
    rejected = call_event(CallRow(id=5, number="+1", date_ms=1, duration_s=0, type=5))
    assert rejected is not None and rejected.direction == "missed"


def test_mark_catches_a_reused_id_and_survives_a_restart(tmp_path):
    mark = Mark().after([SmsRow(id=10, address="+1", date_ms=5000, body="a")])
    assert mark.where() == "_id>10 OR date>5000"
    # the newest row deleted, the next one takes its id again: caught by its date
    assert Mark(10, 5000).after([SmsRow(id=10, address="+1", date_ms=6000, body="b")]) == Mark(10, 6000)
    pos = Position(tmp_path / "p.json")
    assert pos.inbox is None
    pos.inbox, pos.calls = mark, Mark(3, 7)
    pos.save()
    again = Position(tmp_path / "p.json")
    assert (again.inbox, again.calls) == (Mark(10, 5000), Mark(3, 7))
    (tmp_path / "bad.json").write_text("{not json")
    assert Position(tmp_path / "bad.json").inbox is None


def test_android_limit_counts_parts_in_a_sliding_minute():
    now = [1000.0]
    window = PartsWindow(clock=lambda: now[0])
    assert window.max_parts == ANDROID_MAX_COUNT == 30
    for _ in range(10):
        assert window.wait_time(3) == 0
        window._stamps.extend([now[0]] * 3)
        now[0] += 1
    assert window.wait_time(1) == pytest.approx(60 + MARGIN_S - 10)  # the first 3 parts must age out
    now[0] = 1000 + 60 + MARGIN_S + 0.5
    assert window.wait_time(3) == 0
    assert window.wait_time(4) > 0  # 3 leave, 4 do not fit
    assert PartsWindow(5).wait_time(40) == 0  # a message longer than the limit goes alone, when empty


async def test_android_limit_waits_then_takes():
    now = [0.0]
    window = PartsWindow(2, 0.05, clock=lambda: now[0])
    window.period = 0.05  # no margin, for the test's clock
    assert await window.take(2) == 0
    task = asyncio.create_task(window.take(1))
    await asyncio.sleep(0)
    assert not task.done()
    now[0] = 1.0
    assert await asyncio.wait_for(task, 5) > 0


def test_smsgate_fold_moves_forward_only():
    assert smsgate.fold(None, protocol.JOB_SENT) == protocol.JOB_SENT
    assert smsgate.fold(protocol.JOB_SENT, protocol.JOB_SENT) is None
    assert smsgate.fold(protocol.JOB_DELIVERED, protocol.JOB_SENT) is None  # a late "sent" changes nothing
    assert smsgate.fold(protocol.JOB_ACCEPTED, protocol.JOB_DELIVERED) == protocol.JOB_DELIVERED  # out of order
    assert smsgate.fold(protocol.JOB_FAILED, protocol.JOB_DELIVERED) is None
    assert smsgate.fold(protocol.JOB_UNCONFIRMED, protocol.JOB_SENT) == protocol.JOB_SENT
    assert smsgate.fold(protocol.JOB_SENT, None) is None
    failed = smsgate.outcome_of({"id": "j", "state": "Failed",
                                 "recipients": [{"phoneNumber": "+1", "state": "Failed", "error": "RESULT_ERROR_NO_SERVICE"}]})
    assert failed == smsgate.Outcome(protocol.JOB_FAILED, "RESULT_ERROR_NO_SERVICE")
    assert smsgate.outcome_of({"state": "Processed", "recipients": []}).state is None


def test_termux_api_error_answer_is_recognised():
    out = json.dumps({"error": "Please grant the following permissions to use this command: "
                               "android.permission.READ_PHONE_STATE ,android.permission.SEND_SMS"}) + "\n"
    error = termux.api_error(out)
    assert error is not None and termux.missing_permissions(error) == ["READ_PHONE_STATE", "SEND_SMS"]
    assert termux.api_error("") is None
    assert termux.api_error("[]") is None


def test_install_command_and_script():
    cmd = termux.install_command(18766, "abc123")
    assert cmd.startswith("pkg install -y python termux-api; python3 -c")
    assert "http://127.0.0.1:18766/termux/install/abc123" in cmd
    script = termux.install_script("http://127.0.0.1:18766/termux/secret")
    compile(script, "installer", "exec")
    assert "--persisted" in script and "termux-job-scheduler" in script
    assert termux.derive("tok", "helper") != termux.derive("tok", "install")


def test_dumpsys_package_grants():
    dump = """    runtime permissions:
      android.permission.SEND_SMS: granted=false, flags=[ USER_SENSITIVE_WHEN_GRANTED|RESTRICTION_INSTALLER_EXEMPT ]
      android.permission.READ_PHONE_STATE: granted=true, flags=[ USER_SET ]
"""
    assert granted_permissions(dump) == {"SEND_SMS": False, "READ_PHONE_STATE": True}
    assert granted_permissions("") == {}
