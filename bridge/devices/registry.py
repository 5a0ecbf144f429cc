"""The registry of device kinds: the one place that maps a kind's name to its code.

``config.py`` checks ``kind`` and its options (``DEVICE_KINDS``,
``DEVICE_KIND_SPEC``; a test keeps the two lists equal); the daemon asks
:func:`build` for one :class:`~bridge.devices.base.DeviceKind` per kind and
never tests a kind by name itself. A kind's module is imported only when a
device of that kind is configured (adbutils, pyserial and the AT stack stay
out of a daemon that drives none).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator

from bridge.config import DeviceConfig
from bridge.devices.base import DeviceHost, DeviceKind

# kind name -> "module:class"
KINDS: dict[str, str] = {
    "virtual": "bridge.devices.virtual:VirtualKind",
    "modem": "bridge.devices.modem:ModemKind",
    "android": "bridge.devices.android:AndroidKind",
}


def kind_class(name: str) -> Callable[[DeviceHost], DeviceKind]:
    try:
        target = KINDS[name]
    except KeyError:
        raise LookupError(f"unknown device kind {name!r} ({', '.join(KINDS)})") from None
    module, _, cls = target.partition(":")
    factory: Callable[[DeviceHost], DeviceKind] = getattr(importlib.import_module(module), cls)
    return factory


def runs_here(device: DeviceConfig) -> bool:
    """Whether the daemon drives this device itself (its agent is not run elsewhere)."""
    return not device.options.get("standalone")


def by_kind(devices: Iterable[DeviceConfig]) -> dict[str, list[DeviceConfig]]:
    """The devices this daemon drives, grouped by kind."""
    out: dict[str, list[DeviceConfig]] = {}
    for device in devices:
        if runs_here(device):
            out.setdefault(device.kind, []).append(device)
    return out


class Kinds:
    """The kinds in use, built on demand (a kind first configured by a reload is built then)."""

    def __init__(self, host: DeviceHost) -> None:
        self.host = host
        self._kinds: dict[str, DeviceKind] = {}

    def __iter__(self) -> Iterator[DeviceKind]:
        return iter(list(self._kinds.values()))

    def get(self, name: str) -> DeviceKind | None:
        return self._kinds.get(name)

    def ensure(self, name: str) -> tuple[DeviceKind, bool]:
        """The kind called ``name``, and whether it was just built."""
        kind = self._kinds.get(name)
        if kind is not None:
            return kind, False
        kind = self._kinds[name] = kind_class(name)(self.host)
        return kind, True
