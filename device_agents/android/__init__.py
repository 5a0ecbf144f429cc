"""What runs on an Android phone, in Termux.

* ``helper.py``: the USB ``termux`` route's helper (standard library only): sends
  SMS with Termux:API for the bridge, which drives everything else over adb.
* ``agent.py`` (+ ``backend.py``, ``termux.py``; packed by ``build.py``): the
  Wi-Fi agent for a phone paired by QR code (``standalone = true``), started
  by hand in Termux with ``--pair``.
* ``phone_sim/``: the virtual phone behind the real adb server, for tests.

See docs/android.md.
"""

AGENT_VERSION = "1.0"
