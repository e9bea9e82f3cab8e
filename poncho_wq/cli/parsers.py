"""Every command's argparse parser, in one module that loads nothing of the library.

Why: a command line answers ``--help``, ``--version`` and a bad argument before anything heavy is imported (the
analyzer, the engines, packaging's parsers); :mod:`poncho_wq.cli.main` parses with these and only then imports the
command's module (:data:`poncho_wq.cli.main.COMMANDS`), whose imports sit at its top. Exit codes of a usage error
follow the upstream man pages: 1 (argparse's own 2 means "file missing" there). ``poncho_wq serve``'s parser
lives with its server (:mod:`poncho_wq.deliver.publish`), which runs as its own process.
"""

import argparse
import sys

from ..errors import SpecError
from .common import HelpFormatter, add_version, examples

ANALYZE = "poncho_package_analyze"
CREATE = "poncho_package_create"


class _ExitOne(argparse.ArgumentParser):
    """A usage error prints the usage and exits 1 (analyze, inspect, diff)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, "{}: error: {}\n".format(self.prog, message))


class _UsageIsSpecError(argparse.ArgumentParser):
    """A usage error is a SpecError (exit 1, ``prog: error: ...``; create, cache)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        raise SpecError(message)


def analyze(prog=ANALYZE):
    # The usage line is argparse's own, made from the same arguments as the list below it, so the two cannot
    # disagree (a hand-written one once listed half the options and named the positionals differently).
    p = _ExitOne(prog=prog, formatter_class=HelpFormatter,
                description="Find the third-party packages Python scripts import (static analysis, never running "
                            "them) and write a pinned environment specification (JSON).",
                epilog=examples(
                    ("%(prog)s job.py spec.json", "the lock job.py's imports need"),
                    ("%(prog)s job.py - | poncho_package_create - env.tar.gz", "analyze and build in one pipe"),
                    ("%(prog)s --function work job.py spec.json", "only the imports inside work()"),
                    ("%(prog)s --pkg-mapping yaml=PyYAML --extra-pkg six job.py spec.json", "hints"),
                    ("%(prog)s --unlocked jobs/ spec.json", "every .py in jobs/, only imported ones pinned")) + "\n\nexit codes: 0 ok, 1 usage error, syntax error or an import "
                "that resolves to nothing, 2 a script is missing")
    add_version(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--toplevel", action="store_true", help="only include imports at the top level of the scripts")
    mode.add_argument("--function", metavar="NAME",
                      help="only include imports in the given function (default: the imports of the whole file)")
    p.add_argument("--pkg-mapping", metavar="IMPORT=NAME", action="append", default=[],
                   help="the module imported as IMPORT is provided by the pip/conda package NAME (repeatable; "
                        "default: the installed metadata says)")
    p.add_argument("--extra-pkg", metavar="PKG", action="append", default=[],
                   help="also include package PKG even if no source imports it (repeatable; default: none)")
    p.add_argument("--exclude", metavar="IMPORT", action="append", default=[],
                   help="leave the import name IMPORT out entirely (repeatable; default: only the manager-only "
                        "modules: Work Queue, ndcctools, poncho_wq)")
    p.add_argument("--allow-unresolved", metavar="NAME", action="append", default=[],
                   help="an import NAME that nothing installed here provides is listed unpinned for the package "
                        "index (repeatable; default: such an import is an error)")
    p.add_argument("--unlocked", action="store_true",
                   help="pin only the distributions the scripts import; the index resolves their dependencies "
                        "(default: every distribution of their installed closure, at the installed version)")
    p.add_argument("--python-version", metavar="X.Y", help="target Python version (default: this interpreter's)")
    p.add_argument("--prefix", metavar="DIR",
                   help="resolve packages in the conda prefix or venv DIR (default: this interpreter's "
                        "environment)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the per-file scan cache")
    p.add_argument("--local-files", action="store_true",
                   help="also list the local modules the task must ship, on stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or warnings, only errors")
    p.add_argument("scripts", nargs="+", metavar="SCRIPT",
                   help="a Python script (- for standard input; a directory means every .py in it)")
    p.add_argument("output", metavar="OUT.json", help="the spec file to write (- for standard output)")
    return p



def create(prog=CREATE):
    p = _UsageIsSpecError(prog=prog, formatter_class=HelpFormatter,
                description="Build a relocatable environment tarball from a Poncho spec, once: results are cached "
                "by content (see `poncho_wq cache list`).",
                epilog=examples(
                    ("%(prog)s spec.json env.tar.gz", "build (or reuse) the environment spec.json describes"),
                    ("poncho_package_analyze job.py - | %(prog)s - env.tar.gz", "what job.py imports"),
                    ("%(prog)s --from-current-env spec.json env.tar.gz", "copy what is installed here, offline"),
                    ("%(prog)s --from-requirements requirements.txt env.tar.gz", "a pip requirements file"),
                    ("%(prog)s --from-project jobdir --extra gpu env.tar.gz", "a setup.py/pyproject.toml project"),
                    ("%(prog)s --target manylinux_2_28_x86_64 spec.json env.tar.gz", "for RHEL 8 workers"))
                + "\n\nexit codes: 0 ok, 1 bad spec or usage, 2 spec file or project missing, 3 build failed "
                "(nothing is written)")
    add_version(p)
    p.add_argument("spec", metavar="SPEC", help="environment spec (JSON or YAML), or - for standard input; with "
                   "--from-project, a project directory; with --from-requirements, a pip requirements file")
    p.add_argument("output", metavar="OUTPUT", help="the tarball to write (.tar.gz)")
    p.add_argument("--no-cache", action="store_true", help="build into OUTPUT without using or filling the cache")
    p.add_argument("--engine", choices=("auto", "conda", "portable", "current", "locked"), default="auto",
                   help="conda (spec has a conda section), portable (copy a Python interpreter, install from an "
                   "index), current (see --from-current-env) or locked (the installed files, the index only for "
                   "what they cannot serve: what the API's source='auto' builds from poncho_package_analyze's "
                   "lock) (default: auto: conda or portable)")
    p.add_argument("--from-current-env", action="store_true",
                   help="no package index: copy the spec's pip distributions, closed over their installed "
                   "dependencies, from the running environment (or --python's); same as --engine current")
    p.add_argument("--from-requirements", action="store_true",
                   help="SPEC is a pip requirements file (pins, markers, -r includes, -c constraints; index options "
                   "are refused: set PIP_INDEX_URL / UV_INDEX_URL instead)")
    p.add_argument("--from-project", action="store_true",
                   help="SPEC is a project directory (setup.py / pyproject.toml): its dependencies and the project, "
                   "built as a wheel, in one tarball (exit 3 when it fails to build)")
    p.add_argument("--extra", action="append", default=[], metavar="NAME",
                   help="with --from-project: also install the project's optional dependencies NAME (repeatable; "
                   "default: none)")
    p.add_argument("--python", metavar="PATH",
                   help="base interpreter for the portable engine, environment to copy from for the current one "
                   "(default: the one running this command)")
    p.add_argument("--target", metavar="TAG",
                   help="the oldest worker the environment must run on, as a manylinux tag such as "
                   "manylinux_2_28_x86_64 (RHEL 8) or manylinux_2_17_aarch64: only wheels for it, an interpreter "
                   "that runs there, conda packages solved for it (default: the spec's target, else "
                   "$PONCHO_WQ_TARGET, else this machine)")
    p.add_argument("--cache-dir", metavar="DIR", help="cache directory (default $PONCHO_WQ_CACHE or "
                   "$XDG_CACHE_HOME/poncho_wq or ~/.cache/poncho_wq)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (default: a live line per phase "
                   "on a terminal, one line per phase otherwise)")
    return p



_CACHE_DIR_HELP = ("build cache directory, before or after the subcommand (default: $PONCHO_WQ_CACHE, else "
                   "$XDG_CACHE_HOME/poncho_wq, else ~/.cache/poncho_wq)")


def cache():
    p = _UsageIsSpecError(prog="poncho_wq cache", formatter_class=HelpFormatter,
                description="List, remove or prune cached environment tarballs, code layers and script copies.",
                epilog=examples(
                    ("%(prog)s list", "what is cached, with a total"),
                    ("%(prog)s list --cache-dir /scratch/cache", "another cache (also: --cache-dir before list)"),
                    ("%(prog)s rm 3f2a9c", "remove one environment by a unique prefix of its hash"),
                    ("%(prog)s prune --max-age 30d --dry-run", "what an age limit would remove; removes nothing"),
                    ("%(prog)s prune --max-size 5G", "keep at most 5 GiB, least recently used first")))
    add_version(p)
    p.add_argument("--cache-dir", metavar="DIR", help=_CACHE_DIR_HELP)
    sub = p.add_subparsers(dest="command", metavar="{list,rm,prune}")
    sub.required = True

    def subcommand(name, help, epilog):
        s = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                           formatter_class=HelpFormatter, epilog=examples(*epilog))
        # A global option after the subcommand too (`cache list --cache-dir X`): SUPPRESS keeps the value given
        # before the subcommand when it is not repeated after it.
        s.add_argument("--cache-dir", metavar="DIR", default=argparse.SUPPRESS, help=_CACHE_DIR_HELP)
        add_version(s)
        s.error = p.error
        return s

    subcommand("list", "hash, size, age, floor and spec summary of each environment and code layer, with a header "
               "and a total; the sizes of the build-input stores on stderr",
               [("poncho_wq cache list", "the default cache"),
                ("poncho_wq cache list --cache-dir DIR", "the cache in DIR")])
    rm = subcommand("rm", "remove one entry (a unique prefix of its hash is enough)",
                    [("poncho_wq cache rm 3f2a9c", "an environment"),
                     ("poncho_wq cache rm code-5d1e", "a code layer")])
    rm.add_argument("key", metavar="HASH", help="the hash (or a unique prefix) `cache list` shows")
    pr = subcommand("prune", "remove environments and code layers unused for --max-age, then the least recently "
                    "used beyond --max-size",
                    [("poncho_wq cache prune --max-age 30d", "unused for 30 days"),
                     ("poncho_wq cache prune --max-size 5G --dry-run", "what a 5 GiB limit would remove")])
    pr.add_argument("--max-size", metavar="SIZE",
                    help="keep at most SIZE in all: bytes, or a number with a binary unit K, M, G or T (KiB, MiB, "
                    "GiB, TiB; 500M, 5G, 1.5GiB) (default: no size limit)")
    pr.add_argument("--max-age", metavar="AGE",
                    help="remove entries unused for longer than AGE: seconds, or a number with a unit s, m, h, d "
                    "or w (90m, 12h, 30d, 2w) (default: no age limit)")
    pr.add_argument("-n", "--dry-run", action="store_true",
                    help="say what would be removed, remove nothing")
    return p



def inspect():
    p = _ExitOne(prog="poncho_wq inspect", formatter_class=HelpFormatter,
                description="Show what an environment tarball holds and why (its poncho/lock.json), or the lock an "
                "analysis of scripts gives.",
                epilog=examples(("%(prog)s env.tar.gz", "name, version, size and why of each distribution"),
                                ("%(prog)s --sources env.tar.gz", "also where each came from"),
                                ("%(prog)s --json env.tar.gz", "the lock document itself"),
                                ("%(prog)s job.py", "the lock job.py would get, with the import's file:line"))
                + "\n\nexit codes: 0 ok, 1 bad argument or not a tarball with a lock, 2 a file is missing")
    add_version(p)
    p.add_argument("paths", nargs="+", metavar="ENV.tar.gz | SCRIPT",
                   help="an environment tarball, or Python scripts / directories to analyze")
    p.add_argument("--json", action="store_true", help="print the lock document as JSON")
    p.add_argument("--sources", action="store_true", help="add a column saying where each distribution came from")
    p.add_argument("--allow-unresolved", metavar="NAME", action="append", default=[],
                   help="for scripts: as poncho_package_analyze --allow-unresolved (repeatable; default: an "
                   "import nothing installed provides is an error)")
    return p



def diff():
    p = _ExitOne(prog="poncho_wq diff", formatter_class=HelpFormatter,
                description="Show which distributions differ between two environment tarballs (from their "
                "poncho/lock.json): added (+), removed (-), changed (~).",
                epilog=examples(("%(prog)s old.tar.gz new.tar.gz", "one line per difference, or 'no differences'"),
                                ("%(prog)s --json old.tar.gz new.tar.gz", "the changes as a JSON list"))
                + "\n\nexit codes: 0 (also when they differ), 1 not a tarball with a lock, 2 a file is missing")
    add_version(p)
    p.add_argument("a", metavar="A.tar.gz")
    p.add_argument("b", metavar="B.tar.gz")
    p.add_argument("--json", action="store_true", help="print the changes as a JSON list")
    return p



def shim():
    p = argparse.ArgumentParser(prog="poncho_wq shim", formatter_class=HelpFormatter,
                                description="Print the path of the run shim (poncho_package_run, a POSIX sh script "
                                "that unpacks an environment once per worker and runs a command in it).",
                                epilog=examples(("%(prog)s", "its path"),
                                                ('cp "$(%(prog)s)" /shared/bin/', "a copy for workers")))
    add_version(p)
    return p
