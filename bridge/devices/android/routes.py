"""How a phone sends: one class per route (``route = "smsgate" | "termux"``).

A route prepares itself on a plugged phone (:meth:`prepare` returns the
first :class:`~.steps.Step` that is not done, or None when it can send),
sends one job, and says what it can observe (``capabilities``). What both
routes share — the grants, the battery and phantom-process settings — is in
:func:`grant` and :func:`tune`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from device_agents import protocol
from device_agents.common import same_number
from device_agents.runtime import Reporter

from . import smsgate, termux
from .adb import Phone, Shell
from .content import SENT_COLUMNS, SMS_TYPE_FAILED, SMS_TYPE_SENT, SMS_URI, Mark, SmsRow
from .steps import ERROR, NEEDS_USER, Step, granted_permissions

log = logging.getLogger(__name__)


class Route(Protocol):
    name: str
    package: str
    capabilities: protocol.Capabilities

    async def prepare(self, phone: Phone) -> Step | None: ...

    async def send(self, job: protocol.SendSms, report: Reporter) -> None: ...

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]: ...

    def resume(self, job: protocol.Job, report: Reporter) -> None: ...

    def attach(self, report: Reporter) -> None:
        """Where reports that come later (webhooks, polls) go: the phone's agent runtime."""

    async def aclose(self) -> None: ...


def why(result: Shell) -> str:
    """The telling line of a refusal: the Java exception (``ShellCommand.exec`` prints
    "Exception occurred while executing …" first, the exception on the next line)."""
    lines = [line.strip() for line in result.text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("java.") or "Exception:" in line or line.startswith("Error"):
            return line[:200]
    return lines[0][:200] if lines else f"exit {result.returncode}"


async def grant(phone: Phone, package: str, permissions: tuple[str, ...], label: str) -> Step | None:
    """``pm grant`` each permission, then check what Android really granted.

    ``pm grant`` throws for a permission the package does not request (AOSP
    ``PermissionManagerService``: "has not requested permission"), and
    silently skips a hard-restricted one (SMS, call log: Android 10+) that the
    app's installer did not allow-list; ``dumpsys package`` says which are
    granted. What is missing is a step for the person with the phone."""
    refused: list[str] = []
    for name in permissions:
        result = await phone.shell("pm", "grant", package, f"android.permission.{name}")
        if not result.ok:
            refused.append(f"{name} ({why(result)})")
    dump = await phone.shell("dumpsys", "package", package)
    state = granted_permissions(dump.stdout)
    missing = [n for n in permissions if state and not state.get(n, False)
               and not any(r.startswith(n + " ") for r in refused)]
    if not refused and not missing:
        return None
    what = "; ".join(refused + [f"{n} (not granted)" for n in missing])
    return Step(NEEDS_USER, "permissions",
                f"Android did not grant {label} {what}. On the phone: Settings → Apps → {label} → "
                f"Permissions → allow SMS and Phone (on Android 13+, first ⋮ → \"Allow restricted "
                f"settings\" in the app's info page if SMS is greyed out)")


async def tune(phone: Phone, package: str, *, phantom: bool) -> list[str]:
    """Battery optimisation off for ``package`` and, for Termux, the phantom-process
    killer off, where the shell may; a note for each thing it may not."""
    notes: list[str] = []
    sdk = int((await phone.getprop("ro.build.version.sdk")) or 0)
    # DeviceIdleController's shell command (`dumpsys deviceidle whitelist +pkg`) needs
    # DEVICE_POWER, which the shell user holds (AOSP packages/Shell/AndroidManifest.xml).
    result = await phone.shell("dumpsys", "deviceidle", "whitelist", f"+{package}")
    if not result.ok:
        notes.append(f"battery optimisation could not be turned off for {package} ({result.text[:120]}): "
                     f"Settings → Apps → {package} → Battery → Unrestricted")
    if phantom and sdk >= 31:
        # Android 12+ kills the phantom processes (children of apps, e.g. Termux's
        # python) beyond 32 (ActivityManagerConstants.MAX_PHANTOM_PROCESSES;
        # termux-app#2366). Android 12L/13 have a setting to turn the monitor off
        # (Settings.Global "settings_enable_monitor_phantom_procs"); on 12 only the
        # device_config flag, which Google Play services may sync back unless sync
        # is disabled.
        steps: list[tuple[str, ...]] = [
            ("device_config", "set_sync_disabled_for_tests", "persistent"),
            ("device_config", "put", "activity_manager", "max_phantom_processes", "2147483647")]
        if sdk >= 32:
            steps.append(("settings", "put", "global", "settings_enable_monitor_phantom_procs", "false"))
        for argv in steps:
            r = await phone.shell(*argv)
            if not r.ok:
                notes.append(f"`{' '.join(argv)}` refused ({r.text[:120]}): Android may kill the helper; "
                             f"Developer options → \"Disable child process restrictions\"")
    return notes


ROUTE_WAIT_S = 120.0  # a send waits this long for a route that stopped working to come back
WATCH_MAX_S = 3 * 86400.0  # a delivery report later than this is not waited for (SMS validity is shorter)


class Readiness:
    """Whether a route can send now; sends wait for it (a step the person fixes, or
    the helper coming back) rather than bouncing their job back to the queue at once."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._event.is_set()

    @ready.setter
    def ready(self, value: bool) -> None:
        (self._event.set if value else self._event.clear)()

    async def wait(self, limit_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await self._event.wait()
        return self._event.is_set()


# -- SMSGate ---------------------------------------------------------------------------


class SmsGateRoute:
    """SMS Gateway for Android, local server, over ``adb forward``; webhooks back through ``adb reverse``."""

    name = "smsgate"
    package = smsgate.PACKAGE
    capabilities = protocol.Capabilities(sms=True, calls=True, delivery_reports=True, multipart=True,
                                         dual_sim=True)

    def __init__(self, *, device_id: str, options: dict[str, Any], secret: str, sim_slot: int | None,
                 poll_interval: float = 20.0) -> None:
        self.device_id = device_id
        self.port = int(options.get("smsgate_port", smsgate.DEFAULT_PORT))
        self.user = str(options.get("smsgate_user", smsgate.DEFAULT_USER))
        self.password = options.get("smsgate_password")
        self.webhook_port = int(options.get("webhook_port", 18765))
        self.sim_slot = sim_slot
        self.poll_interval = poll_interval
        self.receiver = smsgate.WebhookReceiver(secret, self._on_webhook)
        self.client: smsgate.GateClient | None = None
        self._states: dict[str, str | None] = {}  # job id -> folded state, for jobs still moving
        self._since: dict[str, float] = {}  # job id -> when it was handed over (time.time())
        self._report: Reporter | None = None
        self._poller: asyncio.Task[None] | None = None
        self._readiness = Readiness()
        self.route_wait = ROUTE_WAIT_S

    @property
    def ready(self) -> bool:
        return self._readiness.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._readiness.ready = value

    async def prepare(self, phone: Phone) -> Step | None:
        self.ready = False
        if self.package not in await phone.packages():
            return Step(NEEDS_USER, "app",
                        "install SMS Gateway for Android (me.capcom.smsgateway) from "
                        "https://github.com/capcom6/android-sms-gateway/releases, open it once and allow "
                        "its SMS permission")
        step = await grant(phone, self.package, smsgate.PERMISSIONS, "SMS Gateway")
        if step is not None:
            return step
        if not self.password:
            return Step(NEEDS_USER, "app",
                        f"set smsgate_password = \"…\" for device {self.device_id} in the configuration: "
                        f"the password shown in SMS Gateway's \"Local Server\" section, then reload")
        local = await phone.forward(self.port)
        if self.client is not None:
            await self.client.close()
        self.client = smsgate.GateClient(port=local, user=self.user, password=str(self.password))
        try:
            await self.client.health()
            await self.client.check_auth()
        except smsgate.GateUnreachable:
            return Step(NEEDS_USER, "app",
                        f"SMS Gateway's local server does not answer on the phone's port {self.port}: open "
                        f"the app, switch on \"Local Server\" and tap \"Offline\" so that it says \"Online\"")
        except smsgate.GateError as exc:
            if exc.status == 401:
                return Step(NEEDS_USER, "app",
                            f"SMS Gateway refused the user/password of device {self.device_id} (HTTP 401): "
                            f"copy them from the app's \"Local Server\" section into the configuration")
            return Step(ERROR, "app", f"SMS Gateway answered {exc}")
        if self.receiver.port == 0:
            await self.receiver.start()
        await phone.reverse(self.webhook_port, self.receiver.port)
        try:
            await self.client.register_webhooks(f"http://127.0.0.1:{self.webhook_port}{self.receiver.path}",
                                                f"simbridge-{self.device_id}")
        except (smsgate.GateError, smsgate.GateUnreachable) as exc:
            return Step(ERROR, "app", f"SMS Gateway did not take the bridge's webhooks: {exc}")
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())
        self.ready = True
        return None

    def attach(self, report: Reporter) -> None:
        self._report = report

    def _watch(self, job_id: str, state: str | None) -> None:
        self._states[job_id] = state
        self._since.setdefault(job_id, time.time())

    def _forget(self, job_id: str) -> None:
        self._states.pop(job_id, None)
        self._since.pop(job_id, None)

    def _fold(self, job_id: str, outcome: smsgate.Outcome) -> None:
        if self._report is None or job_id not in self._states:
            return  # not one of ours (another client of the app), or already final
        new = smsgate.fold(self._states[job_id], outcome.state)
        if new is None:
            return
        self._states[job_id] = new
        if new in (protocol.JOB_DELIVERED, protocol.JOB_FAILED):
            self._forget(job_id)
        self._report(job_id, new, reason=outcome.reason, parts=outcome.parts)

    def _on_webhook(self, message_id: str, outcome: smsgate.Outcome) -> None:
        self._fold(message_id, outcome)

    async def _poll_loop(self) -> None:
        """Webhooks can be late (the app retries them with backoff) or lost while
        unplugged: ask for the jobs still moving now and then."""
        while True:
            await asyncio.sleep(self.poll_interval)
            now = time.time()
            for job_id, since in list(self._since.items()):
                if now - since > WATCH_MAX_S:
                    self._forget(job_id)  # no report this long after: the network will not send one
            for job_id in list(self._states):
                client = self.client
                if client is None:
                    break
                with contextlib.suppress(smsgate.GateUnreachable, smsgate.GateError):
                    outcome = await client.get(job_id)
                    if outcome is not None:
                        self._fold(job_id, outcome)

    async def send(self, job: protocol.SendSms, report: Reporter) -> None:
        self._report = report
        if not await self._readiness.wait(self.route_wait):
            report(job.job_id, protocol.JOB_REJECTED, reason="SMS Gateway is not ready on the phone")
            return
        client = self.client
        if client is None:
            report(job.job_id, protocol.JOB_REJECTED, reason="SMS Gateway is not ready on the phone")
            return
        slot = job.sim if job.sim is not None else self.sim_slot
        self._watch(job.job_id, protocol.JOB_ACCEPTED)
        try:
            outcome = await client.send(message_id=job.job_id, to=job.to, text=job.text,
                                        sim_number=slot + 1 if slot is not None else None,
                                        delivery_report=True)
        except smsgate.GateError as exc:
            self._forget(job.job_id)
            if exc.status == 400:
                report(job.job_id, protocol.JOB_FAILED, reason=f"SMS Gateway refused it: {exc.message[:200]}")
            else:
                if exc.status == 401:
                    self.ready = False
                report(job.job_id, protocol.JOB_REJECTED, reason=f"SMS Gateway answered {exc}"[:200])
            return
        except smsgate.GateUnreachable as exc:
            # The request may have reached the app: ask it; if it cannot say, never send again.
            try:
                known = await client.get(job.job_id)
            except (smsgate.GateUnreachable, smsgate.GateError):
                report(job.job_id, protocol.JOB_UNCONFIRMED,
                       reason=f"the phone went during the hand-over ({exc}); SMS Gateway may send it")
                return
            if known is None:
                self._forget(job.job_id)
                report(job.job_id, protocol.JOB_REJECTED, reason="SMS Gateway did not receive it")
                return
            outcome = known
        self._fold(job.job_id, outcome)

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]:
        """A job that was being handed over when the daemon stopped: the app says."""
        client = self.client
        if client is not None:
            with contextlib.suppress(smsgate.GateUnreachable, smsgate.GateError):
                known = await client.get(job.job_id)
                if known is None:
                    return protocol.JOB_REJECTED, "SMS Gateway never received it"
                self._watch(job.job_id, known.state or protocol.JOB_ACCEPTED)
                return known.state or protocol.JOB_UNCONFIRMED, known.reason
        self._watch(job.job_id, protocol.JOB_UNCONFIRMED)
        return protocol.JOB_UNCONFIRMED, "outcome unknown after a restart; SMS Gateway may still send it"

    def resume(self, job: protocol.Job, report: Reporter) -> None:
        """A job sent before a restart or replug: keep folding its reports."""
        self._report = report
        if job.job_id not in self._states:
            self._watch(job.job_id, protocol.JOB_SENT)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.wait([self._poller])
            self._poller = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        await self.receiver.close()


# -- Termux ----------------------------------------------------------------------------


class TermuxRoute:
    """Termux:API's ``termux-sms-send``, run by the helper; outcome read from ``content://sms``."""

    name = "termux"
    package = termux.TERMUX
    capabilities = protocol.Capabilities(sms=True, calls=True, delivery_reports=False, multipart=True,
                                         dual_sim=False)

    def __init__(self, *, device_id: str, options: dict[str, Any], token: str, sim_slot: int | None,
                 confirm_timeout: float = 120.0, helper_wait: float = 5.0, poll: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device_id = device_id
        self.sim_slot = sim_slot
        self.confirm_timeout = confirm_timeout
        self.helper_wait = helper_wait
        self.poll = poll
        self.clock = clock
        self.link = termux.HelperLink(secret=termux.derive(token, "helper"), code=termux.derive(token, "install", 10),
                                      reverse_port=int(options.get("helper_port", termux.DEFAULT_PORT)))
        self.phone: Phone | None = None
        self.mark: Mark | None = None  # how far content://sms has been looked at for outcomes
        self._claimed: set[int] = set()
        self._lock = asyncio.Lock()
        self._readiness = Readiness()
        self.route_wait = ROUTE_WAIT_S
        self.last_error: str | None = None

    @property
    def ready(self) -> bool:
        return self._readiness.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._readiness.ready = value

    @property
    def install_command(self) -> str:
        return termux.install_command(self.link.reverse_port, self.link.code)

    async def prepare(self, phone: Phone) -> Step | None:
        self.ready = False
        self.phone = phone
        packages = await phone.packages()
        missing = [n for p, n in ((termux.TERMUX, "Termux"), (termux.TERMUX_API, "Termux:API"))
                   if p not in packages]
        if missing:
            return Step(NEEDS_USER, "app",
                        f"install {' and '.join(missing)} from F-Droid (https://f-droid.org/packages/com.termux/ "
                        f"and https://f-droid.org/packages/com.termux.api/; both from the same place — the "
                        f"Play Store builds are outdated), then open Termux once")
        step = await grant(phone, termux.TERMUX_API, termux.PERMISSIONS, "Termux:API")
        if step is not None:
            return step
        if self.link.port == 0:
            await self.link.start()
        await phone.reverse(self.link.reverse_port, self.link.port)
        if self.mark is None:
            self.mark = await self._sms_mark(phone)
        if not self.link.alive():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.helper_wait):
                    while not self.link.alive():
                        self.link.seen.clear()
                        await self.link.seen.wait()
        if not self.link.alive():
            return Step(NEEDS_USER, "helper",
                        f"start the helper once: open Termux on the phone and run: {self.install_command}")
        self.ready = True
        return None

    @staticmethod
    async def _sms_mark(phone: Phone) -> Mark:
        rows = await phone.query(SMS_URI, ("_id", "date"))
        return Mark(max((int(r["_id"] or -1) for r in rows), default=-1),
                    max((int(r["date"] or -1) for r in rows), default=-1))

    async def send(self, job: protocol.SendSms, report: Reporter) -> None:
        slot = job.sim if job.sim is not None else self.sim_slot
        async with self._lock:  # one at a time: the outcome is matched by number and text
            while True:
                if not self.link.alive():
                    self.ready = False
                phone = self.phone
                if not await self._readiness.wait(self.route_wait) or phone is None:
                    report(job.job_id, protocol.JOB_REJECTED, reason="the Termux helper is not running on the phone")
                    return
                try:
                    answer = await self.link.run({"cmd": "sms-send", "to": job.to, "text": job.text,
                                                  "slot": slot}, wait_s=termux.POLL_HOLD + 70)
                except TimeoutError:
                    answer = None
                if answer is None:
                    break  # it may have run: the phone's SMS provider says
                error = termux.api_error(str(answer.get("out", "")))
                if error is not None:
                    # Refused before SmsManager was called (TermuxApiReceiver checks first):
                    # nothing went out. The phone shows its permission dialog; the bridge
                    # grants again where it may, and this message waits for that.
                    self.ready = False
                    self.last_error = f"Termux:API: {error[:180]}"
                    log.warning("%s: %s", self.device_id, self.last_error)
                    continue
                if answer.get("rc") != 0:
                    report(job.job_id, protocol.JOB_REJECTED,
                           reason=f"termux-sms-send exited {answer.get('rc')}: {str(answer.get('out'))[:160]}")
                    return
                break
            state, reason = await self._outcome(phone, job)
            report(job.job_id, state, reason=reason)

    async def _outcome(self, phone: Phone, job: protocol.SendSms) -> tuple[str, str | None]:
        """Android writes the message into content://sms as sent (2) or failed (5) when the
        radio answers; nothing there in time: it may still go, so unconfirmed."""
        deadline = self.clock() + self.confirm_timeout
        mark = self.mark or Mark()
        while True:
            rows = [SmsRow.from_row(r) for r in await phone.query(
                SMS_URI, SENT_COLUMNS, f"({mark.where()}) AND type IN ({SMS_TYPE_SENT},{SMS_TYPE_FAILED})")]
            for row in rows:
                if row.id in self._claimed or not same_number(row.address, job.to) or row.body != job.text:
                    continue
                self._claimed.add(row.id)
                # Sends go one at a time and Android writes a send's row when the radio
                # answers: rows for later sends come after this one.
                self.mark = mark.after([row])
                if row.type == SMS_TYPE_FAILED:
                    return protocol.JOB_FAILED, f"the phone marked it failed (error_code {row.error_code})"
                return protocol.JOB_SENT, None
            if self.clock() >= deadline:
                return (protocol.JOB_UNCONFIRMED,
                        f"no sent or failed row in the phone's SMS provider within {self.confirm_timeout:g} s")
            await asyncio.sleep(self.poll)

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]:
        return protocol.JOB_UNCONFIRMED, "outcome unknown after a restart (the helper may have sent it)"

    def resume(self, job: protocol.Job, report: Reporter) -> None:
        """Nothing comes after "sent" on this route."""

    def attach(self, report: Reporter) -> None:
        """Every report of this route is made during its send."""

    async def aclose(self) -> None:
        await self.link.close()

