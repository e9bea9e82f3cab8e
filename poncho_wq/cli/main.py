"""Dispatcher for the ``poncho_wq`` command (also ``python -m poncho_wq``): one subcommand per job.

The usage names ``poncho_wq``, the installed command, whatever ran it: ``python -m poncho_wq`` is the same program,
and a user copying the usage line should get the command they have on PATH.
"""

import argparse
import sys

from ..version import __version__
from .common import HelpFormatter, add_version, examples

USAGE = """usage: poncho_wq [-h] [--version] <command> [options] ...
       (also: python -m poncho_wq <command> ...; `poncho_wq <command> --help` for a command's options)

commands:
  analyze   same as poncho_package_analyze: scripts -> environment spec
  create    same as poncho_package_create: spec -> packed environment tarball
  cache     list, remove or prune cached environment builds
  inspect   what an environment tarball holds and why (ENV.tar.gz), or the lock scripts get (job.py)
  diff      which distributions differ between two environment tarballs
  shim      print the path of the run shim (poncho_package_run, a POSIX sh script)
  serve     serve a publish directory over HTTP (a plain local server for small setups; not for production)

""" + examples(
    ("poncho_wq analyze job.py spec.json", "the environment job.py needs"),
    ("poncho_wq create spec.json env.tar.gz", "build it (cached)"),
    ("poncho_wq inspect env.tar.gz", "what it holds and why"),
    ("poncho_wq cache list", "what is cached"),
    ("poncho_wq cache prune --max-size 5G --dry-run", "what a size limit would remove")) + "\n"

VERSION = "poncho_wq " + __version__


def _shim(argv):
    p = argparse.ArgumentParser(prog="poncho_wq shim", formatter_class=HelpFormatter,
                                description="Print the path of the run shim (poncho_package_run, a POSIX sh script "
                                "that unpacks an environment once per worker and runs a command in it).",
                                epilog=examples(("%(prog)s", "its path"),
                                                ('cp "$(%(prog)s)" /shared/bin/', "a copy for workers")))
    add_version(p)
    p.parse_args(argv)
    from ..shim import shim_path

    print(shim_path())
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 1
    if argv[0] == "--version":
        print(VERSION)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "analyze":
        from .analyze import main as analyze_main

        return analyze_main(rest, prog="poncho_wq analyze")
    elif command == "create":
        from .create import main as create_main

        return create_main(rest, prog="poncho_wq create")
    elif command == "cache":
        from .cache import main as sub
    elif command in ("inspect", "diff"):
        from .inspect import main as inspect_main

        return inspect_main(rest, command)
    elif command == "serve":
        from ..deliver.publish import serve_main as sub
    elif command == "shim":
        sub = _shim
    else:
        print("poncho_wq: unknown command {!r}\n{}".format(command, USAGE), file=sys.stderr, end="")
        return 1
    return sub(rest)
