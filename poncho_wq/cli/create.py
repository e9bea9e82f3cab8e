"""``poncho_package_create [options] <spec.json|-> <out.tar.gz>``: build (or reuse) a packed environment.

A thin layer over :func:`poncho_wq.engines.create`; upstream's positional arguments, plus the cache, engine and
base-interpreter options. ``--from-current-env`` (= ``--engine current``) builds without any package index: the
spec's pip distributions and their installed dependencies are copied from the environment of the interpreter
running this command (or of ``--python``), e.g. on a login node without network::

    poncho_package_analyze script.py spec.json && poncho_package_create --from-current-env spec.json env.tar.gz

``--from-requirements FILE`` and ``--from-project DIR`` read a pip requirements file or a project (setup.py /
pyproject.toml, built as a wheel: :mod:`poncho_wq.assemble.project`) instead of a spec.
 Exit codes: 0 ok, 1 bad spec or usage, 2 spec file missing, 3 build failed; on failure
no output file is written.
"""

import argparse
import sys

from ..errors import PonchoError, SpecError
from .common import HelpFormatter, add_version, examples, prog_name, run, setup_logging

PROG = "poncho_package_create"


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors; upstream (and our man page) say 1, and 2 means "file missing"."""

    def error(self, message):
        self.print_usage(sys.stderr)
        raise SpecError(message)


def parser(prog=PROG):
    p = _Parser(prog=prog, formatter_class=HelpFormatter,
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


def _create(argv, prog=PROG):
    args = parser(prog).parse_args(argv)
    setup_logging(args.quiet)
    from ..config import settings
    from ..engines import build_request, create
    from ..fsutil import refuse_output_onto_input
    from ..progress import Progress
    from ..spec import load_spec

    refuse_output_onto_input(args.output, [args.spec])
    if args.from_project and args.from_requirements:
        raise PonchoError("--from-project and --from-requirements cannot be combined")
    if args.from_project and (args.from_current_env or args.engine == "current"):
        raise PonchoError("--from-project installs the project's wheel with a builder from a package index; "
                          "--from-current-env / --engine current only copy installed distributions: leave it out")
    if args.extra and not args.from_project:
        raise PonchoError("--extra names optional dependencies of a project: use it with --from-project")
    if args.from_requirements:
        from ..requirements import spec_from_requirements

        if args.spec == "-":
            raise PonchoError("--from-requirements reads a file (its -r/-c includes are relative to it), not - ")
        spec = spec_from_requirements(args.spec)
    elif args.from_project:
        from ..assemble.environment import project_environment

        spec = project_environment(args.spec, args.extra, layered=False, python=args.python,
                                   cache_dir=args.cache_dir).spec
    else:
        spec = load_spec(args.spec)
    if args.from_current_env:
        if args.engine not in ("auto", "current"):
            raise PonchoError("--from-current-env cannot be combined with --engine {}".format(args.engine))
        args.engine = "current"
    # A live progress line on a terminal, one line per phase otherwise, nothing with -q; with PONCHO_DEBUG the
    # debug log lines would tear a live line apart, so phases are plain lines then.
    progress = Progress(args.quiet, tty=False if settings().debug else None)
    # The request, resolved once here (target applied, engine chosen and checked, the key's settings read).
    request = build_request(spec, engine=args.engine, python=args.python, target=args.target)
    result = create(request, args.output, use_cache=not args.no_cache, cache_dir=args.cache_dir, progress=progress)
    if not args.quiet:
        print("{}: {} ({:.1f} MB, {}, key {}) in {:.1f} s".format(
            prog, args.output, result.size / 1e6, "cache hit" if result.cache_hit else "built",
            result.key[:12], result.seconds), file=sys.stderr)
    return 0


def main(argv=None, prog=None):
    """The console script (*prog*: the name to show, e.g. ``poncho_wq create``; default the name it was called by)."""
    prog = prog or prog_name(argv, PROG)
    return run(prog, lambda a: _create(a, prog), sys.argv[1:] if argv is None else argv)
