"""The Android helper agent: runs on the phone under Termux's Python and
drives the phone's SMS and calls through Termux:API (see docs/android.md)."""

AGENT_VERSION = "1.0"
