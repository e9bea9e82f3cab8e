"""What every poncho_wq command shares: error reporting, exit codes, debug tracebacks, progress logging."""

import logging
import os
import sys

from ..config import settings
from ..errors import PonchoError


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


def run(prog, func, argv):
    """Call ``func(argv)``; turn a PonchoError into ``prog: message`` on stderr and its exit code."""
    try:
        return func(argv) or 0
    except PonchoError as e:
        if settings().debug:
            raise
        print("{}: error: {}".format(prog, e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("{}: interrupted".format(prog), file=sys.stderr)
        return 130
