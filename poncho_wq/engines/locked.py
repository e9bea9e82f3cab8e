"""The locked engine: what ``source="auto"`` builds. The manager's versions, the same environment every time.

The spec it gets is an analysis' lock (:attr:`poncho_wq.analysis.analyzer.Analysis.spec`): every distribution the
scripts'
imports reach through their installed ``Requires-Dist``, pinned to the version installed here. The environment's
identity -- its cache key, hence its ``env-<hash>`` name -- is computed from the installed metadata and files only
(:meth:`poncho_wq.engines.LockedEngine.identity`: the current engine's plan, plus the names and versions of what
goes to the index), never from what a network answers. The bytes then come from:

* the installed files, copied exactly as the current engine does (:mod:`.current`), for every distribution whose
  files its RECORD lists: the usual case, and the whole environment when nothing else is needed -- no network at
  all, the same bytes whether the index is fast, slow or unreachable;
* the package index, for what the installed files cannot serve: a distribution installed without a RECORD
  (distutils, a Debian package's egg-info) is downloaded as a wheel of *that exact version* (``--no-deps``; its
  hash goes into ``poncho/lock.json``), and a name the caller allowed unresolved (``allow_unresolved``) is
  resolved with the lock's versions as constraints. A version the index does not have is a build error naming
  it, never another version.

Why installed files first rather than index wheels first (with the installed copy as the fallback): both give the
lock's versions, but index-first makes the bytes behind one name depend on the network (a cold build offline
copies, online downloads), makes every cold build wait for downloads, and needs timeouts that decide what ships;
installed-first gives identical bytes online and offline and the index is asked only where there is no other
way. What the job runs is then also what ran here, byte for byte.

A build for another target (``target=``, :mod:`poncho_wq.target`) cannot copy this machine's compiled files;
:class:`poncho_wq.assemble.environment.Environment` builds the lock from the index with the portable engine then (all
exact
pins, wheels for the target only).
"""

import os

from ..progress import as_progress
from ..spec import as_spec
from .current import build_current_prefix
from .pip import install_exact


def build_locked_prefix(spec, prefix, python=None, progress=None):
    """Populate *prefix* with the lock *spec*: the installed files, then what only the index can give; return
    where each distribution came from (canonical name -> source, for ``poncho/lock.json``)."""
    progress = as_progress(progress)
    spec = as_spec(spec)
    p = build_current_prefix(spec, prefix, python, progress, index_fallback=True)
    sources = dict(p.sources)
    if p.from_index:
        exact_pins = [r for r in spec.pip if "==" in r and "@" not in r]
        sources.update(install_exact(os.path.join(os.path.abspath(prefix), "bin", "python3"), p.from_index,
                                     progress, constraints=exact_pins, target=spec.target))
    return sources
