"""The console in a real browser: Debian's headless Chromium driven by
Playwright, against a real daemon with a virtual phone and a real webhook
receiver on loopback. Screenshots of every page go to tmp_path, or to the
folder named by SIMBRIDGE_CONSOLE_SCREENSHOTS (docs/console is made so)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import api_url, make_config, running, timeout, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
                                reason="Debian's chromium is not installed (.ci/run installs it)")

A = {"login": "user@email.com", "access_key": "your-access-key"}
B = {"login": "other@example.com", "access_key": "other-access-key"}


class Receiver:
    """A webhook receiver that refuses everything until told to accept."""

    def __init__(self) -> None:
        self.accept = False
        self.received: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        if not self.accept:
            return web.Response(status=503, text="receiver down for maintenance")
        self.received.append(request.query_string + (await request.text()))
        return web.Response(text="OK")


async def _receiver(receiver: Receiver) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def _shots() -> Path | None:
    folder = os.environ.get("SIMBRIDGE_CONSOLE_SCREENSHOTS")
    return Path(folder) if folder else None


async def test_console_in_chromium(tmp_path):
    from playwright.async_api import async_playwright, expect

    shots = _shots() or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    receiver = Receiver()
    runner, port = await _receiver(receiver)
    config = make_config(
        tmp_path,
        accounts=[{**A, "webhook_url": f"http://127.0.0.1:{port}/hook"}, B],
        devices=[{"id": "sim-1", "kind": "virtual", "account": A["login"], "latency": 0.05, "jitter": 0.0,
                  "delivery_delay": 0.3, "max_per_minute": 0}],
        webhooks={"max_age": timeout(1.0), "backoff_initial": 0.1, "backoff_max": 0.2, "poll_interval": 0.2},
        console={"poll_interval": 0.2})
    ms = int(timeout(15) * 1000)
    expect.set_options(timeout=ms)
    try:
        async with running(config) as daemon, aiohttp.ClientSession() as http, async_playwright() as pw:
            bearer = {"Authorization": f"Bearer {A['access_key']}"}
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            page.set_default_timeout(ms)
            await page.goto(api_url(daemon, "/console"))
            await page.screenshot(path=str(shots / "signin.png"))

            # Sign in, with the keyboard only.
            await page.get_by_label("Login").fill(A["login"])
            await page.keyboard.press("Tab")
            await page.keyboard.type(A["access_key"])
            await page.keyboard.press("Enter")
            await expect(page.locator("#who")).to_contain_text(A["login"])
            cookies = {c["name"]: c for c in await page.context.cookies()}
            assert cookies["simbridge_console"]["httpOnly"] and cookies["simbridge_console"]["sameSite"] == "Strict"

            # A contact with a name, then a thread: send from it and watch it turn delivered.
            async with http.post(api_url(daemon, "/api/v1/contact"), json={
                    "header": {"login": A["login"], "accessKey": A["access_key"]},
                    "contacts": [{"phone_number": "+33612345678", "firstname": "Ada", "lastname": "Lovelace"}]}) as r:
                assert r.status == 200
            await page.get_by_label("Number").fill("+33612345678")
            await page.get_by_role("button", name="Open").click()
            await page.get_by_label("Reply").fill("Hello from the console")
            await page.get_by_role("button", name="Send").click()
            out = page.locator(".msg.out", has_text="Hello from the console")
            await expect(out.locator(".badge")).to_have_text("delivered")
            await expect(out).to_contain_text("via sim-1")
            await expect(page.locator("#thread h2")).to_contain_text("Ada Lovelace")

            # An SMS arrives on the phone: it shows in the open thread without a reload.
            loads = []
            page.on("load", lambda _: loads.append(1))
            async with http.post(api_url(daemon, "/api/v1/simulate/incoming-sms"), headers=bearer,
                                 json={"from": "+33612345678", "text": "Reply from the phone"}) as r:
                assert r.status == 200, await r.text()
            await expect(page.locator(".msg.in", has_text="Reply from the phone")).to_be_visible()
            assert loads == []
            await page.screenshot(path=str(shots / "conversations.png"))

            # A job for tomorrow waits in the queue: cancel it, and read its history.
            tomorrow = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 86400))
            async with http.post(api_url(daemon, "/api/v1/sendsms"), json={
                    "header": {"login": A["login"], "accessKey": A["access_key"]},
                    "messages": [{"phone_number": "+33698765432", "message": "later", "date_to_send": tomorrow}]}) as r:
                queued_id = (await r.json())[0]["id_sms_api"]
            await page.get_by_role("link", name="Queue").click()
            row = page.locator(f"tr[data-id='{queued_id}']")
            await expect(row.locator(".badge")).to_have_text("queued")
            await page.screenshot(path=str(shots / "queue.png"))
            await row.get_by_role("button", name="Cancel").click()
            await expect(row.locator(".badge")).to_have_text("cancelled")
            await row.get_by_role("button", name=queued_id).click()
            await expect(row.locator(".history")).to_contain_text("cancelled by its account")
            async with http.get(api_url(daemon, f"/api/v1/sms/{queued_id}"), headers=bearer) as r:
                assert [h["status"] for h in (await r.json())["data"]["history"]] == ["queued", "cancelled"]

            # The receiver refused every event until they died: replay one once it is back.
            # (The page lists the outbox as it is when opened: wait until the deliverer gave up.)
            async def given_up():
                async with http.get(api_url(daemon, "/api/v1/webhooks/dead"), headers=bearer) as r:
                    return (await r.json())["data"]
            await wait_until(given_up, within=15, what="the refused events given up")
            await page.get_by_role("link", name="Webhooks").click()
            dead = page.locator("tr:has(.badge[data-status='dead'])")
            await expect(dead.first).to_be_visible(timeout=ms * 2)
            await page.screenshot(path=str(shots / "webhooks.png"))
            receiver.accept = True
            event_id = await dead.first.get_attribute("data-event")
            await dead.first.get_by_role("button", name="Replay").click()
            replayed = page.locator(f"tr[data-event='{event_id}']")
            await wait_until(lambda: receiver.received, within=15, what="the replayed event delivered")
            await page.reload()
            await expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
            await expect(replayed).to_have_count(0)
            await page.get_by_role("button", name="Send a test event").click()
            await wait_until(lambda: any("test" in r for r in receiver.received[1:]), within=15,
                             what="the test event delivered")

            await page.get_by_role("link", name="Devices").click()
            device = page.locator("tr[data-device='sim-1']")
            await expect(device.locator(".badge")).to_have_text("online")
            await expect(device).to_contain_text("1")  # sent today
            await device.get_by_role("button", name="Re-check").click()
            await expect(page.locator("#status")).to_contain_text("token still valid")
            await page.screenshot(path=str(shots / "devices.png"))

            # On a phone screen.
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.get_by_role("link", name="Conversations").click()
            await page.locator(".threads a", has_text="Ada Lovelace").click()
            await expect(page.locator(".msg.in", has_text="Reply from the phone")).to_be_visible()
            await page.screenshot(path=str(shots / "phone.png"), full_page=True)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width} px wide on a 390 px screen"
            await page.set_viewport_size({"width": 1200, "height": 800})

            # Sign out; the second account sees none of the first's threads.
            await page.get_by_role("button", name="Sign out").click()
            await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            await page.get_by_label("Login").fill(B["login"])
            await page.get_by_label("Access key").fill(B["access_key"])
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#who")).to_contain_text(B["login"])
            await expect(page.locator("#view")).to_contain_text("No messages yet.")
            status = await page.evaluate(
                "fetch('/console/api/threads/%2B33612345678?account=user%40email.com').then(r => r.status)")
            assert status == 403
            await browser.close()
    finally:
        await runner.cleanup()
