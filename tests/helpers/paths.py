"""Paths of the checkout for the test modules, whatever their depth under tests/ (the test folders mirror the
package's, so ``os.path.dirname(__file__)`` no longer names tests/ in every module)."""

import os
import shutil
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


def link_interpreter_bases(source_cache, cache):
    """Give the build cache *cache* the interpreter bases of *source_cache* by hard links (``<cache>/interpreters``):
    the state of a user's cache after its first build, for tests whose subject is a later build, not the base's
    preparation (tests/engines/test_build_speed.py tests that). A copy would not do: the base's fingerprint holds
    its files' inodes, so a copied base is prepared again (10-20 s). The base's files are read-only and replaced,
    never written in place, so the two caches cannot change each other's. When *source_cache* has no base yet
    (a test run alone, before the build that prepares it), *cache* is left as it is: its build prepares its own."""
    source = os.path.join(str(source_cache), "interpreters")
    target = os.path.join(str(cache), "interpreters")
    if not os.path.isdir(source):
        return cache
    shutil.copytree(source, target, copy_function=os.link, symlinks=True,
                    ignore=shutil.ignore_patterns(".tmp-*", "*.trash-*"))
    return cache
