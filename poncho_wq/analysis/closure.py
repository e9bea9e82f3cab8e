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

The installed distributions and conda records come from :class:`poncho_wq.analysis.installation.Installation` (the model
the analyzer uses too); this module only walks them.
"""

import dataclasses
import logging
from typing import Dict, FrozenSet, List, Tuple

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .installation import Distribution

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Closure:
    """``dists``: canonical name -> :class:`~poncho_wq.analysis.installation.Distribution`, in discovery order;
    ``extras``: canonical
    name -> extras requested of it; ``missing``: (requirer, requirement text) whose target is not installed;
    ``conflicts``: (requirer, requirement text, installed version) whose installed version does not match;
    ``required_by``: canonical name -> the names of the distributions whose requirements reached it (the "why" of
    a lock)."""

    dists: Dict[str, Distribution]
    extras: Dict[str, FrozenSet[str]]
    missing: Tuple[Tuple[str, str], ...]
    conflicts: Tuple[Tuple[str, str, str], ...]
    required_by: Dict[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)


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
    """Close the requirements *roots* (packaging Requirements whose names are in *index*, canonical name ->
    :class:`~poncho_wq.analysis.installation.Distribution`, e.g. ``Installation.distributions()``) over Requires-Dist.

    *environment* is the target's marker environment (:func:`packaging.markers.default_environment` shape).
    Roots whose own marker is false for the target are dropped by the caller, not here.
    """
    dists, extras, missing, conflicts = {}, {}, [], []
    required_by: Dict[str, List[str]] = {}
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
                log.warning("%s: ignoring unparsable requirement %r", dist.name, text)
                continue
            if not marker_applies(req.marker, environment, extras[key]):
                continue
            dep = canonicalize_name(req.name)
            target = index.get(dep)
            if target is None:
                missing.append((dist.name, text))
                continue
            if req.specifier and not req.specifier.contains(target.version, prereleases=True):
                conflicts.append((dist.name, text, target.version))
            if dep != key and dist.name not in required_by.setdefault(dep, []):
                required_by[dep].append(dist.name)
            work.append((dep, frozenset(canonicalize_name(e) for e in req.extras)))
    return Closure(dists, extras, tuple(dict.fromkeys(missing)), tuple(dict.fromkeys(conflicts)),
                   {k: tuple(sorted(v, key=str.lower)) for k, v in required_by.items()})


# ------------------------------------------------------------------------------------------------------ conda


def strip_channel(text):
    """``channel::name=1=b`` -> ``name=1=b``: the channel says where a package came from, the installed record
    is what it is (the analyzer writes ``channel::`` pins; a local channel's URL would not match a renamed one)."""
    head = text.split("[", 1)[0]
    return text.split("::", 1)[1] if "::" in head else text


def match_spec_name(text):
    """The package name a conda match spec names (``"libzlib >=1.2.13,<2.0a0"`` -> ``libzlib``), without rattler."""
    dep = strip_channel(text).strip().split()[0].split("[")[0] if text.strip() else ""
    for op in ("=", "<", ">", "!", "~"):
        dep = dep.split(op, 1)[0]
    return dep


class CondaMatcher:
    """Does an installed record satisfy a match spec? py-rattler's MatchSpec (lenient parsing, the conda
    grammar) against the record read back as a rattler ``PrefixRecord``; without py-rattler only names are
    compared and :attr:`unchecked` lists what could not be checked (the caller warns once)."""

    def __init__(self, records):
        self.records = records
        self.unchecked = []
        self._prefix_records = {}
        try:
            from rattler import MatchSpec, PrefixRecord
        except ImportError:  # pragma: no cover - py-rattler is an install requirement
            self._rattler = None
        else:
            self._rattler = (MatchSpec, PrefixRecord)

    def name(self, text):
        """The exact package name of *text* (None when it names none)."""
        if self._rattler is None:
            return match_spec_name(text) or None
        try:
            ms = self._rattler[0](strip_channel(text))
        except Exception:  # rattler raises its own exception types for parse errors
            return match_spec_name(text) or None
        # py-rattler 0.28 refuses globs in names at parse time; a nameless spec names nothing.
        return ms.name.normalized if ms.name is not None else None

    def satisfies(self, text, name):
        """True/False for the installed record *name* against *text* (True when unknowable, noted)."""
        if self._rattler is None:
            self.unchecked.append(text)
            return True
        MatchSpec, PrefixRecord = self._rattler
        rec = self._prefix_records.get(name)
        if rec is None:
            rec = self._prefix_records[name] = PrefixRecord.from_path(self.records[name]["_path"])
        try:
            return MatchSpec(strip_channel(text)).matches(rec)
        except Exception:
            self.unchecked.append(text)
            return True


@dataclasses.dataclass(frozen=True)
class CondaClosure:
    """``names``: kept package names in discovery order; ``missing``: (requirer, spec) naming nothing installed
    (virtual ``__*`` packages excluded); ``conflicts``: (requirer, spec, installed version-build)."""

    names: Tuple[str, ...]
    missing: Tuple[Tuple[str, str], ...]
    conflicts: Tuple[Tuple[str, str, str], ...]
    unchecked: Tuple[str, ...]


def conda_closure(roots, records, matcher=None):
    """The conda packages reachable from *roots* (package names) through the records' ``depends``.

    A ``depends`` entry is a match spec (``"libzlib >=1.2.13,<2.0a0"``): the installed record of that name *is*
    the solver's answer, so the name decides what is kept; the version/build constraint is still checked, and a
    record that does not satisfy it (an environment changed by hand, ``--force``) is reported, not fatal, as
    :func:`pip_closure` does. Virtual packages (``__glibc``) are never installed and are skipped.
    """
    matcher = matcher or CondaMatcher(records)
    seen, missing, conflicts = [], [], []
    work = [name for name in roots]
    while work:
        name = work.pop(0)
        if name in seen:
            continue
        seen.append(name)
        for spec in records[name].get("depends", ()):
            dep = matcher.name(spec)
            if not dep or dep.startswith("__"):
                continue
            if dep not in records:
                missing.append((name, spec))
                continue
            if not matcher.satisfies(spec, dep):
                conflicts.append((name, spec, "{}-{}".format(records[dep]["version"], records[dep]["build"])))
            work.append(dep)
    return CondaClosure(tuple(seen), tuple(dict.fromkeys(missing)), tuple(dict.fromkeys(conflicts)),
                        tuple(dict.fromkeys(matcher.unchecked)))


def evaluate_root_marker(req, environment):
    return req.marker is None or Marker(str(req.marker)).evaluate(dict(environment, extra=""))
