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

import sys

from ..analysis.analyzer import MANAGER_ONLY, analyze
from ..config import settings
from ..errors import PonchoError
from ..fsutil import atomic_output, refuse_output_onto_input
from ..request import PackageData
from .common import setup_logging
from .main import analyze_main


def command(args, parser, prog):
    """Run the command on parsed *args* (*parser*: :func:`poncho_wq.cli.parsers.analyze`, for usage errors)."""
    setup_logging(args.quiet)
    scripts, output = args.scripts, args.output
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
    """The console script (*prog*: the name to show; default the name it was called by): kept for entry points
    installed before :mod:`poncho_wq.cli.main` held them."""
    return analyze_main(argv, prog)
