"""``simbridge pair``: a per-device token, shown once as a QR code of a
``simbridge://pair`` URI, kept in the store only as its SHA-256; ``--revoke``.

It works whether or not the daemon runs (the store is SQLite in WAL mode);
when it runs, a revocation also closes the device's live session.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import segno

from bridge.config import Config
from bridge.dispatch.tokens import new_pairing_token, token_digest
from bridge.ops import client
from bridge.ops.tls import fingerprint
from bridge.store.postgres import PgDeviceAuth
from bridge.store.sqlite import SqliteDeviceAuth
from bridge.webhooks.policy import WebhookPolicy
from device_agents.pairing import build_uri


def _lan_address() -> str:
    """The address this host reaches the network from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def agent_url(config: Config) -> str:
    """What a phone dials: ``[agents] public_url``, else derived from ``listen``."""
    if config.agents.public_url:
        return config.agents.public_url
    host, port = config.agents.listen
    if host in ("0.0.0.0", "::", ""):
        host = _lan_address()
    if ":" in host:
        host = f"[{host}]"
    return f"{'wss' if config.agents.tls_cert else 'ws'}://{host}:{port}"


def _store(config: Config) -> SqliteDeviceAuth | PgDeviceAuth:
    """The store's device tokens alone (the daemon may have the same database open)."""
    if config.store.url:
        return PgDeviceAuth(config.store.url, event_filter=WebhookPolicy(config), pool_size=1)
    return SqliteDeviceAuth(config.store.path, event_filter=WebhookPolicy(config),
                            synchronous=config.store.synchronous)


async def _issue(config: Config, device_id: str) -> str:
    store = _store(config)
    await store.open()
    try:
        token = new_pairing_token()
        await store.add_device_token(device_id, token_digest(token))
        return token
    finally:
        await store.close()


async def _revoke(config: Config, device_id: str, bump: bool) -> int:
    store = _store(config)
    await store.open()
    try:
        return await store.revoke_device(device_id, bump_generation=bump)
    finally:
        await store.close()


def _device(config: Config, device_id: str):  # noqa: ANN202
    device = config.device(device_id)
    if device is None:
        known = ", ".join(d.id for d in config.devices) or "none configured"
        raise SystemExit(f"simbridge: no device {device_id!r} in {config.source} (devices: {known})")
    return device


async def _derived_token(config: Config, device_id: str) -> str:
    """The token the daemon derives for an in-daemon device (its generation is in the store)."""
    from bridge.dispatch.tokens import TokenBook
    device = _device(config, device_id)
    book = TokenBook.load(config.data_dir, {device_id: device.token} if device.token else None)
    store = _store(config)
    await store.open()
    try:
        _, generation = await store.device_auth(device_id)
    finally:
        await store.close()
    book.set_generation(device_id, generation)
    return book.token_for(device_id)


def android_setup(config: Config, device_id: str) -> int:
    """A phone driven over USB needs no token: what to do on the phone, per route."""
    device = _device(config, device_id)
    if device.options.get("route", "smsgate") == "termux":
        from bridge.devices.android import termux
        token = asyncio.run(_derived_token(config, device.id))
        command = termux.install_command(int(device.options.get("helper_port", termux.DEFAULT_PORT)),
                                         termux.derive(token, "install", 10))
        print(f"Device {device.id} (android, route termux): with the daemon running and the phone on USB "
              f"(USB debugging allowed), open Termux on the phone and type once:\n\n  {command}\n\n"
              f"It installs the helper and keeps it running (a persisted termux-job-scheduler job); "
              f"`simbridge devices` shows when the phone is ready.")
    else:
        print(f"Device {device.id} (android, route smsgate): install SMS Gateway for Android "
              f"(https://github.com/capcom6/android-sms-gateway/releases), open it, allow its SMS "
              f"permission, switch on \"Local Server\" and tap \"Online\"; put the password it shows in "
              f"smsgate_password for this device and reload. `simbridge devices` shows each step.")
    return 0


def pair(config: Config, device_id: str, *, url: str | None = None, png: str | None = None,
         qr: bool = True) -> int:
    device = _device(config, device_id)
    if device.kind == "android" and not device.options.get("standalone"):
        return android_setup(config, device_id)
    target = url or agent_url(config)
    fp = fingerprint(config.agents.tls_cert) if config.agents.tls_cert else None
    if target.startswith("ws://") and fp:
        fp = None  # an explicit ws:// --url: no TLS, nothing to pin
    token = asyncio.run(_issue(config, device.id))
    uri = build_uri(url=target, device_id=device.id, token=token, fingerprint=fp)
    code = segno.make(uri, error="m")
    if qr:
        code.terminal(out=sys.stdout, compact=True, border=2)
    if png:
        code.save(png, scale=8, border=4)
    print(f"\nDevice {device.id} ({device.kind}, account {device.account}): scan this with the phone, or give "
          f"the agent the URI:\n\n  {uri}\n")
    if png:
        print(f"QR code written to {Path(png).resolve()}")
    print("The token is shown this once (the store keeps only its hash). "
          f"Revoke it with: simbridge pair --device {device.id} --revoke")
    if target.startswith(("ws://127.", "ws://localhost", "wss://127.", "wss://localhost")):
        print("Note: this URL is loopback: only a phone reached over USB (adb reverse) can use it; "
              "set [agents] public_url or --url for phones on Wi-Fi.")
    return 0


def revoke(config: Config, device_id: str) -> str:
    device = _device(config, device_id)
    # In-daemon agents (phones over USB included) keep their derived token.
    in_daemon = device.kind in ("virtual", "modem", "android") and not device.options.get("standalone")
    count = asyncio.run(_revoke(config, device.id, bump=not in_daemon and device.token is None))
    message = f"revoked {count} pairing token(s) of device {device.id}"
    account = config.account(device.account)
    try:
        result = client.request(config, "POST", f"/api/v1/devices/{device.id}/recheck",
                                key=account.access_key if account else None, timeout=10)
        closed = result.get("data", {}).get("closed")
        message += "; its live session was closed" if closed else "; it was not connected"
    except (client.DaemonUnreachable, client.DaemonError):
        message += " (the daemon is not running: nothing to disconnect)"
    return message
