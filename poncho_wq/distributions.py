"""Which installed distribution provides an import name, at which exact version (pip metadata and conda-meta).

An import name is not a distribution name (``yaml`` comes from PyYAML, ``sklearn`` from scikit-learn, ``bs4``
from beautifulsoup4), and guessing from a static table goes stale. The environment that runs the code already
knows: every installed distribution lists its top-level modules (``top_level.txt``, or the files in its
``RECORD``), and inside a conda environment every conda package lists its files in ``conda-meta/*.json``. This
module builds that index once per environment (memoized in-process on the site directories' mtimes, which change
whenever something is installed or removed) and answers "who owns ``yaml``?" with an exact pin.

Conda first: inside a conda prefix a module that a conda package installed (with or without a ``.dist-info``
of its own) is pinned as ``channel::name=version=build``; a pip-installed one (not owned by any conda record) as
``Name==version``. Distributions installed from a local directory or editable (``direct_url.json`` with a
``file://`` URL) cannot be installed on a worker from PyPI: they are reported as local distributions and their
code travels like the user's own modules. A VCS install becomes a PEP 508 direct reference pinned to its commit.
"""

import dataclasses
import glob
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Optional
from urllib.parse import unquote, urlparse

from packaging.utils import canonicalize_name

from .errors import PonchoError
from .fsutil import is_within, mtime_ns

log = logging.getLogger(__name__)

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


def _module_name(entry):
    """Top-level import name an installed file or directory provides, or None."""
    if entry.endswith((".dist-info", ".egg-info", ".data", ".pth", ".egg-link")) or entry in ("__pycache__", ".."):
        return None
    for suffix in EXTENSION_SUFFIXES + [".py", ".pyc"]:
        if entry.endswith(suffix):
            entry = entry[: -len(suffix)]
            break
    else:
        if "." in entry:
            return None
    return entry if entry.isidentifier() else None


def _find_module(directory, name):
    """(kind, path) of top-level module *name* directly in *directory*, or None."""
    sub = os.path.join(directory, name)
    if os.path.isfile(os.path.join(sub, "__init__.py")):
        return "pkg", os.path.join(sub, "__init__.py")
    if os.path.isfile(sub + ".py"):
        return "py", sub + ".py"
    for suffix in EXTENSION_SUFFIXES:
        if os.path.isfile(sub + suffix):
            return "ext", sub + suffix
    return None


class _Dist:
    """One installed distribution. Its METADATA is parsed only when it is pinned: parsing every distribution's
    headers (the email parser) was most of a warm run's time in a big environment."""

    __slots__ = ("dist", "key", "_meta", "_direct_url", "_files")

    def __init__(self, dist, key):
        self.dist = dist
        self.key = key
        self._files = None
        self._meta = None
        self._direct_url = False

    @property
    def name(self):
        return self._metadata()[0]

    @property
    def version(self):
        return self._metadata()[1]

    def _metadata(self):
        if self._meta is None:
            self._meta = (self.dist.metadata["Name"] or self.key, self.dist.version)
        return self._meta

    @property
    def direct_url(self):
        if self._direct_url is False:
            self._direct_url = None
            try:
                text = self.dist.read_text("direct_url.json")
                if text:
                    self._direct_url = json.loads(text)
            except (OSError, ValueError):
                pass
        return self._direct_url

    def files(self):
        if self._files is None:
            self._files = frozenset(str(f).replace("\\", "/") for f in (self.dist.files or ()))
        return self._files

    def local_source(self):
        """The source directory of an editable / local-directory / local-file install, else None."""
        url = (self.direct_url or {}).get("url", "")
        if url.startswith("file://") and "vcs_info" not in (self.direct_url or {}):
            return unquote(urlparse(url).path)
        return None

    def pin(self):
        vcs = (self.direct_url or {}).get("vcs_info")
        if vcs and vcs.get("commit_id"):
            text = "{} @ {}+{}@{}".format(self.name, vcs.get("vcs", "git"), self.direct_url["url"], vcs["commit_id"])
        else:
            text = "{}=={}".format(self.name, self.version)
        return Pin("pip", self.name, self.version, text)


_INDEX_MEMO = {}


class Environment:
    """The installed distributions of one environment: the running interpreter's (``prefix=None``) or the conda
    prefix / venv at *prefix*. ``python_version`` ("X.Y") is the target; it defaults to the environment's."""

    def __init__(self, prefix=None, python_version=None):
        self.prefix = os.path.abspath(prefix) if prefix else None
        env_prefix = self.prefix or sys.prefix
        if self.prefix and not os.path.isdir(self.prefix):
            raise PonchoError("environment prefix {} does not exist".format(prefix), exit_code=2)
        self.conda_meta = os.path.join(env_prefix, "conda-meta")
        self.is_conda = os.path.isdir(self.conda_meta)
        self.site_dirs = self._site_dirs()
        key = (env_prefix, tuple(self.site_dirs), tuple(mtime_ns(d) for d in self.site_dirs + [self.conda_meta]))
        memo = _INDEX_MEMO.get(key)
        if memo is None:
            memo = _INDEX_MEMO[key] = self._index()
        self.dists_by_import, self.dists_by_name, self.conda_by_import, self.conda_by_name = memo
        self.python_full = self._python_full(python_version)
        self.python_minor = ".".join(self.python_full.split(".")[:2])

    # -- discovery -------------------------------------------------------------------------------------------
    def _site_dirs(self):
        if self.prefix is None:
            dirs = [p for p in sys.path if p and os.path.isdir(p) and os.path.abspath(p) != os.getcwd()
                    and not _is_stdlib_path(os.path.join(os.path.abspath(p), "x"))]
            return list(dict.fromkeys(os.path.abspath(p) for p in dirs))
        dirs = sorted(glob.glob(os.path.join(self.prefix, "lib", "python3*", "site-packages")))
        dirs += [d for d in [os.path.join(self.prefix, "Lib", "site-packages")] if os.path.isdir(d)]
        extra = []
        for d in dirs:  # .pth path entries (legacy editable installs add their source dir this way)
            for pth in sorted(glob.glob(os.path.join(d, "*.pth"))):
                try:
                    extra += [os.path.abspath(p) for p in pth_directories(pth, d)]
                except OSError:
                    pass
        return dirs + extra

    def _index(self):
        by_import, by_name = {}, {}
        for dist in importlib.metadata.distributions(path=self.site_dirs):
            try:
                key = canonicalize_name(_dist_name(dist))
            except Exception:  # a broken .dist-info must not stop the analysis
                continue
            if not key or key in by_name:
                continue  # shadowed by an earlier path entry, as at import time
            d = _Dist(dist, key)
            by_name[key] = d
            top = None
            try:
                top = dist.read_text("top_level.txt")
            except OSError:
                pass
            names = set()
            if top:
                names = {n.strip().split("/")[0] for n in top.split() if n.strip()}
            else:
                for f in dist.files or ():
                    parts = str(f).replace("\\", "/").split("/")
                    if parts[0] == "..":
                        continue
                    n = _module_name(parts[0]) if len(parts) > 1 else _module_name(parts[0])
                    if n and not (len(parts) == 1 and not parts[0].endswith(tuple(EXTENSION_SUFFIXES) + (".py",))):
                        names.add(n)
            for n in names:
                if n.isidentifier():
                    by_import.setdefault(n, []).append(d)
        conda_import, conda_name = {}, {}
        if self.is_conda:
            sp_prefixes = tuple(os.path.relpath(d, os.path.dirname(self.conda_meta)).replace(os.sep, "/") + "/"
                                for d in self.site_dirs if _within(d, os.path.dirname(self.conda_meta)))
            for path in sorted(glob.glob(os.path.join(self.conda_meta, "*.json"))):
                try:
                    with open(path, encoding="utf-8") as f:
                        rec = json.load(f)
                    rec["name"], rec["version"], rec["build"]
                except (OSError, ValueError, KeyError, TypeError) as e:
                    log.warning("ignoring unreadable conda record %s: %s", path, e)
                    continue
                conda_name[rec["name"]] = rec
                for f in rec.get("files", ()):
                    for sp in sp_prefixes:
                        if f.startswith(sp):
                            entry = f[len(sp):].split("/", 1)[0]
                            if entry.endswith((".dist-info", ".egg-info")):
                                dname = canonicalize_name(entry.rsplit(".", 1)[0].split("-")[0])
                                conda_name.setdefault("dist:" + dname, rec)
                            n = _module_name(entry)
                            if n:
                                conda_import.setdefault(n, rec)
                            break
        return by_import, by_name, conda_import, conda_name

    def _python_full(self, requested):
        if self.is_conda and "python" in self.conda_by_name:
            env_version = self.conda_by_name["python"]["version"]
        elif self.prefix:
            env_version = _pyvenv_version(self.prefix) or platform.python_version()
        else:
            env_version = platform.python_version()
        if requested and ".".join(env_version.split(".")[:2]) != ".".join(requested.split(".")[:2]):
            return requested
        return requested if requested and requested.count(".") == 2 else env_version

    # -- queries ---------------------------------------------------------------------------------------------
    def python_pin(self):
        """The conda ``python`` package of a conda environment (None outside conda or when absent)."""
        rec = self.conda_by_name.get("python") if self.is_conda else None
        return conda_pin(rec) if rec else None

    def pin_for_name(self, name):
        """Pin an explicitly named package (``--pkg-mapping``/``--extra-pkg``): a conda package of this
        environment, else an installed distribution, else the name as given (unpinned)."""
        req = name.strip()
        bare = re.match(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$", req)
        if bare and self.is_conda and req in self.conda_by_name:
            return conda_pin(self.conda_by_name[req])
        if bare:
            d = self.dists_by_name.get(canonicalize_name(req))
            if d is not None:
                rec = self.conda_by_name.get("dist:" + canonicalize_name(req)) if self.is_conda else None
                return conda_pin(rec) if rec else d.pin()
            return Pin("pip", req, None, req)
        return Pin("pip", req, None, req)  # already a requirement with a version constraint: keep it

    def locate(self, top, dotted=()):
        """Where import name *top* comes from (see :class:`Located`); *dotted* are the full names imported
        under it, used to pick the right distribution of a namespace package (``google.protobuf``)."""
        rec = self.conda_by_import.get(top) if self.is_conda else None
        if rec is not None:
            return Located("pin", conda_pin(rec))
        dists = self.dists_by_import.get(top, [])
        if len(dists) > 1:
            dists = _best_match(dists, top, dotted)
        if dists:
            d = dists[0]
            src = d.local_source()
            if src is not None:
                return self._local(top, d, src)
            rec = self.conda_by_name.get("dist:" + canonicalize_name(d.name)) if self.is_conda else None
            return Located("pin", conda_pin(rec) if rec else d.pin())
        # Not claimed by any metadata: an editable finder (setuptools' __editable__ hook), a PYTHONPATH dir, or
        # a module dropped into site-packages by hand.
        found = self._find(top)
        if found is None:
            return Located("missing")
        kind, path, root = found
        for d in self.dists_by_name.values():
            src = d.local_source()
            if src and _within(path, src):
                return Located("local", root=root, path=path, module_kind=kind, dist=d.name, source=src)
        return Located("local", root=root, path=path, module_kind=kind)

    def _local(self, top, d, src):
        found = self._find(top)
        if found is None:
            return Located("missing")
        kind, path, root = found
        return Located("local", root=root, path=path, module_kind=kind, dist=d.name, source=src)

    def _find(self, top):
        for d in self.site_dirs:
            found = _find_module(d, top)
            if found:
                return found + (d,)
        if self.prefix is None:
            # find_spec of a top-level name runs the import system's finders only, never the module's code.
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            if spec is not None and spec.origin and os.path.isfile(spec.origin):
                origin = os.path.abspath(spec.origin)
                if _is_stdlib_path(origin):
                    return None  # this interpreter's standard library, not the target's (--python-version)
                if os.path.basename(origin) == "__init__.py":
                    return "pkg", origin, os.path.dirname(os.path.dirname(origin))
                if origin.endswith(tuple(EXTENSION_SUFFIXES)):
                    return "ext", origin, os.path.dirname(origin)
                if origin.endswith(".py"):
                    return "py", origin, os.path.dirname(origin)
        return None


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


def _dist_name(dist):
    """The distribution's name from its ``Name-Version.dist-info`` directory when it has one (no METADATA
    parse), else from METADATA."""
    path = getattr(dist, "_path", None)
    if path is not None:
        stem = os.path.basename(str(path))
        if stem.endswith((".dist-info", ".egg-info")) and "-" in stem:
            return stem.rsplit(".", 1)[0].split("-")[0]
    return dist.metadata["Name"]


def _is_stdlib_path(path):
    """Is *path* in this interpreter's standard library (lib/pythonX.Y, lib-dynload) rather than a site dir?
    Those directories are on sys.path but never provide third-party code; for another --python-version target
    their modules (tomllib on 3.8) are simply not installed."""
    import sysconfig

    paths = sysconfig.get_paths()
    if any(_within(path, paths[k]) for k in ("purelib", "platlib") if paths.get(k)):
        return False
    return any(_within(path, paths[k]) for k in ("stdlib", "platstdlib") if paths.get(k))


def _pyvenv_version(prefix):
    try:
        with open(os.path.join(prefix, "pyvenv.cfg"), encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition("=")
                if key.strip() in ("version", "version_info"):
                    m = re.match(r"^\s*(3\.\d+\.\d+)", value)
                    if m:
                        return m.group(1)
    except OSError:
        pass
    return None


def pth_directories(pth, site_dir):
    """The existing directories a ``.pth`` file in *site_dir* adds to ``sys.path`` (its path lines; comments and
    ``import`` lines are not paths), as ``site`` would join them. Raises OSError when the file cannot be read."""
    dirs = []
    with open(pth, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "import ", "import\t")):
                d = os.path.join(site_dir, line)
                if os.path.isdir(d):
                    dirs.append(d)
    return dirs


def _within(path, root):
    return is_within(os.path.abspath(path), os.path.abspath(root))
