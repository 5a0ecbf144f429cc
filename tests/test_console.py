"""The console's server side and the API doors behind it, over real sockets
against a real daemon: sign-in, the session cookie, CSRF on every POST,
accounts kept apart, operators, cancel through the state table, the outbox
read and replay, and the configuration of [console]."""

from __future__ import annotations

import time

import aiohttp
import pytest
from conftest import api_url, make_config, running, wait_until

from bridge.config import ConfigError
from bridge.store.model import OutboxEvent
from bridge.store.sqlite import SqliteStore

A = {"login": "user@email.com", "access_key": "your-access-key"}
B = {"login": "other@example.com", "access_key": "other-access-key"}
OPS = {"login": "ops@example.com", "access_key": "ops-access-key"}


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1


def bearer(account):
    return {"Authorization": f"Bearer {account['access_key']}"}


def config(tmp_path, **sections):
    sections.setdefault("console", {"operators": [OPS["login"]]})
    return make_config(tmp_path, accounts=[A, B, OPS], **sections)


async def sign_in(http, daemon, account):
    async with http.get(api_url(daemon, "/console/session")) as r:
        pre = (await r.json())["csrf"]
    async with http.post(api_url(daemon, "/console/login"),
                         data={"login": account["login"], "key": account["access_key"], "csrf": pre}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["csrf"], r


async def queued_job(http, daemon, account=A, number="+33698765432"):
    tomorrow = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 86400))
    async with http.post(api_url(daemon, "/api/v1/sendsms"), json={
            "header": {"login": account["login"], "accessKey": account["access_key"]},
            "messages": [{"phone_number": number, "message": "later", "date_to_send": tomorrow}]}) as r:
        return (await r.json())[0]["id_sms_api"]


async def test_sign_in_needs_the_pre_session_token_and_the_right_key(tmp_path):
    async with running(config(tmp_path)) as daemon, client() as http:
        async with http.get(api_url(daemon, "/console")) as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert "http" not in (await r.text()).replace("http-equiv", "")  # nothing from elsewhere
        async with http.post(api_url(daemon, "/console/login"), data={**A, "key": A["access_key"]}) as r:
            assert r.status == 403 and "CSRF" in (await r.json())["message"]
        async with http.get(api_url(daemon, "/console/session")) as r:
            body = await r.json()
            assert body["signed_in"] is False
        async with http.post(api_url(daemon, "/console/login"),
                             data={"login": A["login"], "key": "wrong", "csrf": body["csrf"]}) as r:
            assert r.status == 401 and (await r.json())["message"] == "wrong login or access key"
        csrf, response = await sign_in(http, daemon, A)
        cookie = response.cookies["simbridge_console"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
        assert not cookie["secure"]  # plain HTTP here; under TLS the cookie is Secure (test_console_tls)
        async with http.get(api_url(daemon, "/console/session")) as r:
            assert (await r.json()) == {"signed_in": True, "login": A["login"], "csrf": csrf,
                                        "operator": False, "accounts": [A["login"]]}


async def test_every_post_needs_the_csrf_token_and_logout_ends_the_session(tmp_path):
    async with running(config(tmp_path)) as daemon, client() as http:
        csrf, _ = await sign_in(http, daemon, A)
        job = await queued_job(http, daemon)
        for path in (f"/console/api/jobs/{job}/cancel", "/console/api/threads/%2B33612345678",
                     "/console/api/webhooks/1/replay", "/console/api/webhooks/test",
                     "/console/api/devices/sim-1/recheck", "/console/logout"):
            async with http.post(api_url(daemon, path), json={"message": "x"}) as r:
                assert r.status == 403, path
            async with http.post(api_url(daemon, path), json={"message": "x"},
                                 headers={"X-CSRF-Token": "guess"}) as r:
                assert r.status == 403, path
        async with http.get(api_url(daemon, f"/console/api/jobs/{job}")) as r:
            assert (await r.json())["status"] == "queued"  # nothing happened
        async with http.post(api_url(daemon, "/console/logout"), headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 200
        async with http.get(api_url(daemon, "/console/api/threads")) as r:
            assert r.status == 401


async def test_accounts_see_only_their_own_and_an_operator_sees_all(tmp_path):
    async with running(config(tmp_path)) as daemon, client() as http:
        job = await queued_job(http, daemon, A)
        async with http.get(api_url(daemon, "/api/v1/threads"), headers=bearer(B)) as r:
            assert (await r.json())["data"] == []
        async with http.get(api_url(daemon, "/api/v1/threads?account=user@email.com"), headers=bearer(B)) as r:
            assert r.status == 403
        async with http.post(api_url(daemon, f"/api/v1/sms/{job}/cancel"), headers=bearer(B)) as r:
            assert r.status == 404
        async with http.get(api_url(daemon, "/api/v1/devices"), headers=bearer(B)) as r:
            assert (await r.json())["data"] == []
        async with http.get(api_url(daemon, "/api/v1/threads?account=user@email.com"), headers=bearer(OPS)) as r:
            threads = (await r.json())["data"]
            assert [t["number"] for t in threads] == ["+33698765432"]
        async with http.get(api_url(daemon, "/api/v1/devices"), headers=bearer(OPS)) as r:
            devices = (await r.json())["data"]
            assert [d["id"] for d in devices] == ["sim-1"]
            assert devices[0]["sent_today"] == 0 and devices[0]["window"] == daemon.config.agents.window
            sim = daemon.config.device("sim-1")
            assert (devices[0]["max_per_minute"], devices[0]["max_per_hour"], devices[0]["max_per_day"]) == (
                sim.max_per_minute, sim.max_per_hour, sim.max_per_day)  # the caps it is counted against
        async with client() as ops:
            await sign_in(ops, daemon, OPS)
            async with ops.get(api_url(daemon, "/console/session")) as r:
                session = await r.json()
                assert session["operator"] is True and set(session["accounts"]) == {A["login"], B["login"],
                                                                                    OPS["login"]}
            async with ops.get(api_url(daemon, "/console/api/threads?account=user@email.com")) as r:
                assert [t["number"] for t in await r.json()] == ["+33698765432"]


async def test_cancel_through_the_api_only_while_queued(tmp_path):
    async with running(config(tmp_path)) as daemon, client() as http:
        job = await queued_job(http, daemon)
        async with http.post(api_url(daemon, f"/api/v1/sms/{job}/cancel"), headers=bearer(A)) as r:
            data = (await r.json())["data"]
            assert r.status == 200 and data["status"] == "cancelled"
            assert [h["status"] for h in data["history"]] == ["queued", "cancelled"]
            assert data["history"][-1]["reason"] == "cancelled by its account"
        async with http.post(api_url(daemon, f"/api/v1/sms/{job}/cancel"), headers=bearer(A)) as r:
            again = (await r.json())["data"]  # cancelling twice is no error, and changes nothing
            assert r.status == 200 and again["history"] == data["history"]
        async with http.post(api_url(daemon, "/api/v1/sms/nosuchjob/cancel"), headers=bearer(A)) as r:
            assert r.status == 404
        # Sent now: it is gone to the phone before anyone can cancel it.
        async with http.post(api_url(daemon, "/api/v1/threads/%2B33612345678"), headers=bearer(A),
                             json={"message": "now"}) as r:
            sent = (await r.json())["data"]["id_sms_api"]

        async def delivered():
            async with http.get(api_url(daemon, f"/api/v1/sms/{sent}"), headers=bearer(A)) as r:
                return (await r.json())["data"]["state"] == "delivered"
        await wait_until(delivered, what="delivered")
        async with http.post(api_url(daemon, f"/api/v1/sms/{sent}/cancel"), headers=bearer(A)) as r:
            assert r.status == 409 and "delivered" in (await r.json())["message"]
        async with http.get(api_url(daemon, "/api/v1/jobs?state=cancelled"), headers=bearer(A)) as r:
            assert [j["id_sms_api"] for j in (await r.json())["data"]] == [job]
        async with http.get(api_url(daemon, "/api/v1/jobs?search=12345678"), headers=bearer(A)) as r:
            assert [j["id_sms_api"] for j in (await r.json())["data"]] == [sent]
        async with http.get(api_url(daemon, f"/api/v1/jobs?search={job}"), headers=bearer(A)) as r:
            assert [j["id_sms_api"] for j in (await r.json())["data"]] == [job]
        async with http.get(api_url(daemon, "/api/v1/jobs?state=nonsense"), headers=bearer(A)) as r:
            assert r.status == 400
        await queued_job(http, daemon, B)  # another account's job counts only there
        async with http.get(api_url(daemon, "/api/v1/jobs/counts"), headers=bearer(A)) as r:
            assert (await r.json())["data"] == [{"state": "cancelled", "priority": 1, "count": 1},
                                                {"state": "delivered", "priority": 1, "count": 1}]


async def test_a_reply_is_judged_like_sendsms(tmp_path):
    async with running(config(tmp_path)) as daemon, client() as http:
        async with http.post(api_url(daemon, "/api/v1/threads/12"), headers=bearer(A), json={"message": "x"}) as r:
            assert r.status == 400 and (await r.json())["error"] == ["#007"]
        async with http.post(api_url(daemon, "/api/v1/threads/%2B33612345678"), headers=bearer(A),
                             json={"message": "   "}) as r:
            assert r.status == 400 and (await r.json())["error"] == ["#006"]
        async with http.post(api_url(daemon, "/api/v1/simulate/incoming-sms"), headers=bearer(A),
                             json={"from": "+33612345678", "text": "STOP"}) as r:
            assert r.status == 200

        async def opted_out():
            async with http.get(api_url(daemon, "/api/v1/threads/%2B33612345678"), headers=bearer(A)) as r:
                return (await r.json())["data"]["opted_out"]
        await wait_until(opted_out, what="the thread shown as opted out")
        async with http.post(api_url(daemon, "/api/v1/threads/%2B33612345678"), headers=bearer(A),
                             json={"message": "still there?"}) as r:
            assert r.status == 400 and (await r.json())["error"] == ["#003"]


async def test_events_stream_says_when_a_message_changes(tmp_path):
    async with running(config(tmp_path, console={"operators": [OPS["login"]], "poll_interval": 0.05})) as daemon, \
            client() as http:
        async with http.get(api_url(daemon, "/api/v1/events"), headers=bearer(A)) as r:
            assert (await r.json())["data"]["changed"] == 0  # no stream asked for: the stamp, once
        async with http.get(api_url(daemon, "/api/v1/events"),
                            headers={**bearer(A), "Accept": "text/event-stream"}) as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"

            async def next_change():
                while True:
                    line = await stream.content.readline()
                    if line.startswith(b"event: change"):
                        return line
            await wait_until(next_change, what="the first change event")
            await queued_job(http, daemon)
            await wait_until(next_change, what="a change event after a new message")


async def test_store_cancel_and_replay(tmp_path):
    class OnlyReceived:
        def wants(self, account, kind):
            return kind == "sms_received"
    store = SqliteStore(tmp_path / "s.db", event_filter=OnlyReceived())
    await store.open()
    try:
        from bridge.store.model import NewJob
        [enq] = await store.enqueue("a", [NewJob(kind="sms", phone_number="+33612345678", message="hi")])
        assert (await store.cancel("b", enq.job.id_sms_api, reason="x")) is None
        job = await store.cancel("a", enq.job.id_sms_api, reason="no longer wanted")
        assert job is not None and job.state == "cancelled"
        assert [h["state"] for h in await store.history(job.id)] == ["queued", "cancelled"]
        again = await store.cancel("a", enq.job.id_sms_api, reason="twice")
        assert again is not None and again.state == "cancelled"
        assert len(await store.history(job.id)) == 2
        assert [j.id for j in await store.find_jobs("a", states=["cancelled"])] == [job.id]
        assert await store.find_jobs(None, search="5678") and not await store.find_jobs("b")

        await store.record_events([OutboxEvent("a", "sms_received", "k", {"n": 1})])
        [row] = await store.claim_outbox(["a"], 10, lease_s=30)
        await store.settle_outbox(dead=[(row.id, "HTTP 503")])
        [entry] = await store.outbox_entries("a")
        assert (entry.status, entry.last_error, entry.attempts) == ("dead", "HTTP 503", 1)
        assert await store.replay_dead("b", [row.id]) == 0
        assert await store.replay_dead("a", [row.id]) == 1
        assert await store.replay_dead("a", [row.id]) == 0  # no longer dead
        [entry] = await store.outbox_entries("a")
        assert (entry.status, entry.attempts) == ("pending", 0) and entry.created >= entry.next_attempt - 1
        assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30)] == [row.id]
        assert await store.last_activity("a") >= job.updated
        assert await store.last_activity("nobody") == 0
    finally:
        await store.close()


def test_console_config_names_its_key(tmp_path):
    with pytest.raises(ConfigError, match=r"console.operators: no account 'ghost@example.com'"):
        make_config(tmp_path, accounts=[A], console={"operators": ["ghost@example.com"]})
    with pytest.raises(ConfigError, match=r"console.session_ttl"):
        make_config(tmp_path, accounts=[A], console={"session_ttl": -1})
    with pytest.raises(ConfigError, match=r"console.colour: unknown key"):
        make_config(tmp_path, accounts=[A], console={"colour": "blue"})


async def test_under_tls_the_session_cookie_is_secure(tmp_path):
    from ops_util import self_signed

    from bridge.ops.tls import client_context
    cert, key = self_signed(tmp_path, "api")
    cfg = config(tmp_path, api={"tls_cert": str(cert), "tls_key": str(key)})
    async with running(cfg) as daemon, client() as http:
        base = f"https://127.0.0.1:{daemon.api_port}"
        ssl = client_context(cert)
        async with http.get(base + "/console/session", ssl=ssl) as r:
            pre = (await r.json())["csrf"]
            assert r.cookies["simbridge_console_pre"]["secure"]
        async with http.post(base + "/console/login", ssl=ssl,
                             data={"login": A["login"], "key": A["access_key"], "csrf": pre}) as r:
            assert r.status == 200
            cookie = r.cookies["simbridge_console"]
            assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
