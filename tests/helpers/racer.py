"""An attacker process for the shim's race tests, run as a second local user (``as_user(user, racer_cmd(...))``).

It waits, with inotify, for the victim to open a file (the tarball: the shim's floor check reads it first), or,
when WATCH does not exist yet, for WATCH to appear (polled every millisecond: a victim's environment marked ready,
its activation about to run), then does one thing at once, so that a check-then-use gap is hit every time instead
of once in a hundred tries:

- ``rename WATCH SRC DST``: rename(2) the attacker's prepared directory SRC onto the victim's path DST;
- ``exchange WATCH A B``: renameat2(RENAME_EXCHANGE) A and B (possible when their parent is writable by the
  attacker and not sticky), swapping a planted tree for the victim's own.

Before waiting it creates ``READY`` (the test starts the victim after that); it prints ``done`` or the error of the
rename and exits 0, or exits 2 when nothing opened WATCH within the time limit.  Standard library only: it runs with
the system's python3 as a user who cannot read the test's virtualenv.
"""

import ctypes
import ctypes.util
import os
import select
import sys
import time

IN_OPEN = 0x20
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def main(argv):
    action, watch, a, b, ready = argv[1:6]
    limit = float(argv[6]) if len(argv) > 6 else 120.0
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if os.path.lexists(watch):
        fd = libc.inotify_init1(0)
        if fd < 0 or libc.inotify_add_watch(fd, watch.encode(), IN_OPEN) < 0:
            sys.exit("racer: inotify on {}: {}".format(watch, os.strerror(ctypes.get_errno())))
        open(ready, "w").close()
        if not select.select([fd], [], [], limit)[0]:
            sys.exit(2)
    else:
        open(ready, "w").close()
        end = time.monotonic() + limit
        while not os.path.lexists(watch):
            if time.monotonic() > end:
                sys.exit(2)
            time.sleep(0.001)
    try:
        if action == "rename":
            os.rename(a, b)
        elif libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        print("done")
    except OSError as e:
        print("failed: {}".format(e))


if __name__ == "__main__":
    main(sys.argv)
