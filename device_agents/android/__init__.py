"""The Termux helper that sends SMS for the bridge (``helper.py``, standard library only),
and the virtual phone used to test the Android routes (``phone_sim``). See docs/android.md."""
