"""``poncho_package_analyze`` / ``python_package_analyze``: scripts -> pinned environment spec (JSON).

Upstream-compatible: ``[--toplevel | --function NAME] [--pkg-mapping IMPORT=NAME]... [--extra-pkg PKG]...
<script ...> <out.json>``; ``-`` as a script reads source from standard input (Parsl runs
``poncho_package_analyze file.py - spec.yaml``: a file plus stdin in one call; the ``.yaml`` output still holds
JSON, which is valid YAML), ``-`` as the output writes to standard output. Exit codes follow the man page: 1 for
a bad command line (argparse would use 2, which the man page reserves for a bad script path) or bad input such
as a syntax error, 2 for a missing script. The output is written atomically: on error no file appears.

The spec is the analysis' lock (:mod:`poncho_wq.analysis.analyzer`), the same the API builds: every distribution the
imports reach, pinned to the installed version (``--unlocked``: only the imported ones). An import that resolves to
nothing is an error (exit 1) naming file, line and module, unless ``--allow-unresolved NAME`` lists it for the index.
"""

import argparse
import sys

from ..errors import PonchoError
from .common import HelpFormatter, add_version, examples, prog_name, run, setup_logging

PROG = "poncho_package_analyze"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, "{}: error: {}\n".format(self.prog, message))


def _parser(prog):
    # The usage line is argparse's own, made from the same arguments as the list below it, so the two cannot
    # disagree (a hand-written one once listed half the options and named the positionals differently).
    p = _Parser(prog=prog, formatter_class=HelpFormatter,
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


def _analyze(argv, prog):
    parser = _parser(prog)
    args = parser.parse_args(argv)
    setup_logging(args.quiet)
    scripts, output = args.scripts, args.output
    from ..fsutil import refuse_output_onto_input

    refuse_output_onto_input(output, scripts, "output JSON file")
    mapping = {}
    for item in args.pkg_mapping:
        name, sep, pkg = item.partition("=")
        if not sep or not name.strip() or not pkg.strip():
            parser.error("--pkg-mapping {!r}: expected IMPORT=NAME such as yaml=PyYAML".format(item))
        mapping[name.strip()] = pkg.strip()
    sources = {}
    if "-" in scripts:
        if scripts.count("-") > 1:
            parser.error("standard input (-) can be given only once")
        sources["<stdin>"] = sys.stdin.read()
        scripts = [s for s in scripts if s != "-"]

    from ..analysis.analyzer import MANAGER_ONLY, analyze
    from ..config import settings
    from ..fsutil import atomic_output
    from ..request import PackageData

    # The same analysis as the API's (Environment.from_script): manager-only modules left out here too.
    result = analyze(scripts, toplevel=args.toplevel, function=args.function, pkg_mapping=mapping,
                     extra_pkgs=args.extra_pkg, exclude=tuple(MANAGER_ONLY) + tuple(args.exclude),
                     python_version=args.python_version, sources=sources, use_cache=not args.no_cache,
                     prefix=args.prefix, allow_unresolved=args.allow_unresolved,
                     package_data=PackageData.from_settings(settings()))
    spec = result.direct_spec if args.unlocked else result.spec
    if not args.quiet:
        for w in result.warnings:
            print("{}: warning: {}".format(prog, w), file=sys.stderr)
    if args.local_files:
        for path, arcname in result.local_files:
            print("{}: local file: {} -> {}".format(prog, path, arcname), file=sys.stderr)
    try:
        with atomic_output(output) as f:
            f.write(spec.dumps())
    except OSError as e:
        # exit 1: analyze's man page has no code for a failed write
        raise PonchoError("cannot write {}: {}".format(output, e.strerror or e))
    return 0


def main(argv=None, prog=None):
    """The console script (*prog*: the name to show, e.g. ``poncho_wq analyze``; default the name it was called by)."""
    prog = prog or prog_name(argv, PROG)
    return run(prog, lambda a: _analyze(a, prog), list(sys.argv[1:] if argv is None else argv))
