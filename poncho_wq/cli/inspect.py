"""``poncho_wq inspect`` and ``poncho_wq diff``: what an environment holds and why, what changed between two.

``inspect ENV.tar.gz`` prints the tarball's ``poncho/lock.json`` (:mod:`poncho_wq.archive.lock`) as a table: name,
version, size, why (``--sources``: where each came from; ``--json``: the document itself). ``inspect job.py ...``
analyzes scripts instead and prints the lock they would get, with the file and line of each import (which the
tarball does not carry). ``diff A.tar.gz B.tar.gz`` lists the distributions added (``+``), removed (``-``) and
changed (``~``: version, source, or files) from A to B (``--json``: a list of objects). Both exit 0 on success
(``diff`` also when there are differences), 1 for a bad argument or a file that is no environment tarball with
a lock, 2 for a missing file.
"""

import argparse
import json
import os
import sys

from ..analysis.analyzer import analyze
from ..errors import InputMissing
from ..analysis.installation import installation
from ..archive.lock import diff, diff_text, read_lock, table
from .common import HelpFormatter, add_version, examples, run, setup_logging


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, "{}: error: {}\n".format(self.prog, message))


def _analysis_lock(paths, allow_unresolved):
    """The lock document an analysis of *paths* gives (why with file and line), in :mod:`poncho_wq.archive.lock`'s
    shape."""
    result = analyze(paths, allow_unresolved=allow_unresolved)
    inst = installation()
    dists = [{"name": e.name, "version": e.version or "", "size": _installed_size(inst.distribution(e.name)),
              "why": list(e.why), "source": {"kind": "analysis", "requirement": e.requirement}}
             for e in result.lock]
    return {"format": 1, "engine": "analysis", "python": result.spec.python_version or "", "distributions": dists}


def _installed_size(dist):
    """Bytes of the files an installed distribution's RECORD lists (0 when it is not installed)."""
    if dist is None:
        return 0
    total = 0
    for rel in dist.record() or ():
        path = os.path.join(dist.location, rel)
        if os.path.isfile(path) and not os.path.islink(path):
            total += os.path.getsize(path)
    return total


def inspect_parser():
    p = _Parser(prog="poncho_wq inspect", formatter_class=HelpFormatter,
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


def inspect_main(argv):
    p = inspect_parser()
    args = p.parse_args(argv)
    setup_logging(True)
    tarballs = [x for x in args.paths if x.endswith((".tar.gz", ".tgz", ".tar"))]
    if tarballs and len(args.paths) > 1:
        p.error("give one environment tarball, or scripts to analyze, not both")
    if tarballs:
        doc = read_lock(tarballs[0])
    else:
        for path in args.paths:
            if not os.path.exists(path):
                raise InputMissing("{} does not exist: give an environment tarball or Python scripts".format(path))
        doc = _analysis_lock(args.paths, args.allow_unresolved)
    if args.json:
        json.dump(doc, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(table(doc, sources=args.sources and bool(tarballs)))
    return 0


def diff_parser():
    p = _Parser(prog="poncho_wq diff", formatter_class=HelpFormatter,
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


def diff_main(argv):
    p = diff_parser()
    args = p.parse_args(argv)
    setup_logging(True)
    changes = diff(read_lock(args.a), read_lock(args.b))
    if args.json:
        json.dump([{"change": m, "name": n, "before": a, "after": b} for m, n, a, b in changes], sys.stdout,
                  indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(diff_text(changes))
    return 0


def main(argv=None, command="inspect"):
    argv = list(sys.argv[1:] if argv is None else argv)
    func = inspect_main if command == "inspect" else diff_main
    return run("poncho_wq " + command, func, argv)
