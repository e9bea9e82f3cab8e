"""Paths of the checkout for the test modules, whatever their depth under tests/ (the test folders mirror the
package's, so ``os.path.dirname(__file__)`` no longer names tests/ in every module)."""

import os
import time

HELPERS = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HELPERS)
REPO = os.path.dirname(TESTS)


def path_without(tmp_path, *tools):
    """A directory of links to every command in /usr/bin except *tools*: a worker's PATH without them."""
    d = tmp_path / ("bin-without-" + "-".join(tools))
    d.mkdir()
    for name in os.listdir("/usr/bin"):
        if name not in tools:
            os.symlink(os.path.join("/usr/bin", name), str(d / name))
    return str(d)


def settled_listdir(directory, timeout=60.0):
    """The names in *directory* once the background removals there are done: a build's scratch is renamed to
    ``trash-*`` and removed by a detached ``rm -rf`` after the result is published (poncho_wq.fsutil.remove_later),
    so for a moment after a successful build the cache's tmp holds it. Waits at most *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        names = os.listdir(str(directory))
        if not any(n.startswith("trash-") for n in names) or time.monotonic() > deadline:
            return names
        time.sleep(0.05)
