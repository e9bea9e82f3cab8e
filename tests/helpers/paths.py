"""Paths of the checkout for the test modules, whatever their depth under tests/ (the test folders mirror the
package's, so ``os.path.dirname(__file__)`` no longer names tests/ in every module)."""

import os

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
