"""The job state table (bridge/core/jobstates.py), and docs/protocol.md's
state section, which is generated from it and must not drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.core import jobstates as js
from bridge.core import jobstates_doc

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_MD = ROOT / "docs" / "protocol.md"


def test_the_state_table():
    assert js.next_state(js.NEW, js.ENQUEUE) == js.QUEUED
    assert js.next_state("queued", "dispatch") == "dispatched"
    assert js.path("dispatched", "delivered") == ["sent", "delivered"]
    assert js.path("unconfirmed", "delivered") == ["sent", "delivered"]
    assert js.path("dispatched", "unconfirmed") == ["unconfirmed"]
    with pytest.raises(js.InvalidTransition):
        js.next_state("delivered", "requeue")
    with pytest.raises(js.InvalidTransition):
        js.path("sent", "queued")
    # A job that may have been sent goes back to the queue only through its own device: it is
    # that device's again when it comes back (resume), and only its rejection requeues it.
    assert js.path("unconfirmed", "queued") == ["resume", "requeue"]
    assert js.path("unconfirmed", "dispatched") == ["resume"]
    with pytest.raises(js.InvalidTransition):
        js.path("nonsense", "queued")
    for state in js.FINAL_STATES:
        assert js.TRANSITIONS[state] == {}


def test_every_state_and_move_is_described_and_reachable():
    assert set(js.TRANSITIONS) == {js.NEW, *js.STATES}
    assert set(js.STATE_MEANINGS) == set(js.STATES)
    moves = {(state, event) for state, table in js.TRANSITIONS.items() for event in table}
    assert set(js.MEANINGS) == moves
    for state in js.STATES:
        js.path(js.NEW, state)  # raises if a state cannot be reached


def test_docs_protocol_md_is_what_the_table_generates():
    document = PROTOCOL_MD.read_text(encoding="utf-8")
    assert jobstates_doc.render(document) == document, (
        "docs/protocol.md's job state section is stale: run python -m bridge.core.jobstates_doc "
        "--write docs/protocol.md")
    for state, table in js.TRANSITIONS.items():
        for event, target in table.items():
            source = "[*]" if state == js.NEW else state
            assert f"    {source} --> {target}: {event}\n" in document


def test_the_check_fails_when_the_document_drifts(tmp_path):
    stale = tmp_path / "protocol.md"
    stale.write_text(PROTOCOL_MD.read_text(encoding="utf-8").replace("queued --> dispatched: dispatch",
                                                                     "queued --> sent: dispatch"))
    run = subprocess.run([sys.executable, "-m", "bridge.core.jobstates_doc", "--check", str(stale)],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 1 and "differs" in run.stderr
    assert jobstates_doc.main(["--write", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == PROTOCOL_MD.read_text(encoding="utf-8")
    assert jobstates_doc.main(["--check", str(stale)]) == 0


def test_a_document_without_markers_is_refused(tmp_path):
    bare = tmp_path / "bare.md"
    bare.write_text("# nothing here\n")
    assert jobstates_doc.main(["--check", str(bare)]) == 2
