"""Android phones over USB, driven by the bridge over adb (see :mod:`.supervisor`)."""

from .kind import AndroidKind
from .phone import DialError
from .steps import DeviceSetup
from .supervisor import AndroidSupervisor

__all__ = ["AndroidKind", "AndroidSupervisor", "DeviceSetup", "DialError"]
