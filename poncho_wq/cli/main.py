"""The command line's one entry: ``poncho_wq <command>`` (also ``python -m poncho_wq``) and the console scripts.

Every command is parsed here with its parser from :mod:`poncho_wq.cli.parsers`, which loads nothing of the library,
so ``--help``, ``--version`` and a bad argument are answered at once; only then is the command's module imported
(by its name in :data:`COMMANDS`, the one place that lists them) and run on the parsed arguments. The console
scripts ``poncho_package_analyze`` / ``python_package_analyze`` and ``poncho_package_create`` /
``python_package_create`` are :func:`analyze_main` and :func:`create_main`.

The usage names ``poncho_wq``, the installed command, whatever ran it: ``python -m poncho_wq`` is the same program,
and a user copying the usage line should get the command they have on PATH.
"""

import gc
import importlib
import sys

from ..version import __version__
from . import parsers
from .common import examples, prog_name, run

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

#: command -> (its parser (prog -> ArgumentParser), the module and function that run it on the parsed arguments:
#: ``function(args, parser, prog)``), imported only after the arguments parsed.
COMMANDS = {
    "analyze": (parsers.analyze, "poncho_wq.cli.analyze", "command"),
    "create": (parsers.create, "poncho_wq.cli.create", "command"),
    "cache": (lambda prog: parsers.cache(), "poncho_wq.cli.cache", "command"),
    "inspect": (lambda prog: parsers.inspect(), "poncho_wq.cli.inspect", "inspect_command"),
    "diff": (lambda prog: parsers.diff(), "poncho_wq.cli.inspect", "diff_command"),
    "shim": (lambda prog: parsers.shim(), "poncho_wq.shim", None),
}


def load(module):
    """Import a command's *module* with the cyclic collector paused: a build's imports (about 200 modules, all
    kept until exit) set off some 35 collections that find nothing to free, 7-9 ms of a command line build's
    CPU."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        if enabled:
            gc.enable()


def dispatch(command, argv, prog=None):
    """Parse *argv* for *command* (its usage naming *prog*), then import its module and run it; the exit code."""
    prog = prog or "poncho_wq " + command
    make_parser, module, function = COMMANDS[command]

    def call(args_list):
        parser = make_parser(prog)
        args = parser.parse_args(args_list)
        if function is None:  # shim: print the path of the run shim
            print(load(module).shim_path())
            return 0
        return getattr(load(module), function)(args, parser, prog)

    return run(prog, call, argv)


def exiting(code, argv):
    """*code*, after freezing the collector's objects when the command ran as its own program (*argv* None: a
    console script or ``python -m poncho_wq``), which exits next.

    Why: on the way out CPython runs its cyclic collector over every object several times while it tears the
    modules down (about 25,000 tracked objects after a build); frozen objects are skipped by those collections
    and freed by reference counting as usual (atexit handlers, ``weakref.finalize`` and ``finally`` blocks all
    still run, and the standard streams are flushed; objects in reference cycles are left to the process's end
    unfinalized, which Python does not promise at exit either: every file the command writes is closed and
    renamed into place before it returns).
    Measured: 37-50 ms of CPU (10 ms left) at the end of every ``poncho_package_create`` of a small environment,
    whose whole own CPU is about 0.45 s. A call with an *argv* (tests, an embedding program) keeps its process's
    collector as it was."""
    if argv is None:
        gc.freeze()
    return code


def analyze_main(argv=None, prog=None):
    """``poncho_package_analyze`` (also ``python_package_analyze``; *prog*: the name to show, default the name it
    was called by)."""
    return exiting(dispatch("analyze", list(sys.argv[1:] if argv is None else argv),
                            prog or prog_name(argv, parsers.ANALYZE)), argv)


def create_main(argv=None, prog=None):
    """``poncho_package_create`` (also ``python_package_create``)."""
    return exiting(dispatch("create", list(sys.argv[1:] if argv is None else argv),
                            prog or prog_name(argv, parsers.CREATE)), argv)


def cache_main(argv=None):
    """``poncho_wq cache``."""
    return exiting(dispatch("cache", list(sys.argv[1:] if argv is None else argv)), argv)


def main(argv=None):
    """``poncho_wq <command> ...``."""
    return exiting(_main(list(sys.argv[1:] if argv is None else argv)), argv)


def _main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 1
    if argv[0] == "--version":
        print(VERSION)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "serve":  # its parser lives with its server, which runs as its own process
        return importlib.import_module("poncho_wq.deliver.publish").serve_main(rest)
    if command not in COMMANDS:
        print("poncho_wq: unknown command {!r}\n{}".format(command, USAGE), file=sys.stderr, end="")
        return 1
    return dispatch(command, rest)
