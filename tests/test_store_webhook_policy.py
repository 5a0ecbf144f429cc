"""The webhook policy the daemon gives the store (bridge/webhooks/policy.py):
which events each account is sent, from the configuration, and a reload."""

from __future__ import annotations

import dataclasses

from conftest import make_config, running

from bridge.config import parse
from bridge.core import events
from bridge.webhooks.policy import INSIM_KINDS, WebhookPolicy


def config(**formats: str):
    accounts = [{"login": "none@x", "access_key": "k"}]
    for login, fmt in formats.items():
        account = {"login": f"{login}@x", "access_key": "k", "webhook_url": "http://127.0.0.1:9/hook",
                   "webhook_format": fmt}
        if fmt == "json":
            account["webhook_secret"] = "s"
        accounts.append(account)
    return parse({"accounts": accounts}, source="test")


def test_insim_form_carries_what_insim_callbacks_carry_and_json_carries_all():
    policy = WebhookPolicy(config(ins="insim", js="json"))
    for kind in events.ALL_KINDS:
        assert policy.wants("js@x", kind)
        assert policy.wants("ins@x", kind) == (kind in INSIM_KINDS)
        assert not policy.wants("none@x", kind)  # no webhook_url: nothing
        assert not policy.wants("unknown@x", kind)
    assert not policy.wants("ins@x", events.SMS_QUEUED) and policy.wants("ins@x", events.SMS_DELIVERED)


def test_reload_takes_the_new_accounts():
    policy = WebhookPolicy(config(ins="insim"))
    assert not policy.wants("ins@x", events.SMS_DISPATCHED)
    policy.reload(config(ins="json"))
    assert policy.wants("ins@x", events.SMS_DISPATCHED)
    cfg = config(ins="json")
    policy.reload(dataclasses.replace(cfg, accounts=tuple(dataclasses.replace(a, webhook_url=None)
                                                          for a in cfg.accounts)))
    assert not policy.wants("ins@x", events.SMS_SENT)


async def test_the_daemon_gives_the_store_its_policy_and_reloads_it(tmp_path):
    plain = make_config(tmp_path, devices=[])
    with_hook = make_config(tmp_path, devices=[], accounts=[{
        "login": "user@email.com", "access_key": "your-access-key", "webhook_url": "http://127.0.0.1:9/hook",
        "webhook_format": "json", "webhook_secret": "s"}])
    async with running(plain) as daemon:
        await daemon.store.add_call_note("user@email.com", "+33611111111", "before")
        assert await daemon.store.outbox("user@email.com") == []  # no webhook: nothing recorded
        await daemon.reload(with_hook)
        await daemon.store.add_call_note("user@email.com", "+33611111111", "after")
        [row] = await daemon.store.outbox("user@email.com")
        assert row["kind"] == events.CALL_QUALIFICATION and '"after"' in row["payload"]
