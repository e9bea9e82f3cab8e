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

import sys

from ..assemble.environment import project_environment
from ..config import settings
from ..engines import build_request, create
from ..errors import PonchoError
from ..fsutil import refuse_output_onto_input
from ..progress import Progress
from ..requirements import spec_from_requirements
from ..spec import load_spec
from .common import setup_logging
from .main import create_main


def command(args, parser, prog):
    """Run the command on parsed *args* (*parser*: :func:`poncho_wq.cli.parsers.create`)."""
    setup_logging(args.quiet)
    refuse_output_onto_input(args.output, [args.spec])
    if args.from_project and args.from_requirements:
        raise PonchoError("--from-project and --from-requirements cannot be combined")
    if args.from_project and (args.from_current_env or args.engine == "current"):
        raise PonchoError("--from-project installs the project's wheel with a builder from a package index; "
                          "--from-current-env / --engine current only copy installed distributions: leave it out")
    if args.extra and not args.from_project:
        raise PonchoError("--extra names optional dependencies of a project: use it with --from-project")
    if args.from_requirements:
        if args.spec == "-":
            raise PonchoError("--from-requirements reads a file (its -r/-c includes are relative to it), not - ")
        spec = spec_from_requirements(args.spec)
    elif args.from_project:
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
    """The console script (*prog*: the name to show; default the name it was called by): kept for entry points
    installed before :mod:`poncho_wq.cli.main` held them."""
    return create_main(argv, prog)
