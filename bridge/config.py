"""The daemon's configuration: TOML in, frozen dataclasses out.

Every key is checked at start-up. A bad file is refused with a
:class:`ConfigError` that names the key and says what is wrong, e.g.
``devices[1].account: no account "x@example.com" (accounts are: demo@example.com)``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yarl

from bridge.core import numbers
from bridge.core.optout import DEFAULT_START_WORDS, DEFAULT_STOP_WORDS

DEVICE_KINDS = ("virtual", "modem", "android")
# Android lets one app send 30 SMS parts a minute (AOSP SmsUsageMonitor, see
# bridge/devices/android/limits.py): at most 30 messages; the phone's agent
# holds back whatever would go over 30 parts.
ANDROID_DEFAULT_RATE = 30.0
WEBHOOK_FORMATS = ("insim", "ardary", "notimation", "json")


class ConfigError(ValueError):
    """The configuration is not usable; the message names the key."""


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]+")


def _webhook_url(value: str) -> str:
    """A URL the webhook client can send as it is: http(s), a host, a valid port,
    no spaces or control characters, no fragment. Non-ASCII is fine (percent-encoded,
    IDNA host, when sent). Kept as written (no trailing slash removed)."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain spaces or control characters (percent-encode them, e.g. %20)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not encodable text (lone surrogate)") from None
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not have a #fragment (the inSIM form appends its query)")
    try:
        url = yarl.URL(value)
        host = url.raw_host  # IDNA-encodes a non-ASCII host
        url.port  # noqa: B018 - raises on a bad port
    except (ValueError, UnicodeError) as exc:
        raise ValueError(f"cannot be sent: {exc}") from None
    if not host:
        raise ValueError("must name a host")
    if ":" not in host:  # a name or IPv4 (IPv6 was checked by the parser)
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(0 < len(label) <= 63 and _HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError(f"cannot be sent: {host!r} is not a valid host name")
    return value


def _ws_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError("must be a ws:// or wss:// URL, e.g. ws://192.168.1.10:8765")
    return value.rstrip("/")


def _tls(where: str, values: dict[str, Any], base: Path | None) -> None:
    """``tls_cert`` and ``tls_key`` come together, exist, and load as a pair."""
    from bridge.ops.tls import server_context

    if "tls_cert" not in values and "tls_key" not in values:
        return
    for key, other in (("tls_cert", "tls_key"), ("tls_key", "tls_cert")):
        if key not in values:
            raise ConfigError(f"{where}.{key}: required when {where}.{other} is set")
        if base is not None and not values[key].is_absolute():
            values[key] = (base / values[key]).resolve()
    for key in ("tls_cert", "tls_key"):
        path = values[key]
        if not path.is_file():
            raise ConfigError(f"{where}.{key}: no such file {str(path)!r}")
    try:
        server_context(values["tls_cert"], values["tls_key"])
    except ValueError as exc:
        raise ConfigError(f"{where}.tls_cert: {exc}") from None


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from None
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _url_limit(value: int) -> int:
    if value != 0 and value < 1024:
        raise ValueError("must be 0 (never cut) or at least 1024 (bytes of the whole URL)")
    return value


def _fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}")
        return value
    return check


def _note_senders(where: str, value: list[Any], region: str | None) -> tuple[str, ...]:
    """Phone numbers (E.164 after reading), each a string."""
    out: list[str] = []
    for j, raw in enumerate(value):
        try:
            out.append(numbers.normalise(raw, region))
        except ValueError as exc:
            raise ConfigError(f"{where}[{j}]: {exc}") from None
    return tuple(out)


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {value!r} (use a two-letter ISO 3166 code such as \"FR\")")
    return region


def _words(value: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(w, str) and w.strip() for w in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(dict.fromkeys(w.strip() for w in value))


def _quiet_hours(value: str) -> tuple[int, int]:
    """``"21:00-08:00"`` → (1260, 480): minutes after midnight, the end excluded."""
    try:
        start, end = (part.strip() for part in value.split("-"))
        bounds = []
        for part in (start, end):
            hours, minutes = part.split(":")
            if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
                raise ValueError
            bounds.append(int(hours) * 60 + int(minutes))
    except ValueError:
        raise ValueError(f"must be \"HH:MM-HH:MM\" (e.g. \"21:00-08:00\"), not {value!r}") from None
    if bounds[0] == bounds[1]:
        raise ValueError(f"{value!r} is empty: give two different times")
    return bounds[0], bounds[1]


def _local_zone() -> str:
    tz = os.environ.get("TZ")
    if tz:
        try:
            ZoneInfo(tz)
            return tz
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        link = os.readlink("/etc/localtime")
        name = link.split("zoneinfo/", 1)[1]
        ZoneInfo(name)
        return name
    except (OSError, IndexError, ZoneInfoNotFoundError, ValueError):
        return "UTC"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    public_url: str = "http://127.0.0.1:8080"
    timezone: str = "UTC"  # zone of date_to_send ("YYYY-MM-DD HH:mm:ss" carries none)
    max_messages: int = 1000  # messages in one sendsms request
    max_body_bytes: int = 8 * 1024 * 1024
    # Numbers written without a country code (0612345678) are read as numbers of
    # this region (ISO 3166 code such as "FR"); None: only +/00 numbers are valid.
    default_region: str | None = None
    forbidden_words: tuple[str, ...] = ()  # a message containing one is refused (#004)
    stop_words: tuple[str, ...] = DEFAULT_STOP_WORDS  # an incoming SMS that is one opts its sender out
    start_words: tuple[str, ...] = DEFAULT_START_WORDS  # ...and one of these opts it back in
    tls_cert: Path | None = None  # PEM certificate (chain): the API speaks HTTPS
    tls_key: Path | None = None  # its PEM private key
    # /metrics lists every login and device: served to loopback clients only,
    # unless this bearer token is set (then to anyone who presents it).
    metrics_token: str | None = None
    # A second process for the number checks of bulk requests (bridge/api/workers.py): off, it no
    # longer pays (docs/benchmarks.md); it dies with the daemon. Read at start only.
    bulk_worker: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentsConfig:
    listen: tuple[str, int] = ("127.0.0.1", 8765)
    window: int = 8  # jobs in flight per device at most
    lease_s: float = 60.0  # a pushed job not begun within this is rejected by the agent
    requeue_grace_s: float = 300.0  # an offline device's jobs go back to the queue after this
    public_url: str | None = None  # what agents dial (pairing QR codes); default: from listen
    tls_cert: Path | None = None  # PEM certificate (chain): agents connect with wss://
    tls_key: Path | None = None  # its PEM private key
    hello_timeout_s: float = 10.0  # a connection that has not proved its token by then is closed
    max_unauthenticated: int = 64  # connections still saying hello at once; more are turned away (1013)
    silence_s: float = 60.0  # an agent heard nothing from for this long is pinged; no pong in a third: cut


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    path: Path = Path("/var/lib/simbridge/simbridge.db")  # SQLite; its folder holds secret.key either way
    synchronous: str = "full"  # "full": every commit survives a power cut; "normal": a process crash
    url: str | None = None  # "postgresql://user:pass@host/db": the shared store (several daemons); None: SQLite
    keep_days: float = 90.0  # settled jobs, their history, delivered events are purged after this; 0: kept
    node: str = ""  # this daemon's name among several on one database (default: the host name)


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherConfig:
    ttl_s: float = 86400.0  # a job not dispatched this long after it was due expires
    max_attempts: int = 5  # dispatches of one job before it fails


@dataclass(frozen=True, slots=True, kw_only=True)
class AndroidConfig:
    adb_server: tuple[str, int] = ("127.0.0.1", 5037)  # the adb server to follow
    start_adb_server: bool = True  # start a local adb server when none answers
    device_port: int | None = None  # no longer used (each route has its own phone ports); accepted
    poll_interval: float = 2.0  # seconds between reads of each phone's SMS inbox and call log over adb
    confirm_timeout: float = 120.0  # termux route: seconds for a send to show as sent/failed in content://sms


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhooksConfig:
    """Delivery of the webhook outbox (times in seconds)."""
    timeout: float = 5.0  # one HTTP attempt, connect to last byte
    max_age: float = 86400.0  # an event still undelivered this long after it was recorded is dead
    backoff_initial: float = 1.0  # first retry delay; doubles each attempt, with jitter
    backoff_max: float = 300.0  # retry delay cap
    concurrency: int = 32  # requests in flight at once (all accounts)
    poll_interval: float = 10.0  # fallback look at the outbox when nothing woke the deliverer
    lease: float = 30.0  # a claimed event not settled within this is claimed again (crash recovery)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleConfig:
    """The web console at ``/console`` (docs/console.md)."""
    enabled: bool = True
    operators: tuple[str, ...] = ()  # logins that see every account and device
    session_ttl: float = 12 * 3600.0  # a console session unused this long signs out
    poll_interval: float = 0.5  # how often a live view looks for changes (seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountConfig:
    login: str
    access_key: str
    webhook_url: str | None = None
    webhook_format: str = "insim"
    webhook_secret: str | None = None
    # GET forms (insim, ardary): the longest URL sent; a longer one has its text cut to fit,
    # marked ``"truncated": true`` (0: never cut; nginx and Apache refuse request lines over ~8 KB).
    webhook_max_url: int = 0
    enabled: bool = True
    # SMSFLOW's clients get a 24-hour token from a username and password (docs/api.md).
    smsflow_username: str | None = None
    smsflow_password: str | None = None
    # Numbers whose "NOTE <number>: <text>" SMS to the account's phones are call notes (bridge/core/callnotes.py).
    call_note_senders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    id: str
    kind: str
    account: str
    # Pacing, in SMS parts (a 3-part message counts 3); 0 = no cap. See docs/configuration.md.
    max_per_minute: float = 30.0
    max_per_hour: float = 0.0
    max_per_day: float = 0.0
    min_gap_s: float = 0.0  # a random wait from min_gap_s to max_gap_s between two sends
    max_gap_s: float = 0.0
    quiet_hours: tuple[int, int] | None = None  # (from, to) in minutes after midnight, recipient's time
    timezone: str | None = None  # for quiet hours when the number tells no zone (default: api.timezone)
    sticky: bool = False  # a contact keeps getting this SIM while it is available
    token: str | None = None  # fixed token for an agent run elsewhere; else one is derived
    options: dict[str, Any] = field(default_factory=dict)  # the kind's own keys


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    api: ApiConfig = ApiConfig()
    agents: AgentsConfig = AgentsConfig()
    store: StoreConfig = StoreConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    android: AndroidConfig = AndroidConfig()
    console: ConsoleConfig = ConsoleConfig()
    accounts: tuple[AccountConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    source: str = "<defaults>"

    def account(self, login: str) -> AccountConfig | None:
        for a in self.accounts:
            if a.login == login:
                return a
        return None

    def device(self, device_id: str) -> DeviceConfig | None:
        for d in self.devices:
            if d.id == device_id:
                return d
        return None

    @property
    def data_dir(self) -> Path:
        return self.store.path.parent


# key -> (accepted TOML types, converter/validator, dataclass field name)
Spec = dict[str, tuple[tuple[type, ...], Callable[[Any], Any] | None]]

API_SPEC: Spec = {
    "listen": ((str,), _hostport),
    "public_url": ((str,), _url),
    "timezone": ((str,), _zone),
    "max_messages": ((int,), _positive),
    "max_body_bytes": ((int,), _positive),
    "default_region": ((str,), _region),
    "forbidden_words": ((list,), _words),
    "stop_words": ((list,), _words),
    "start_words": ((list,), _words),
    "tls_cert": ((str,), Path),
    "tls_key": ((str,), Path),
    "metrics_token": ((str,), _nonempty),
    "bulk_worker": ((bool,), None),
}
AGENTS_SPEC: Spec = {
    "listen": ((str,), _hostport),
    "window": ((int,), _positive),
    "lease_s": ((int, float), _positive),
    "requeue_grace_s": ((int, float), _positive),
    "public_url": ((str,), _ws_url),
    "hello_timeout_s": ((int, float), _positive),
    "max_unauthenticated": ((int,), _positive),
    "silence_s": ((int, float), _positive),
    "tls_cert": ((str,), Path),
    "tls_key": ((str,), Path),
}
def _postgres_url(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a PostgreSQL URL (postgresql://user:password@host:5432/database)")
    return value


STORE_SPEC: Spec = {
    "path": ((str,), Path),
    "synchronous": ((str,), _one_of("full", "normal")),
    "url": ((str,), _postgres_url),
    "keep_days": ((int, float), _non_negative),
    "node": ((str,), _nonempty),
}
DISPATCHER_SPEC: Spec = {
    "ttl": ((int, float), _positive),
    "max_attempts": ((int,), _positive),
}
ANDROID_SPEC: Spec = {
    "adb_server": ((str,), _hostport),
    "start_adb_server": ((bool,), None),
    "device_port": ((int,), _positive),
    "poll_interval": ((int, float), _positive),
    "confirm_timeout": ((int, float), _positive),
}
WEBHOOKS_SPEC: Spec = {
    "timeout": ((int, float), _positive),
    "max_age": ((int, float), _positive),
    "backoff_initial": ((int, float), _positive),
    "backoff_max": ((int, float), _positive),
    "concurrency": ((int,), _positive),
    "poll_interval": ((int, float), _positive),
    "lease": ((int, float), _positive),
}
CONSOLE_SPEC: Spec = {
    "enabled": ((bool,), None),
    "operators": ((list,), _words),
    "session_ttl": ((int, float), _positive),
    "poll_interval": ((int, float), _positive),
}
ACCOUNT_SPEC: Spec = {
    "login": ((str,), _nonempty),
    "access_key": ((str,), _nonempty),
    "webhook_url": ((str,), _webhook_url),
    "webhook_format": ((str,), _one_of(*WEBHOOK_FORMATS)),
    "webhook_secret": ((str,), _nonempty),
    "webhook_max_url": ((int,), _url_limit),
    "enabled": ((bool,), None),
    "smsflow_username": ((str,), _nonempty),
    "smsflow_password": ((str,), _nonempty),
    "call_note_senders": ((list,), None),
}
DEVICE_SPEC: Spec = {
    "id": ((str,), _nonempty),
    "kind": ((str,), _one_of(*DEVICE_KINDS)),
    "account": ((str,), _nonempty),
    "max_per_minute": ((int, float), _non_negative),
    "max_per_hour": ((int, float), _non_negative),
    "max_per_day": ((int, float), _non_negative),
    "min_gap_s": ((int, float), _non_negative),
    "max_gap_s": ((int, float), _non_negative),
    "quiet_hours": ((str,), _quiet_hours),
    "timezone": ((str,), _zone),
    "sticky": ((bool,), None),
    "token": ((str,), _nonempty),
}
DEVICE_KIND_SPEC: dict[str, Spec] = {
    "virtual": {
        "latency": ((int, float), _non_negative),
        "jitter": ((int, float), _non_negative),
        "delivery_delay": ((int, float), _non_negative),
        "failure_rate": ((int, float), _fraction),
        "fail_prefixes": ((list,), None),
        "delivery_reports": ((bool,), None),
        "serial": ((bool,), None),
        "cap_per_minute": ((int,), _non_negative),
        "standalone": ((bool,), None),
    },
    "modem": {
        "port": ((str,), _nonempty),
        "pin": ((str,), _nonempty),
        "baudrate": ((int,), _positive),
        "smsc": ((str,), _nonempty),
        "hangup_after": ((int, float), _positive),
        "command_timeout": ((int, float), _positive),
        "multipart_timeout": ((int, float), _positive),
        "send_timeout": ((int, float), _positive),
        "poll_interval": ((int, float), _positive),
        "duplicate_window": ((int, float), _positive),
        "delivery_reports": ((bool,), None),
        "standalone": ((bool,), None),
    },
    "android": {
        "standalone": ((bool,), None),  # paired over the network (QR code), not driven over USB
        "serial": ((str,), _nonempty),
        "sim_slot": ((int,), _non_negative),
        "route": ((str,), _one_of("smsgate", "termux")),  # how it sends; incoming is read over adb
        "smsgate_port": ((int,), _positive),
        "smsgate_user": ((str,), _nonempty),
        "smsgate_password": ((str,), _nonempty),
        "webhook_port": ((int,), _positive),  # on the phone's loopback, reversed to the bridge
        "helper_port": ((int,), _positive),  # the Termux helper's, likewise
        "sms_max_count": ((int,), _positive),  # the phone's sms_outgoing_check_max_count (parts)
        "sms_check_interval": ((int, float), _positive),  # its sms_outgoing_check_interval_ms, in seconds
    },
}
DEVICE_KIND_REQUIRED = {"modem": ("port",), "android": ("serial",), "virtual": ()}
RENAMES = {"ttl": "ttl_s"}


def _type_name(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check(where: str, table: Any, spec: Spec, *, required: tuple[str, ...] = (),
           extra: Spec | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate one table: returns (known values, kind-specific values)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, raw in table.items():
        if key in spec:
            types, conv = spec[key]
            target = values
        elif extra is not None and key in extra:
            types, conv = extra[key]
            target = options
        else:
            allowed = sorted(spec) + sorted(extra or {})
            raise ConfigError(f"{where}.{key}: unknown key (known keys: {', '.join(allowed)})")
        if isinstance(raw, bool) and bool not in types:
            raise ConfigError(f"{where}.{key}: must be {_type_name(types)}, not true/false")
        if not isinstance(raw, types):
            raise ConfigError(f"{where}.{key}: must be {_type_name(types)}, not {type(raw).__name__}")
        try:
            value = conv(raw) if conv is not None else raw
        except ValueError as exc:
            raise ConfigError(f"{where}.{key}: {exc}") from None
        target[str(RENAMES.get(key, key))] = value
    for key in required:
        if key not in values and key not in options:
            raise ConfigError(f"{where}.{key}: required")
    return values, options


def parse(data: dict[str, Any], *, source: str = "<config>", base: Path | None = None) -> Config:
    """Turn a parsed TOML document into a :class:`Config`, or raise ConfigError.
    Relative file paths (TLS) are read from ``base`` (the config file's folder)."""
    sections = {"api", "agents", "store", "dispatcher", "webhooks", "android", "console", "accounts", "devices"}
    for key in data:
        if key not in sections:
            raise ConfigError(f"{key}: unknown section (known: {', '.join(sorted(sections))})")
    api, _ = _check("api", data.get("api", {}), API_SPEC)
    _tls("api", api, base)
    if "listen" in api and "public_url" not in api:
        host, port = api["listen"]
        scheme = "https" if "tls_cert" in api else "http"
        api["public_url"] = f"{scheme}://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}"
    api.setdefault("timezone", _local_zone())
    agents, _ = _check("agents", data.get("agents", {}), AGENTS_SPEC)
    _tls("agents", agents, base)
    store, _ = _check("store", data.get("store", {}), STORE_SPEC)
    dispatcher, _ = _check("dispatcher", data.get("dispatcher", {}), DISPATCHER_SPEC)
    agents_cfg = AgentsConfig(**agents)
    webhooks, _ = _check("webhooks", data.get("webhooks", {}), WEBHOOKS_SPEC)
    webhooks_cfg = WebhooksConfig(**webhooks)
    android, _ = _check("android", data.get("android", {}), ANDROID_SPEC)
    console, _ = _check("console", data.get("console", {}), CONSOLE_SPEC)
    if webhooks_cfg.backoff_max < webhooks_cfg.backoff_initial:
        raise ConfigError(f"webhooks.backoff_max: must not be shorter than webhooks.backoff_initial "
                          f"({webhooks_cfg.backoff_initial:g} s)")
    if webhooks_cfg.lease <= webhooks_cfg.timeout:
        raise ConfigError(f"webhooks.lease: must be longer than webhooks.timeout ({webhooks_cfg.timeout:g} s), "
                          "or an event could be sent twice at once")
    if agents_cfg.requeue_grace_s <= agents_cfg.lease_s:
        raise ConfigError(f"agents.requeue_grace_s: must be longer than agents.lease_s "
                          f"({agents_cfg.lease_s:g} s), or a job could be sent twice")

    raw_accounts = data.get("accounts", [])
    if not isinstance(raw_accounts, list):
        raise ConfigError("accounts: must be an array of tables ([[accounts]])")
    accounts: list[AccountConfig] = []
    for i, table in enumerate(raw_accounts):
        values, _ = _check(f"accounts[{i}]", table, ACCOUNT_SPEC, required=("login", "access_key"))
        if any(a.login == values["login"] for a in accounts):
            raise ConfigError(f"accounts[{i}].login: duplicate login {values['login']!r}")
        if values.get("webhook_format") == "json" and "webhook_secret" not in values:
            raise ConfigError(f"accounts[{i}].webhook_secret: required when webhook_format = \"json\"")
        if "call_note_senders" in values:
            values["call_note_senders"] = _note_senders(f"accounts[{i}].call_note_senders",
                                                        values["call_note_senders"], api.get("default_region"))
        if ("smsflow_username" in values) != ("smsflow_password" in values):
            raise ConfigError(f"accounts[{i}].smsflow_password: smsflow_username and smsflow_password go together")
        if "smsflow_username" in values and any(a.smsflow_username == values["smsflow_username"] for a in accounts):
            raise ConfigError(f"accounts[{i}].smsflow_username: duplicate username {values['smsflow_username']!r}")
        accounts.append(AccountConfig(**values))

    raw_devices = data.get("devices", [])
    if not isinstance(raw_devices, list):
        raise ConfigError("devices: must be an array of tables ([[devices]])")
    devices: list[DeviceConfig] = []
    logins = [a.login for a in accounts]
    for i, table in enumerate(raw_devices):
        where = f"devices[{i}]"
        kind = table.get("kind") if isinstance(table, dict) else None
        extra = DEVICE_KIND_SPEC.get(kind) if isinstance(kind, str) else None
        values, options = _check(where, table, DEVICE_SPEC, required=("id", "kind", "account"),
                                 extra=extra or {})
        for key in DEVICE_KIND_REQUIRED[values["kind"]]:
            if key not in options and not (values["kind"] == "android" and options.get("standalone")):
                raise ConfigError(f"{where}.{key}: required for a device of kind {values['kind']!r}")
        if any(d.id == values["id"] for d in devices):
            raise ConfigError(f"{where}.id: duplicate device id {values['id']!r}")
        if values["account"] not in logins:
            known = ", ".join(logins) or "none configured"
            raise ConfigError(f"{where}.account: no account {values['account']!r} (accounts are: {known})")
        if "fail_prefixes" in options:
            prefixes = options["fail_prefixes"]
            if not all(isinstance(p, str) for p in prefixes):
                raise ConfigError(f"{where}.fail_prefixes: must be a list of strings")
            options["fail_prefixes"] = tuple(prefixes)
        if values["kind"] == "android":
            # Android asks its owner beyond 30 parts a minute from one app: never get there.
            limit = options.get("sms_max_count", ANDROID_DEFAULT_RATE) * 60 / options.get("sms_check_interval", 60)
            values.setdefault("max_per_minute", float(max(1, int(limit))))
        if values.get("max_gap_s", 0.0) < values.get("min_gap_s", 0.0):
            raise ConfigError(f"{where}.max_gap_s: must not be shorter than min_gap_s ({values['min_gap_s']:g} s)")
        devices.append(DeviceConfig(**values, options=options))
    for login in console.get("operators", ()):
        if login not in logins:
            raise ConfigError(f"console.operators: no account {login!r} (accounts are: {', '.join(logins) or 'none'})")

    return Config(api=ApiConfig(**api), agents=agents_cfg, store=StoreConfig(**store),
                  dispatcher=DispatcherConfig(**dispatcher), webhooks=webhooks_cfg,
                  android=AndroidConfig(**android), console=ConsoleConfig(**console), accounts=tuple(accounts),
                  devices=tuple(devices), source=source)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = parse(data, source=str(path), base=path.parent.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # A relative store path is relative to the config file, not to the working directory.
    if not config.store.path.is_absolute():
        store = dataclasses.replace(config.store, path=(path.parent / config.store.path).resolve())
        config = dataclasses.replace(config, store=store)
    return config


DEMO_TOML = """\
# Written by `simbridge run --demo`: the demo's configuration, so that other
# commands (simbridge simulate …, simbridge devices) can find the daemon.
[api]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"

[agents]
listen = "127.0.0.1:8765"

[store]
path = "{store}"

[[accounts]]
login = "demo@example.com"
access_key = "demo-access-key"

[[devices]]
id = "virtual-1"
kind = "virtual"
account = "demo@example.com"
latency = 0.3
delivery_delay = 1.0
"""


def demo(data_dir: Path) -> Config:
    """The configuration of ``simbridge run --demo``, written to
    ``data_dir/config.toml`` for the other commands to use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "config.toml"
    path.write_text(DEMO_TOML.format(store=(data_dir / "simbridge.db").as_posix()))
    return load(path)
