"""A virtual Android phone at its own boundary: adbd's transport protocol over TCP,
the shell user's commands, the phone's providers, and helper apps (SMSGate, Termux:API).

Reached through Debian's real adb server (``adb connect 127.0.0.1:PORT``); see
docs/phone-sim.md.
"""

from .phone import PhoneThread, VirtualPhone

__all__ = ["PhoneThread", "VirtualPhone"]
