"""The daemon's CPU priority: ahead of a busy desktop when a stop has to go out.

On Linux the systemd unit sets it (``Nice=-5``: an unprivileged process cannot raise
its own). On Windows a service wrapper's priority does not reach the interpreter: the
``cellguard.exe`` launcher and a venv's ``python.exe`` start the real interpreter as a
child, and Windows gives a child the normal class whatever its parent's. So the daemon
raises its own class there; "above normal" needs no privilege.
"""

from __future__ import annotations

import os
import sys

# Not HIGH or REALTIME: a daemon stuck in a loop at those classes can starve the BTS
# server, which is what actually stops the cells.
ABOVE_NORMAL_PRIORITY_CLASS = 0x00008000


def raise_priority() -> str:
    """Raise this process's priority where it can raise itself; what it now runs at
    (for the start-up log line)."""
    if sys.platform == "win32":
        import ctypes  # noqa: PLC0415 (Windows only)
        from ctypes import wintypes  # noqa: PLC0415 (Windows only)

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.GetCurrentProcess.restype = wintypes.HANDLE
        kernel32.SetPriorityClass.argtypes = (wintypes.HANDLE, wintypes.DWORD)
        kernel32.SetPriorityClass.restype = wintypes.BOOL
        if kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), ABOVE_NORMAL_PRIORITY_CLASS):
            return "above normal priority class"
        return f"normal priority class (raising it failed: error {ctypes.get_last_error()})"
    return f"nice {os.nice(0)} (set by the service manager, e.g. Nice=-5 in the systemd unit)"
