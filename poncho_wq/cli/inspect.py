"""``poncho_wq inspect`` and ``poncho_wq diff``: what an environment holds and why, what changed between two.

``inspect ENV.tar.gz`` prints the tarball's ``poncho/lock.json`` (:mod:`poncho_wq.archive.lock`) as a table: name,
version, size, why (``--sources``: where each came from; ``--json``: the document itself). ``inspect job.py ...``
analyzes scripts instead and prints the lock they would get, with the file and line of each import (which the
tarball does not carry). ``diff A.tar.gz B.tar.gz`` lists the distributions added (``+``), removed (``-``) and
changed (``~``: version, source, or files) from A to B (``--json``: a list of objects). Both exit 0 on success
(``diff`` also when there are differences), 1 for a bad argument or a file that is no environment tarball with
a lock, 2 for a missing file.
"""

import json
import os
import sys

from ..analysis.analyzer import analyze
from ..analysis.installation import installation
from ..archive.lock import diff, diff_text, read_lock, table
from ..errors import InputMissing
from .common import setup_logging
from .main import dispatch


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


def inspect_command(args, p, prog):
    """``poncho_wq inspect`` on parsed *args* (*p*: :func:`poncho_wq.cli.parsers.inspect`)."""
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


def diff_command(args, p, prog):
    """``poncho_wq diff`` on parsed *args*."""
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
    """``poncho_wq inspect`` / ``diff``: kept for callers of the module before :mod:`poncho_wq.cli.main`."""
    return dispatch(command, list(sys.argv[1:] if argv is None else argv))
