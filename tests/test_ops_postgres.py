"""Operations on a PostgreSQL store: `simbridge doctor` checks the database (against the real
server, and a port where nothing listens), and `simbridge devices` shows every box's devices
with the box that holds them."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import asyncpg
import pytest
from conftest import free_port, running, wait_until
from ops_util import cli, write_config
from pg_util import new_schema, pg_database  # noqa: F401 - the session's database fixture

from bridge import config as config_module
from bridge.cli import devices_table
from bridge.ops import doctor
from bridge.store.postgres.base import MIGRATION_LOCK
from bridge.store.schema import SCHEMA_VERSION


@pytest.fixture
async def url(pg_database):  # noqa: F811 - the fixture imported above
    return await new_schema(pg_database)


def pg_config(tmp_path: Path, url: str, *, node: str = "box-1", phone: str = "sim-1") -> Path:
    devices = (f'\n[[devices]]\nid = "{phone}"\nkind = "virtual"\naccount = "user@email.com"\n'
               "max_per_minute = 0\nlatency = 0.0\ndelivery_delay = 0.0\n")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path, _, _ = write_config(tmp_path, devices=devices, name=f"{node}.toml")
    text = path.read_text().replace('synchronous = "normal"\n', f'synchronous = "normal"\nurl = "{url}"\n'
                                                                  f'node = "{node}"\n')
    path.write_text(text)
    return path


def line(out: str, what: str) -> str:
    """The doctor's line for ``what`` (level and detail)."""
    found = [ln.strip() for ln in out.splitlines() if f" {what}: " in ln]
    assert found, f"no line for {what!r} in:\n{out}"
    return found[0]


async def test_doctor_checks_the_postgresql_store(tmp_path, url):
    path = pg_config(tmp_path, url)
    code, out, err = await cli("doctor", "--config", str(path))
    assert line(out, "store").startswith("ok") and "PostgreSQL 1" in line(out, "store"), out
    assert "answers" in line(out, "store")
    assert line(out, "store schema").startswith("ok") and "empty database" in line(out, "store schema")
    assert line(out, "store migration") == "ok    store migration: no migration under way"
    assert line(out, "clock").startswith("ok    clock: within")
    assert line(out, "data folder").startswith("ok")
    assert "password" not in out

    # Migrated by a daemon: the schema is this build's.
    async with running(config_module.load(path)):
        pass
    code, out, _ = await cli("doctor", "--config", str(path))
    assert line(out, "store schema") == f"ok    store schema: schema {SCHEMA_VERSION}, as this simbridge"

    # A migration under way (another session holds the advisory lock); then a newer schema.
    holder = await asyncpg.connect(url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        pid = await holder.fetchval("SELECT pg_backend_pid()")
        code, out, _ = await cli("doctor", "--config", str(path))
        assert line(out, "store migration").startswith(f"ok    store migration: a daemon is migrating the schema "
                                                       f"now (server pid {pid}"), out
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await holder.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION + 1)
    finally:
        await holder.close()
    code, out, _ = await cli("doctor", "--config", str(path))
    assert code == 1
    assert line(out, "store schema").startswith("FAIL  store schema: ") and \
        f"schema {SCHEMA_VERSION + 1} is newer than this simbridge ({SCHEMA_VERSION})" in out
    assert "upgrade simbridge on this box" in out


async def test_doctor_names_a_postgresql_that_does_not_answer(tmp_path):
    path = pg_config(tmp_path, f"postgresql://simbridge:a-long-secret@127.0.0.1:{free_port()}/simbridge")
    code, out, _ = await cli("doctor", "--config", str(path))
    assert code == 1
    found = line(out, "store")
    assert found.startswith("FAIL  store: postgresql://simbridge:***@127.0.0.1:") and "does not answer" in found
    assert "Connect" in found and "a-long-secret" not in out  # the refused connection, the password hidden
    assert "check [store] url" in out and "pg_hba.conf" in out


async def test_doctor_warns_of_a_clock_apart_from_the_database(url, monkeypatch):
    """This box 30 s ahead of the database's clock (its clock seen through a stand-in for ``time``)."""
    monkeypatch.setattr(doctor, "time", types.SimpleNamespace(time=lambda: time.time() + 30))
    findings = {f.what: f for f in doctor.check_postgres(url)}
    clock = findings["clock"]
    assert clock.level == doctor.WARN and "30." in clock.detail and "ahead of the database's" in clock.detail
    assert "NTP" in clock.fix
    assert findings["store"].level == doctor.OK


async def test_devices_shows_every_box_with_its_node(tmp_path, url):
    """Two daemons on one database, a phone each: `simbridge devices` on either box lists both phones,
    each with the box (node) that holds it, in the table as in --json."""
    one = pg_config(tmp_path / "one", url, node="box-1", phone="sim-1")
    two = pg_config(tmp_path / "two", url, node="box-2", phone="sim-2")
    async with running(config_module.load(one)) as d1, running(config_module.load(two)) as d2:
        def both_online() -> bool:
            rows = {r["id"]: r for r in d1.devices_view(None)}
            return all(rows.get(p, {}).get("state") == "online" for p in ("sim-1", "sim-2"))
        await wait_until(both_online, what="box-1 sees both phones online")
        assert "sim-2" in d2.dispatcher.sessions
        code, out, err = await cli("devices", "--config", str(one), "--json")
        assert code == 0, err
        nodes = {r["id"]: r["node"] for r in json.loads(out)}
        assert nodes == {"sim-1": "box-1", "sim-2": "box-2"}
        code, out, err = await cli("devices", "--config", str(one))
        assert code == 0, err
        header, *rows = out.splitlines()
        assert header.split()[:3] == ["DEVICE", "NODE", "KIND"]
        table = {r.split()[0]: r.split()[1:5] for r in rows[:2]}
        assert table == {"sim-1": ["box-1", "virtual", "user@email.com", "online"],
                         "sim-2": ["box-2", "virtual", "user@email.com", "online"]}
        assert "2 of 2 device(s) online" in out


def test_devices_table_node_column():
    table = devices_table([{"id": "a", "node": "paris-1", "kind": "modem", "account": "x", "state": "online"},
                           {"id": "b", "kind": "android", "account": "x", "state": "offline"}], now=0.0)
    header, first, second = table.splitlines()[:3]
    assert header.split()[:2] == ["DEVICE", "NODE"]
    assert first.split()[:3] == ["a", "paris-1", "modem"]
    assert second.split()[:3] == ["b", "-", "android"]  # a row without a node: said so, columns kept
