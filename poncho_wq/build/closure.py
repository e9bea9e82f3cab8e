"""Dependency closures over what is *installed*: pip metadata (Requires-Dist) and conda-meta records (depends).

Why not ask a resolver: the point of building from the running environment is to ship exactly what the user
tested, so the answer must come from the installed metadata, never from an index. A distribution's
``Requires-Dist`` lines carry PEP 508 markers; they are evaluated for the *target* (the interpreter whose
environment is copied: same version and platform as the workers' copy), once with ``extra == ""`` and once per
extra that a dependant requested (``requests[socks]`` pulls ``PySocks`` only then). Extras discovered later
re-open an already visited distribution, so the order of discovery does not change the result.

A requirement that is not installed is not an error here: pip would have refused a broken environment only at
install time, and the user's code ran with it. It is reported (``missing``), like ``pip check`` would, and the
build goes on; a *root* that is not installed is an error (the caller decides).
"""

import dataclasses
import importlib.metadata
import logging
import os
from typing import Dict, FrozenSet, List, Tuple

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Closure:
    """``dists``: canonical name -> importlib.metadata Distribution, in discovery order; ``extras``: canonical
    name -> extras requested of it; ``missing``: (requirer, requirement text) whose target is not installed;
    ``conflicts``: (requirer, requirement text, installed version) whose installed version does not match."""

    dists: Dict[str, importlib.metadata.Distribution]
    extras: Dict[str, FrozenSet[str]]
    missing: Tuple[Tuple[str, str], ...]
    conflicts: Tuple[Tuple[str, str, str], ...]


def dist_name(dist):
    return dist.metadata["Name"] or ""


def installed_index(site_dirs):
    """canonical name -> Distribution for *site_dirs* (earlier directories shadow later ones, as imports do)."""
    index = {}
    for dist in importlib.metadata.distributions(path=list(site_dirs)):
        try:
            key = canonicalize_name(dist_name(dist))
        except Exception:  # a broken .dist-info must not stop the build
            continue
        if key and key not in index:
            index[key] = dist
    return index


def marker_applies(marker, environment, extras=()):
    """Is *marker* (a packaging Marker or None) true for *environment* with no extra or any of *extras*?"""
    if marker is None:
        return True
    for extra in ("",) + tuple(sorted(extras)):
        env = dict(environment)
        env["extra"] = extra
        if marker.evaluate(env):
            return True
    return False


def pip_closure(roots, index, environment):
    """Close the requirements *roots* (packaging Requirements whose names are in *index*) over Requires-Dist.

    *environment* is the target's marker environment (:func:`packaging.markers.default_environment` shape).
    Roots whose own marker is false for the target are dropped by the caller, not here.
    """
    dists, extras, missing, conflicts = {}, {}, [], []
    work: List[Tuple[str, FrozenSet[str]]] = []
    for req in roots:
        key = canonicalize_name(req.name)
        work.append((key, frozenset(canonicalize_name(e) for e in req.extras)))
    while work:
        key, wanted = work.pop(0)
        dist = index[key]
        before = extras.get(key)
        if before is not None and wanted <= before:
            continue
        dists.setdefault(key, dist)
        extras[key] = (before or frozenset()) | wanted
        for text in dist.requires or ():
            try:
                req = Requirement(text)
            except InvalidRequirement:
                log.warning("%s: ignoring unparsable requirement %r", dist_name(dist), text)
                continue
            if not marker_applies(req.marker, environment, extras[key]):
                continue
            dep = canonicalize_name(req.name)
            target = index.get(dep)
            if target is None:
                missing.append((dist_name(dist), text))
                continue
            if req.specifier and not req.specifier.contains(target.version, prereleases=True):
                conflicts.append((dist_name(dist), text, target.version))
            work.append((dep, frozenset(canonicalize_name(e) for e in req.extras)))
    return Closure(dists, extras, tuple(dict.fromkeys(missing)), tuple(dict.fromkeys(conflicts)))


# ------------------------------------------------------------------------------------------------------ conda


def conda_records(prefix):
    """name -> conda-meta record (dict) of the conda prefix *prefix*."""
    import glob
    import json

    records = {}
    for path in sorted(glob.glob(os.path.join(prefix, "conda-meta", "*.json"))):
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
        rec["_path"] = path
        records[rec["name"]] = rec
    return records


def conda_closure(roots, records):
    """Names of the conda packages reachable from *roots* (names) through the records' ``depends``.

    A ``depends`` entry is a match spec (``"libzlib >=1.2.13,<2.0a0"``); only its name matters here, because
    the installed record *is* the solver's answer. Entries naming nothing installed (virtual packages such as
    ``__glibc``) are skipped.
    """
    seen, work = [], list(roots)
    while work:
        name = work.pop(0)
        if name in seen or name not in records:
            continue
        seen.append(name)
        for spec in records[name].get("depends", ()):
            dep = spec.split()[0].split("[")[0]
            if "::" in dep:
                dep = dep.split("::", 1)[1]
            for op in ("=", "<", ">", "!", "~"):
                dep = dep.split(op, 1)[0]
            if dep and not dep.startswith("__"):
                work.append(dep)
    return seen


def evaluate_root_marker(req, environment):
    return req.marker is None or Marker(str(req.marker)).evaluate(dict(environment, extra=""))
