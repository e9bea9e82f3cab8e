"""Progress of long phases (solve, install, pip, pack, ...) on stderr, with elapsed times."""

import contextlib
import logging
import time

log = logging.getLogger("poncho_wq")


class Progress:
    """Reports ``phase ... done in 1.2 s`` lines through logging (stderr in the CLIs); ``quiet`` silences it.

    ``timings`` keeps each phase's seconds, so callers (and benchmarks) can report them.
    """

    def __init__(self, quiet=False):
        self.quiet = quiet
        self.timings = {}

    def info(self, message, *args):
        if not self.quiet:
            log.info("poncho: " + message, *args)

    @contextlib.contextmanager
    def phase(self, name, detail=""):
        self.info("%s%s ...", name, (" " + detail) if detail else "")
        start = time.monotonic()
        yield
        elapsed = time.monotonic() - start
        self.timings[name] = self.timings.get(name, 0.0) + elapsed
        self.info("%s done in %.1f s", name, elapsed)


def as_progress(progress):
    """Accept a Progress, None (quiet) or a bool (True = report) and return a Progress."""
    if isinstance(progress, Progress):
        return progress
    return Progress(quiet=not progress)
