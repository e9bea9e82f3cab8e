"""Which installed distribution provides an import name, pinned how (pip ``Name==version`` or a conda record).

An import name is not a distribution name (``yaml`` comes from PyYAML, ``sklearn`` from scikit-learn, ``bs4``
from beautifulsoup4), and guessing from a static table goes stale. The environment that runs the code already
knows: :mod:`poncho_wq.analysis.installation` models it (site directories, the distribution index, conda records); this
module turns its answers into the spec's pins.

Conda first: inside a conda prefix a module that a conda package installed (with or without a ``.dist-info``
of its own) is pinned as ``channel::name=version=build``; a pip-installed one (not owned by any conda record) as
``Name==version``. Distributions installed from a local directory or editable (``direct_url.json`` with a
``file://`` URL) cannot be installed on a worker from PyPI: they are reported as local distributions and their
code travels like the user's own modules. A VCS install becomes a PEP 508 direct reference pinned to its commit.
"""

import dataclasses
import os
import re
from typing import Optional

from ..fsutil import is_within
from .installation import Distribution, installation

_SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "linux-ppc64le", "osx-64", "osx-arm64", "win-64", "win-32",
            "linux-32", "linux-armv7l", "linux-s390x", "emscripten-wasm32", "wasi-wasm32")
_DEFAULT_CHANNEL_HOST = "https://conda.anaconda.org/"


@dataclasses.dataclass(frozen=True)
class Pin:
    """One entry of the spec: ``kind`` "pip" or "conda", the distribution ``name``, its ``version`` (None when
    unpinned), the spec ``text`` and, for conda, its ``channel``."""

    kind: str
    name: str
    version: Optional[str]
    text: str
    channel: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Located:
    """Where an import name comes from: ``kind`` is "pin" (a distribution to install), "local" (code to ship:
    ``path`` is its ``__init__.py``/module file under ``root``; ``dist``/``source`` name a local distribution
    if there is one), or "missing"."""

    kind: str
    pin: Optional[Pin] = None
    root: Optional[str] = None
    path: Optional[str] = None
    module_kind: Optional[str] = None  # "pkg", "py", "ext"
    dist: Optional[str] = None
    source: Optional[str] = None
    installed: Optional[Distribution] = None  # the installed distribution pinned (its requirements close the lock)


def channel_name(record):
    """The channel of a conda-meta record as a spec should name it: ``conda-forge`` for the default host, else
    the channel URL without its platform subdirectory (e.g. a local ``file://`` channel)."""
    ch = record.get("schannel") or record.get("channel") or ""
    if not ch and record.get("url"):
        ch = record["url"].rsplit("/", 1)[0]
    ch = ch.rstrip("/")
    if ch.rsplit("/", 1)[-1] in _SUBDIRS:
        ch = ch.rsplit("/", 1)[0]
    if ch.startswith(_DEFAULT_CHANNEL_HOST):
        ch = ch[len(_DEFAULT_CHANNEL_HOST):]
    return ch or "conda-forge"


def conda_pin(record):
    ch = channel_name(record)
    text = "{}::{}={}={}".format(ch, record["name"], record["version"], record["build"])
    return Pin("conda", record["name"], record["version"], text, ch)


def dist_pin(d):
    """The spec pin of an installed :class:`~poncho_wq.analysis.installation.Distribution`: ``Name==version``, or a PEP
    508
    direct reference pinned to its commit for a VCS install."""
    vcs = (d.direct_url or {}).get("vcs_info")
    if vcs and vcs.get("commit_id"):
        text = "{} @ {}+{}@{}".format(d.name, vcs.get("vcs", "git"), d.direct_url["url"], vcs["commit_id"])
    else:
        text = "{}=={}".format(d.name, d.version)
    return Pin("pip", d.name, d.version, text)


class Pinner:
    """The pinning view of one :class:`~poncho_wq.analysis.installation.Installation`: the running interpreter's
    (``prefix=None``) or the conda prefix / venv at *prefix*. ``python_version`` ("X.Y") is the target; it
    defaults to the environment's."""

    def __init__(self, prefix=None, python_version=None, inst=None):
        self.inst = inst or installation(prefix=prefix)
        self.is_conda = bool(self.inst.conda_prefix)
        self.python_full = self._python_full(python_version)
        self.python_minor = ".".join(self.python_full.split(".")[:2])

    def _python_full(self, requested):
        env_version = self.inst.python_version
        if requested and ".".join(env_version.split(".")[:2]) != ".".join(requested.split(".")[:2]):
            return requested
        return requested if requested and requested.count(".") == 2 else env_version

    # -- queries ---------------------------------------------------------------------------------------------
    def python_pin(self):
        """The conda ``python`` package of a conda environment (None outside conda or when absent)."""
        rec = self.inst.conda_records.get("python")
        return conda_pin(rec) if rec else None

    def _pin(self, d):
        rec = self.inst.conda_owner(d)
        return conda_pin(rec) if rec else dist_pin(d)

    def pin(self, d):
        """The spec pin of the installed :class:`~poncho_wq.analysis.installation.Distribution` *d* (conda record or
        pip)."""
        return self._pin(d)

    def pin_for_name(self, name):
        """Pin an explicitly named package (``--pkg-mapping``/``--extra-pkg``): a conda package of this
        environment, else an installed distribution, else the name as given (unpinned)."""
        req = name.strip()
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$", req):
            return Pin("pip", req, None, req)  # already a requirement with a version constraint: keep it
        if req in self.inst.conda_records:
            return conda_pin(self.inst.conda_records[req])
        d = self.inst.distribution(req)
        return self._pin(d) if d is not None else Pin("pip", req, None, req)

    def locate(self, top, dotted=()):
        """Where import name *top* comes from (see :class:`Located`); *dotted* are the full names imported
        under it, used to pick the right distribution of a namespace package (``google.protobuf``)."""
        rec = self.inst.conda_provider(top)
        dists = self.inst.providers(top)
        if len(dists) > 1:
            dists = _best_match(dists, top, dotted)
        if rec is not None:
            owned = [d for d in dists if self.inst.conda_owner(d) is rec]
            return Located("pin", conda_pin(rec), installed=owned[0] if owned else None)
        if dists:
            d = dists[0]
            src = d.local_source()
            if src is None:
                return Located("pin", self._pin(d), installed=d)
            found = self.inst.find_module(top)
            if found is None:
                return Located("missing")
            kind, path, root = found
            return Located("local", root=root, path=path, module_kind=kind, dist=d.name, source=src)
        # Not claimed by any metadata: an editable finder (setuptools' __editable__ hook), a PYTHONPATH dir, or
        # a module dropped into site-packages by hand.
        found = self.inst.find_module(top)
        if found is None:
            return Located("missing")
        kind, path, root = found
        for d in self.inst.distributions().values():
            src = d.local_source()
            if src and _within(path, src):
                return Located("local", root=root, path=path, module_kind=kind, dist=d.name, source=src)
        return Located("local", root=root, path=path, module_kind=kind)


def _best_match(dists, top, dotted):
    """Among distributions sharing a top-level name, prefer the one whose files contain the deepest imported
    submodule path (``google/protobuf/...`` picks protobuf over google-auth)."""
    best, best_depth = [], -1
    for d in dists:
        files = d.files()
        depth = 0
        for name in dotted:
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                stem = "/".join(parts[:k])
                if stem + ".py" in files or stem + "/__init__.py" in files or any(
                        f.startswith(stem + "/") for f in files):
                    depth = max(depth, k)
                    break
        if depth > best_depth:
            best, best_depth = [d], depth
        elif depth == best_depth:
            best.append(d)
    return best


def _within(path, root):
    return is_within(os.path.abspath(path), os.path.abspath(root))
