"""Dispatcher for ``python -m poncho_wq`` and the ``poncho_wq`` command."""

import sys

USAGE = """usage: python -m poncho_wq <command> [options] ...

commands:
  analyze   same as poncho_package_analyze: scripts -> environment spec
  create    same as poncho_package_create: spec -> packed environment tarball
  cache     list, remove or prune cached environment builds
  inspect   what an environment tarball holds and why (ENV.tar.gz), or the lock scripts get (job.py)
  diff      which distributions differ between two environment tarballs
  shim      print the path of the run shim (poncho_package_run, a POSIX sh script)
  serve     serve a publish directory over HTTP (a plain local server for small setups; not for production)
"""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 1
    command, rest = argv[0], argv[1:]
    if command == "analyze":
        from .analyze import main as sub
    elif command == "create":
        from .create import main as sub
    elif command == "cache":
        from .cache import main as sub
    elif command in ("inspect", "diff"):
        from .inspect import main as inspect_main

        return inspect_main(rest, command)
    elif command == "serve":
        from ..deliver.publish import serve_main as sub
    elif command == "shim":
        from ..shim import shim_path

        print(shim_path())
        return 0
    else:
        print("poncho_wq: unknown command {!r}\n{}".format(command, USAGE), file=sys.stderr, end="")
        return 1
    return sub(rest)
