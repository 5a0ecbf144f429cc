"""Android's permission rules as the shell user meets them.

Sources:
* AOSP ``frameworks/base/core/res/AndroidManifest.xml``: which permissions are
  ``dangerous`` (runtime, grantable with ``pm grant``) — the rest are
  install-time (``normal``/``signature``) and cannot be changed at run time.
* AOSP ``services/core/java/com/android/server/pm/permission/
  PermissionManagerServiceImpl.java`` (``grantRuntimePermissionInternal``):
  unknown package → ``IllegalArgumentException: Unknown package: P``; unknown
  permission → ``IllegalArgumentException: Unknown permission: X``; a
  permission the package's manifest does not request → ``SecurityException:
  Package P has not requested permission X``; a non-runtime permission →
  ``SecurityException: Permission X requested by P is not a changeable
  permission type``.
* AOSP ``frameworks/base/core/java/android/os/ShellCommand.java`` (``exec``):
  an exception escaping a ``cmd`` prints an empty line, ``Exception occurred
  while executing 'VERB':`` and the stack trace on stderr; exit status 255.
* AOSP ``frameworks/base/packages/Shell/AndroidManifest.xml``: the shell user
  holds READ_SMS, SEND_SMS, RECEIVE_SMS, READ_CALL_LOG, CALL_PHONE,
  READ_PHONE_STATE, WRITE_SECURE_SETTINGS, WRITE_DEVICE_CONFIG, DUMP,
  MANAGE_APP_OPS_MODES, DEVICE_POWER — and not com.termux.permission.RUN_COMMAND.
"""

from __future__ import annotations

from .state import Package

P = "android.permission."
RUNTIME_PERMISSIONS = frozenset(P + p for p in (
    "READ_SMS", "SEND_SMS", "RECEIVE_SMS", "RECEIVE_MMS", "RECEIVE_WAP_PUSH", "READ_CALL_LOG",
    "WRITE_CALL_LOG", "CALL_PHONE", "READ_PHONE_STATE", "READ_PHONE_NUMBERS", "ANSWER_PHONE_CALLS",
    "PROCESS_OUTGOING_CALLS", "READ_CONTACTS", "WRITE_CONTACTS", "GET_ACCOUNTS",
    "ACCESS_COARSE_LOCATION", "ACCESS_FINE_LOCATION", "ACCESS_BACKGROUND_LOCATION", "CAMERA",
    "RECORD_AUDIO", "POST_NOTIFICATIONS", "READ_EXTERNAL_STORAGE", "WRITE_EXTERNAL_STORAGE",
    "BODY_SENSORS", "READ_CALENDAR", "WRITE_CALENDAR", "NEARBY_WIFI_DEVICES",
    "BLUETOOTH_CONNECT", "BLUETOOTH_SCAN", "READ_MEDIA_IMAGES", "READ_MEDIA_VIDEO",
    "READ_MEDIA_AUDIO", "ACTIVITY_RECOGNITION", "USE_SIP", "ADD_VOICEMAIL"))
KNOWN_INSTALL_PERMISSIONS = frozenset(P + p for p in (
    "INTERNET", "ACCESS_NETWORK_STATE", "ACCESS_WIFI_STATE", "CHANGE_WIFI_STATE", "VIBRATE",
    "WAKE_LOCK", "FOREGROUND_SERVICE", "RECEIVE_BOOT_COMPLETED", "TRANSMIT_IR",
    "SET_WALLPAPER", "USE_FINGERPRINT", "WRITE_SETTINGS", "REQUEST_IGNORE_BATTERY_OPTIMIZATIONS",
    "SYSTEM_ALERT_WINDOW", "READ_LOGS", "DUMP", "WRITE_SECURE_SETTINGS", "PACKAGE_USAGE_STATS",
    "FOREGROUND_SERVICE_DATA_SYNC", "FOREGROUND_SERVICE_SPECIAL_USE", "SCHEDULE_EXACT_ALARM",
    "USE_EXACT_ALARM", "REQUEST_INSTALL_PACKAGES", "MANAGE_EXTERNAL_STORAGE"))
SHELL_PERMISSIONS = frozenset(P + p for p in (
    "READ_SMS", "SEND_SMS", "RECEIVE_SMS", "READ_CALL_LOG", "WRITE_CALL_LOG", "CALL_PHONE",
    "READ_PHONE_STATE", "READ_CONTACTS", "WRITE_SECURE_SETTINGS", "WRITE_SETTINGS",
    "WRITE_DEVICE_CONFIG", "DUMP", "MANAGE_APP_OPS_MODES", "DEVICE_POWER",
    "GRANT_RUNTIME_PERMISSIONS", "REVOKE_RUNTIME_PERMISSIONS", "CHANGE_COMPONENT_ENABLED_STATE"))
TERMUX_RUN_COMMAND = "com.termux.permission.RUN_COMMAND"


class PermissionError_(Exception):
    """A Java exception as ``cmd`` prints it: ``java.lang.<kind>: <message>``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"java.lang.{kind}: {message}")


def check_grant(pkg: Package | None, name: str, permission: str) -> None:
    if pkg is None:
        raise PermissionError_("IllegalArgumentException", f"Unknown package: {name}")
    if permission not in RUNTIME_PERMISSIONS and permission not in KNOWN_INSTALL_PERMISSIONS \
            and not permission.startswith(("com.termux.", "me.capcom.")):
        raise PermissionError_("IllegalArgumentException", f"Unknown permission: {permission}")
    if permission not in pkg.requested:
        raise PermissionError_("SecurityException",
                               f"Package {name} has not requested permission {permission}")
    if permission not in RUNTIME_PERMISSIONS:
        raise PermissionError_("SecurityException",
                               f"Permission {permission} requested by {name} is not a changeable "
                               "permission type")


def holds(pkg: Package, permission: str) -> bool:
    """Runtime permissions must be granted; install-time ones come with the manifest."""
    if permission not in pkg.requested:
        return False
    return permission in pkg.granted if permission in RUNTIME_PERMISSIONS else True


def stack_trace(verb: str, exc: Exception, where: str) -> str:
    return (f"\nException occurred while executing '{verb}':\n{exc}\n"
            f"\tat {where}\n\tat com.android.server.pm.PackageManagerShellCommand.onCommand"
            "(PackageManagerShellCommand.java)\n\tat android.os.BasicShellCommandHandler.exec"
            "(BasicShellCommandHandler.java)\n")
