"""What every poncho_wq command shares: error reporting, exit codes, debug tracebacks, progress logging."""

import argparse
import contextlib
import logging
import os
import signal
import sys

from ..version import __version__
from ..config import settings
from ..errors import Interrupted, PonchoError


class HelpFormatter(argparse.HelpFormatter):
    """Keeps the line breaks of a command's ``examples:`` paragraph (one command per line, as upstream's man pages
    show them), which argparse's default formatter would join into one; other paragraphs are wrapped as usual."""

    def _fill_text(self, text, width, indent):
        return "\n\n".join(p if p.startswith("examples:") else super(HelpFormatter, self)._fill_text(p, width, indent)
                           for p in text.split("\n\n"))


def examples(*lines):
    """An ``examples:`` epilog for ``--help``: pairs of (command, what it does), the comment aligned."""
    width = max(len(cmd) for cmd, _ in lines)
    return "examples:\n" + "\n".join("  {}  # {}".format(cmd.ljust(width), what) for cmd, what in lines)


def add_version(parser):
    """``--version`` on every command: the program name and poncho_wq's version, e.g. for a bug report."""
    parser.add_argument("--version", action="version", version="%(prog)s (poncho_wq) " + __version__,
                        help="print the version and exit")


def setup_logging(quiet=False):
    """Progress and warnings go to stderr, so that ``-`` for stdout stays clean."""
    level = logging.WARNING if quiet else logging.INFO
    if settings().debug:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)


def prog_name(argv, default):
    """The name the command was called by (``poncho_package_X`` or the older ``python_package_X``), for messages;
    *default* when called through ``python -m poncho_wq`` or with an explicit *argv*."""
    if argv is None and sys.argv and sys.argv[0]:
        name = os.path.basename(sys.argv[0])
        if name in (default, default.replace("poncho_package_", "python_package_")):
            return name
    return default


#: Raised in the main thread when SIGTERM, SIGHUP or SIGINT arrives (see :func:`stop_on_signals`), or when a tool
#: the command ran died of one (:func:`poncho_wq.tools.check_interrupted`).
Terminated = Interrupted


#: The signals that stop a command cleanly: SIGINT (Ctrl-C), SIGTERM (kill, batch systems, Work Queue factory
#: shutdown), SIGHUP (the terminal or ssh session went away).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGINT, SIGTERM and SIGHUP into a :class:`Terminated` exception for the duration of the block.

    Why: Python's default for SIGTERM and SIGHUP is to die on the spot, so no ``finally`` runs and a ``--no-cache``
    build left its scratch directory (8.5 GB in one measured case) next to the output. As an exception, every
    ``finally`` and context manager on the way out removes its temporary files, and subprocess.run() kills its
    child. The first signal is enough: the handlers then ignore repeats, so that a second signal cannot cut the
    clean-up short (SIGKILL still stops everything; what it leaves is removed by the next build).
    """
    def handler(signum, frame):
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    try:
        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        yield
        return
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def run(prog, func, argv):
    """Call ``func(argv)``; turn a PonchoError into ``prog: message`` on stderr and its exit code, and a stopping
    signal into ``prog: interrupted by SIG...`` and exit code 128 + the signal's number (130 for Ctrl-C)."""
    try:
        with stop_on_signals():
            return func(argv) or 0
    except PonchoError as e:
        if settings().debug:
            raise
        print("{}: error: {}".format(prog, e), file=sys.stderr)
        return e.exit_code
    except Terminated as e:
        print("{}: interrupted by {}; temporary files removed".format(prog, signal.Signals(e.signum).name),
              file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("{}: interrupted".format(prog), file=sys.stderr)
        return 130
