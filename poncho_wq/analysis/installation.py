"""One model of an installed Python environment: where its third-party code lives, who owns each file, which version.

Why one model: three parts of poncho_wq ask the same questions of an installation -- the analyzer ("who provides
``yaml``, at which version?"), the current engine and its closure ("which files does PyYAML have, what does it
require?") -- and each used to answer them its own way, with its own idea of the site directories, ``.pth``
files, conda-meta and names. They disagreed: inside a ``python -m venv --system-site-packages`` environment the
analyzer took the base interpreter's site-packages for the standard library (``sysconfig``'s purelib is the
venv's there) and listed ``yaml`` unpinned, while the current engine shipped PyYAML from the very same directory.
An :class:`Installation` is the single answer; the analyzer (:mod:`poncho_wq.analysis.pins`) and the current
engine (:mod:`poncho_wq.engines.current`, :mod:`poncho_wq.analysis.closure`) only consume it.

Where the site directories come from: the interpreter itself. Its ``site`` module already applied every rule
that decides what is importable -- a venv with or without ``include-system-site-packages``, the user site
(``~/.local`` or ``PYTHONUSERBASE``, only when enabled), Debian's ``dist-packages``, pyenv, conda prefixes,
``PYTHONPATH``, ``.pth`` path lines -- so its ``sys.path`` is asked (:data:`_PROBE`), never re-derived from
directory names. The running interpreter answers in-process (its live ``sys.path``); another one (``--python``,
``analyze(prefix=...)``) is run once with the probe, and its answer is memoized in-process and on disk (under
the analysis cache) with a key that holds everything it depends on: the interpreter's path, real path and
binary, ``pyvenv.cfg``, the environment variables ``site`` reads, the kernel release (a marker value), and the
mtimes of every directory on its ``sys.path``, every site-packages candidate (a user site appearing adds a path)
and every ``.pth`` file. Entries inside the standard library (``lib/python3.X``, ``lib-dynload``) are dropped
unless they are a site-packages directory themselves (pyenv and conda keep site-packages *inside*
``lib/python3.X``). A prefix without any interpreter (a conda prefix without a python package) has no
``sys.path`` to ask: its ``lib/python3*/site-packages`` and their ``.pth`` path lines are what it has.

What is indexed (memoized per layout on the site directories' and ``conda-meta``'s mtimes, which change whenever
something is installed or removed): every distribution in the site directories (earlier directories shadow later
ones, as at import time) with its import names (``top_level.txt``, else the top-level entries of its
``RECORD``), and its metadata parsed lazily; setuptools' editable finders (``__editable___*_finder.py``: their
``MAPPING`` says where an editable package's code is, which no directory on ``sys.path`` does); and inside a
conda prefix every ``conda-meta`` record, which modules it installed into site-packages and which
``.dist-info`` directories it owns. :func:`clear_cache` forgets all of it (long-running managers, tests).
"""

import ast
import csv
import dataclasses
import glob
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import platform
import re
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urlparse

from packaging.markers import default_environment
from packaging.utils import canonicalize_name

from ..config import settings
from ..errors import InputMissing, PonchoError
from ..memo import register
from ..fsutil import atomic_output, is_within, mtime_ns
from .condameta import clear_cache as clear_conda_meta, conda_meta_owners, conda_records

log = logging.getLogger(__name__)

__all__ = ["Distribution", "Installation", "Layout", "clear_cache", "installation", "pth_directories"]

#: Runs in the interpreter asked about (in-process for the running one) and prints its layout as JSON. The
#: standard-library paths come from the *base* installation: inside a venv sysconfig answers with the venv's.
_PROBE = r"""
import json, os, platform, site, sys, sysconfig
def probe():
    def fmt(info):
        v = "%d.%d.%d" % (info.major, info.minor, info.micro)
        if info.releaselevel != "final":
            v += info.releaselevel[0] + str(info.serial)
        return v
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
            "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
    real = os.path.realpath
    try:
        candidates = list(site.getsitepackages()) + [site.getusersitepackages()]
    except AttributeError:  # old virtualenv's site module
        candidates = []
    candidates += [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    return {
        "executable": sys.executable,
        "prefix": real(sys.prefix),
        "path": [real(p) for p in sys.path if p],
        "cwd": real(os.getcwd()),
        "stdlib": [real(sysconfig.get_path(k, vars=base)) for k in ("stdlib", "platstdlib")],
        "site_packages": [real(p) for p in candidates if p],
        "scripts": real(sysconfig.get_path("scripts")),
        "purelib_rel": os.path.relpath(sysconfig.get_path("purelib"), sys.prefix),
        "markers": {
            "implementation_name": sys.implementation.name,
            "implementation_version": fmt(sys.implementation.version),
            "os_name": os.name,
            "platform_machine": platform.machine(),
            "platform_release": platform.release(),
            "platform_system": platform.system(),
            "platform_version": platform.version(),
            "python_full_version": platform.python_version(),
            "platform_python_implementation": platform.python_implementation(),
            "python_version": ".".join(platform.python_version_tuple()[:2]),
            "sys_platform": sys.platform,
        },
    }
if __name__ == "__main__":
    print(json.dumps(probe()))
"""

#: What ``site`` reads from the environment (plus HOME for ``~/.local``): part of a probe's memo key.
_SITE_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH",
                   "PYTHONPLATLIBDIR", "HOME")
#: Bumped when the probe or the memo format changes, so older on-disk answers are not read.
_PROBE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where an interpreter (or a bare prefix) keeps things: ``site_dirs`` in import order (every directory that
    can hold third-party code, ``PYTHONPATH`` and ``.pth`` entries included), ``site_packages`` (the
    installation directories proper: site-packages, dist-packages, the user site), ``stdlib``, ``scripts``,
    ``purelib_rel`` (site-packages relative to ``prefix``) and the PEP 508 ``markers``. ``python`` is the
    interpreter as asked ("" for a prefix without one); ``running`` is True for this process's interpreter."""

    python: str
    prefix: str
    site_dirs: Tuple[str, ...]
    site_packages: Tuple[str, ...]
    stdlib: Tuple[str, ...]
    scripts: str
    purelib_rel: str
    markers: Mapping[str, str] = dataclasses.field(hash=False, compare=False)
    running: bool = False


# ------------------------------------------------------------------------------------------------------ probing


_HERE: Dict[str, dict] = {}


def _run_probe_here() -> dict:
    """The probe's answer for this process. Only ``sys.path`` and the working directory can change while it
    runs (sysconfig's answers are fixed at start-up, and asking them is most of the probe's time)."""
    if not _HERE:
        namespace: Dict[str, object] = {}
        exec(compile(_PROBE, "<poncho_wq probe>", "exec"), namespace)
        _HERE["info"] = namespace["probe"]()  # type: ignore[operator]
    return dict(_HERE["info"], path=[os.path.realpath(p) for p in sys.path if p],
                cwd=os.path.realpath(os.getcwd()))


def _run_probe(python: str) -> dict:
    try:
        r = subprocess.run([python, "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PonchoError("cannot run {}: {}".format(python, e))
    if r.returncode != 0:
        raise PonchoError("{} failed to start:\n{}".format(python, r.stderr.strip()[-2000:]))
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise PonchoError("{} did not answer the environment probe (is it a CPython 3 interpreter?):\n{}".format(
            python, (r.stdout + r.stderr).strip()[-2000:]))


def _layout_from_probe(python: str, info: dict, running: bool) -> Layout:
    site_packages = tuple(dict.fromkeys(info["site_packages"]))
    stdlib = tuple(info["stdlib"])
    dirs = []
    for p in info["path"]:
        if p == info["cwd"] or p in dirs or not os.path.isdir(p):
            continue
        if _within_any(p, stdlib) and not _within_any(p, site_packages):
            continue  # the standard library and lib-dynload: never third-party code
        dirs.append(p)
    # Only the candidates import actually uses: a venv without system site-packages has a user site on paper.
    return Layout(python, info["prefix"], tuple(dirs), tuple(d for d in site_packages if d in dirs), stdlib,
                  info["scripts"], info["purelib_rel"], info["markers"], running)


def _probe_stamps(python: str, info: dict) -> Dict[str, Optional[int]]:
    """What a probe's answer depends on in the file system, as {path: mtime_ns or None}."""
    paths = [os.path.realpath(python), os.path.join(os.path.dirname(python), "pyvenv.cfg"),
             os.path.join(os.path.dirname(os.path.dirname(python)), "pyvenv.cfg")]
    paths += info["path"] + info["site_packages"]
    for d in info["site_packages"]:  # site reads .pth files there only; adding or removing one changes d's mtime
        paths += glob.glob(os.path.join(glob.escape(d), "*.pth"))
    return {p: mtime_ns(p) for p in dict.fromkeys(paths)}


def _probe_key(python: str) -> str:
    # The realpath too: a venv's bin/python retargeted to another base keeps its own path and mtime.
    doc = [_PROBE_VERSION, python, os.path.realpath(python), os.uname().release,
           [(k, os.environ.get(k)) for k in _SITE_VARIABLES]]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:32]


def _stamps_hold(stamps: Mapping[str, Optional[int]]) -> bool:
    return all(mtime_ns(p) == m for p, m in stamps.items())


_PROBES: Dict[str, Tuple[Dict[str, Optional[int]], dict]] = {}


def _probe_dir() -> str:
    return os.path.join(settings().cache_dir, "analyze", "installations")


def _probe_other(python: str) -> dict:
    """The probe's answer for another interpreter: from the in-process memo, the disk memo, or by running it.
    Starting an interpreter (~30 ms) would otherwise be most of a warm ``analyze --prefix`` run."""
    key = _probe_key(python)
    memo = _PROBES.get(key)
    if memo is not None and _stamps_hold(memo[0]):
        return memo[1]
    path = os.path.join(_probe_dir(), key + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        if stored.get("python") == python and _stamps_hold(stored["stamps"]):
            _PROBES[key] = (stored["stamps"], stored["info"])
            return stored["info"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    stamps_before = _probe_stamps(python, {"path": [], "site_packages": []})
    info = _run_probe(python)
    stamps = dict(stamps_before, **_probe_stamps(python, info))
    _PROBES[key] = (stamps, info)
    try:
        with atomic_output(path) as f:
            json.dump({"python": python, "stamps": stamps, "info": info}, f)
    except OSError as e:  # a read-only cache only costs the probe next time
        log.debug("not storing the probe of %s: %s", python, e)
    return info


def _prefix_interpreter(prefix: str) -> Optional[str]:
    for rel in ("bin/python3", "bin/python", "python.exe"):
        p = os.path.join(prefix, rel)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _static_layout(prefix: str) -> Layout:
    """A prefix with no interpreter: its site-packages directories and the directories their .pth files add."""
    dirs = sorted(glob.glob(os.path.join(glob.escape(prefix), "lib", "python3*", "site-packages")))
    dirs += [d for d in [os.path.join(prefix, "Lib", "site-packages")] if os.path.isdir(d)]
    extra = []
    for d in dirs:
        for pth in sorted(glob.glob(os.path.join(glob.escape(d), "*.pth"))):
            try:
                extra += [os.path.realpath(p) for p in pth_directories(pth, d)]
            except OSError:
                pass
    purelib_rel = os.path.relpath(dirs[0], prefix) if dirs else os.path.join("lib", "site-packages")
    return Layout("", prefix, tuple(dict.fromkeys(dirs + extra)), tuple(dirs), (), os.path.join(prefix, "bin"),
                  purelib_rel, {k: str(v) for k, v in default_environment().items()}, False)


def _layout(python: Optional[str], prefix: Optional[str]) -> Layout:
    if prefix is not None:
        prefix = os.path.abspath(prefix)
        if not os.path.isdir(prefix):
            raise InputMissing("environment prefix {} does not exist".format(prefix))
        python = _prefix_interpreter(prefix)
        if python is None:
            return _static_layout(os.path.realpath(prefix))
        if os.path.abspath(python) != os.path.abspath(sys.executable):
            try:
                return _layout_from_probe(python, _probe_other(python), False)
            except PonchoError as e:
                # A prefix copied from another machine or platform: read what is on disk, as without interpreter.
                log.warning("poncho: cannot ask %s for its site directories (%s); reading %s as it is on disk",
                            python, str(e).splitlines()[0].rstrip(":"), prefix)
                return _static_layout(os.path.realpath(prefix))
    # Compare unresolved paths: a venv's bin/python is a symlink to its base interpreter, whose realpath is the
    # same, but the environment (pyvenv.cfg next to the symlink) is another one.
    if python is None or os.path.abspath(python) == os.path.abspath(sys.executable):
        return _layout_from_probe(sys.executable, _run_probe_here(), True)
    python = os.path.abspath(python)
    return _layout_from_probe(python, _probe_other(python), False)


# ------------------------------------------------------------------------------------------------ distributions


class Distribution:
    """One installed distribution. Its METADATA is parsed only when asked (name, version, requires): parsing
    every distribution's headers (the email parser) was most of a warm analysis in a big environment."""

    __slots__ = ("dist", "key", "_meta", "_direct_url", "_files", "_requires")

    def __init__(self, dist: importlib.metadata.Distribution, key: str):
        self.dist = dist
        self.key = key
        self._meta: Optional[Tuple[str, str]] = None
        self._direct_url: Union[bool, None, dict] = False  # False: not read yet
        self._files: Optional[FrozenSet[str]] = None
        self._requires: Optional[List[str]] = None

    def __repr__(self) -> str:
        return "<Distribution {} at {}>".format(self.key, self.meta_path)

    def _metadata(self) -> Tuple[str, str]:
        if self._meta is None:
            self._meta = (self.dist.metadata["Name"] or self.key, self.dist.version)
        return self._meta

    @property
    def name(self) -> str:
        return self._metadata()[0]

    @property
    def version(self) -> str:
        return self._metadata()[1]

    @property
    def requires(self) -> List[str]:
        """Its ``Requires-Dist`` lines (markers and extras included)."""
        if self._requires is None:
            self._requires = list(self.dist.requires or ())
        return self._requires

    @property
    def location(self) -> str:
        """The (real) site directory it is installed in: its RECORD paths are relative to this."""
        return os.path.realpath(str(self.dist.locate_file("")))

    @property
    def meta_path(self) -> Optional[str]:
        """The real path of its ``.dist-info``/``.egg-info``."""
        path = getattr(self.dist, "_path", None)
        return os.path.realpath(str(path)) if path is not None else None

    def read_text(self, name: str) -> Optional[str]:
        try:
            return self.dist.read_text(name)
        except OSError:
            return None

    def record(self) -> Optional[List[str]]:
        """Its RECORD's paths ("/"-separated, relative to :attr:`location`), or None without a RECORD."""
        text = self.read_text("RECORD")
        if text is not None:
            # Parsed here rather than through Distribution.files, which makes a pathlib object per line: that
            # was most of indexing a big environment, and a warm analysis indexes on every run.
            return [row[0].replace("\\", "/") for row in csv.reader(io.StringIO(text)) if row and row[0]]
        files = self.dist.files  # an egg-info's installed-files.txt / SOURCES.txt
        return None if files is None else [str(f).replace("\\", "/") for f in files]

    def files(self) -> FrozenSet[str]:
        if self._files is None:
            self._files = frozenset(self.record() or ())
        return self._files

    @property
    def direct_url(self) -> Optional[dict]:
        if self._direct_url is False:
            self._direct_url = None
            text = self.read_text("direct_url.json")
            if text:
                try:
                    self._direct_url = json.loads(text)
                except ValueError:
                    pass
        return self._direct_url if isinstance(self._direct_url, dict) else None

    def local_source(self) -> Optional[str]:
        """The source directory of an editable / local-directory / local-file install, else None."""
        url = (self.direct_url or {}).get("url", "")
        if url.startswith("file://") and "vcs_info" not in (self.direct_url or {}):
            return unquote(urlparse(url).path)
        return None

    def is_editable(self) -> bool:
        if (self.direct_url or {}).get("dir_info", {}).get("editable"):
            return True
        return any(os.path.basename(f).startswith("__editable__") for f in self.files())

    def import_names(self) -> FrozenSet[str]:
        """The top-level names it provides: ``top_level.txt``, else its RECORD's top-level entries."""
        top = self.read_text("top_level.txt")
        if top:
            names = {n.strip().split("/")[0] for n in top.split() if n.strip()}
        else:
            names = set()
            for f in self.files():
                parts = f.split("/")
                if parts[0] == ".." or parts[0].startswith("__editable__"):
                    continue
                n = _module_name(parts[0])
                if n and not (len(parts) == 1 and not parts[0].endswith(tuple(EXTENSION_SUFFIXES) + (".py",))):
                    names.add(n)
        return frozenset(n for n in names if n.isidentifier())

    def editable_sources(self) -> Dict[str, str]:
        """{import name: real path (package dir or module file)} of an editable install, from its finder's
        ``MAPPING``, its ``.pth`` directories / source tree and ``top_level.txt``."""
        location = self.location
        mapping: Dict[str, str] = {}
        dirs: List[str] = []
        for rel in self.record() or ():  # RECORD order, not a set's: what is found first must not vary
            path = os.path.normpath(os.path.join(location, rel))
            base = os.path.basename(rel)
            if base.startswith("__editable__") and base.endswith("_finder.py") and os.path.isfile(path):
                mapping.update(_finder_mapping(path))
            elif base.endswith(".pth") and os.path.isfile(path):
                dirs += [os.path.realpath(d) for d in pth_directories(path, location)]
        meta = self.meta_path
        if meta is not None and not is_within(meta, location):
            dirs.append(os.path.dirname(meta))  # egg-info inside the source tree
        src = self.local_source()
        if src:
            dirs += [d for d in (os.path.join(src, "src"), src) if os.path.isdir(d)]
        names = set(mapping)
        top = self.read_text("top_level.txt")
        if top:
            names |= {n.strip() for n in top.split() if n.strip()}
        if not names:
            for d in dirs:
                for entry in sorted(os.listdir(d)):
                    p = os.path.join(d, entry)
                    if os.path.isfile(os.path.join(p, "__init__.py")) and entry.isidentifier():
                        names.add(entry)
                    elif entry.endswith(".py") and entry[:-3].isidentifier() and entry not in ("setup.py",
                                                                                              "conftest.py"):
                        names.add(entry[:-3])
        found: Dict[str, str] = {}
        for name in sorted(names):
            if name in mapping and os.path.exists(mapping[name]):
                found[name] = os.path.realpath(mapping[name])
                continue
            for d in dict.fromkeys(dirs):
                for cand in (os.path.join(d, name), os.path.join(d, name + ".py")):
                    if os.path.isdir(cand) or os.path.isfile(cand):
                        found[name] = os.path.realpath(cand)
                        break
                if name in found:
                    break
        return found


@dataclasses.dataclass
class _Index:
    by_name: Dict[str, Distribution]
    by_import: Dict[str, List[Distribution]]
    editable: Dict[str, str]  # import name -> path, from setuptools' editable finders
    conda: Dict[str, dict]  # conda package name -> record (plus "_path", its file)
    conda_by_import: Dict[str, dict]
    conda_by_meta: Dict[str, dict]  # real path of a .dist-info/.egg-info -> its conda record (conda_meta_owners)


def _index(layout: Layout, conda_prefix: str) -> _Index:
    by_name: Dict[str, Distribution] = {}
    by_import: Dict[str, List[Distribution]] = {}
    for dist in importlib.metadata.distributions(path=list(layout.site_dirs)):
        try:
            key = canonicalize_name(_dist_name(dist))
        except Exception:  # a broken .dist-info must not stop the analysis or the build
            continue
        if not key or key in by_name:
            continue  # shadowed by an earlier path entry, as at import time
        d = by_name[key] = Distribution(dist, key)
        for n in d.import_names():
            by_import.setdefault(n, []).append(d)
    editable: Dict[str, str] = {}
    for site in layout.site_packages:
        for finder in sorted(glob.glob(os.path.join(glob.escape(site), "__editable___*_finder.py"))):
            for name, path in _finder_mapping(finder).items():
                editable.setdefault(name, path)
    conda: Dict[str, dict] = {}
    conda_by_import: Dict[str, dict] = {}
    conda_by_meta: Dict[str, dict] = {}
    if conda_prefix:
        conda = conda_records(conda_prefix)
        conda_by_meta = conda_meta_owners(conda_prefix)
        sp = tuple(os.path.relpath(d, conda_prefix).replace(os.sep, "/") + "/"
                   for d in layout.site_dirs if is_within(d, conda_prefix))
        for name, rec in conda.items():
            for f in rec.get("files", ()):
                for s in sp:
                    if f.startswith(s):
                        module = _module_name(f[len(s):].split("/", 1)[0])
                        if module:
                            conda_by_import.setdefault(module, rec)
                        break
    return _Index(by_name, by_import, editable, conda, conda_by_import, conda_by_meta)


# ------------------------------------------------------------------------------------------------ installation


class Installation:
    """An installed Python environment (see the module docstring); get one with :func:`installation`.

    The layout's fields are attributes (``python``, ``prefix``, ``site_dirs``, ``site_packages``, ``scripts``,
    ``purelib_rel``, ``markers``); ``conda_prefix`` is the prefix when it is a conda environment (has
    ``conda-meta/``), else "". ``python_version`` is the full version of its Python."""

    def __init__(self, layout: Layout, index: _Index, conda_prefix: str):
        self.layout = layout
        self._index = index
        self.conda_prefix = conda_prefix
        self.python = layout.python
        self.prefix = layout.prefix
        self.site_dirs = layout.site_dirs
        self.site_packages = layout.site_packages
        self.scripts = layout.scripts
        self.purelib_rel = layout.purelib_rel
        self.markers = dict(layout.markers)

    def __repr__(self) -> str:
        return "<Installation {} ({} distributions)>".format(self.python or self.prefix, len(self._index.by_name))

    # -- the analyzer's questions ------------------------------------------------------------------------------
    @property
    def python_version(self) -> str:
        rec = self._index.conda.get("python")
        if rec is not None:
            return rec["version"]
        if self.python:
            return self.markers["python_full_version"]
        return _pyvenv_version(self.prefix) or platform.python_version()

    def providers(self, top: str) -> List[Distribution]:
        """The distributions that provide the top-level import name *top* (import order)."""
        return list(self._index.by_import.get(top, ()))

    def conda_provider(self, top: str) -> Optional[dict]:
        """The conda record that installed the top-level module *top* into site-packages."""
        return self._index.conda_by_import.get(top)

    def find_module(self, top: str) -> Optional[Tuple[str, str, str]]:
        """(kind, path, root) of the top-level module *top* that import would find, whether or not metadata
        claims it: "pkg" (its ``__init__.py``), "py" or "ext"; None when it is not there."""
        for d in self.site_dirs:
            in_dir = _find_module(d, top)
            if in_dir:
                return in_dir + (d,)
        path = self._index.editable.get(top)
        if path is not None:
            at = _module_at(path)
            if at:
                return at
        if self.layout.running:
            # Other meta-path finders of this process. find_spec of a top-level name runs the import system's
            # finders only, never the module's code.
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            if spec is not None and spec.origin and os.path.isfile(spec.origin):
                origin = os.path.realpath(spec.origin)
                if not self.is_stdlib_path(origin):
                    return _module_at(os.path.dirname(origin) if os.path.basename(origin) == "__init__.py"
                                      else origin)
        return None

    def is_stdlib_path(self, path: str) -> bool:
        """Is *path* in the standard library (never third-party code) rather than in a site directory?"""
        return _within_any(path, self.layout.stdlib) and not _within_any(path, self.site_packages)

    def is_installed_file(self, path: str) -> bool:
        """Is *path* a file under an installation directory (site-packages, dist-packages, the user site)?"""
        real = os.path.realpath(path)
        parts = real.split(os.sep)
        if "site-packages" in parts[:-1] or "dist-packages" in parts[:-1]:
            return True
        return any(real != d and is_within(real, d) for d in self.site_packages)

    # -- the current engine's questions ------------------------------------------------------------------------
    def distribution(self, name: str) -> Optional[Distribution]:
        """The installed distribution *name* (any spelling), the one import would see."""
        return self._index.by_name.get(canonicalize_name(name))

    def distributions(self) -> Dict[str, Distribution]:
        """canonical name -> Distribution, in import order."""
        return dict(self._index.by_name)

    @property
    def conda_records(self) -> Dict[str, dict]:
        """conda package name -> its ``conda-meta`` record (plus ``_path``); empty outside conda."""
        return self._index.conda

    def conda_owner(self, dist: Distribution) -> Optional[dict]:
        """The conda record that installed *dist* (its ``.dist-info`` is in the record's files), else None."""
        meta = dist.meta_path
        return self._index.conda_by_meta.get(meta) if meta else None


_INSTALLATIONS: Dict[tuple, Tuple[tuple, Installation]] = {}


def installation(python: Optional[str] = None, *, prefix: Optional[str] = None) -> Installation:
    """The :class:`Installation` of *python* (default: the running interpreter) or of the environment at
    *prefix* (a venv or conda prefix: its interpreter is asked; a prefix without one is read as it is).

    Memoized per process on the layout and the mtimes of its site directories and ``conda-meta``."""
    layout = _layout(python, prefix)
    conda_prefix = layout.prefix if os.path.isdir(os.path.join(layout.prefix, "conda-meta")) else ""
    watched = layout.site_dirs + layout.site_packages + ((os.path.join(conda_prefix, "conda-meta"),)
                                                         if conda_prefix else ())
    key = (layout, tuple(sorted(layout.markers.items())))
    stamps = tuple(mtime_ns(d) for d in watched)
    memo = _INSTALLATIONS.get(key)
    if memo is None or memo[0] != stamps:  # one entry per layout: a long-running manager does not accumulate
        memo = _INSTALLATIONS[key] = (stamps, Installation(layout, _index(layout, conda_prefix), conda_prefix))
    return memo[1]


@register
def clear_cache() -> None:
    """Forget every probed layout and index of this process (the on-disk probe answers re-validate themselves)."""
    _INSTALLATIONS.clear()
    _PROBES.clear()
    clear_conda_meta()


# ------------------------------------------------------------------------------------------------------ helpers


def pth_directories(pth: str, site_dir: str) -> List[str]:
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


def _finder_mapping(path: str) -> Dict[str, str]:
    """The ``MAPPING`` (import name -> source path) of a setuptools ``__editable___*_finder.py``, read as data."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return {}
    for node in tree.body:
        # ``MAPPING = {...}`` in older setuptools, ``MAPPING: dict[str, str] = {...}`` in newer ones.
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) and node.value is not None else []
        value_node = getattr(node, "value", None)
        if value_node is not None and any(getattr(t, "id", "") == "MAPPING" for t in targets):
            try:
                value = ast.literal_eval(value_node)
            except ValueError:
                return {}
            if isinstance(value, dict):
                return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
    return {}


def _module_name(entry: str) -> Optional[str]:
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


def _find_module(directory: str, name: str) -> Optional[Tuple[str, str]]:
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


def _module_at(path: str) -> Optional[Tuple[str, str, str]]:
    """(kind, file, root) for a package directory or module file at *path*."""
    if os.path.isfile(os.path.join(path, "__init__.py")):
        return "pkg", os.path.join(path, "__init__.py"), os.path.dirname(path)
    if path.endswith(tuple(EXTENSION_SUFFIXES)) and os.path.isfile(path):
        return "ext", path, os.path.dirname(path)
    if path.endswith(".py") and os.path.isfile(path):
        return "py", path, os.path.dirname(path)
    return None


def _dist_name(dist: importlib.metadata.Distribution) -> str:
    """The distribution's name from its ``Name-Version.dist-info`` directory when it has one (no METADATA
    parse), else from METADATA."""
    path = getattr(dist, "_path", None)
    if path is not None:
        stem = os.path.basename(str(path))
        if stem.endswith((".dist-info", ".egg-info")) and "-" in stem:
            return stem.rsplit(".", 1)[0].split("-")[0]
    return dist.metadata["Name"]


def _pyvenv_version(prefix: str) -> Optional[str]:
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


def _within_any(path: str, roots: Iterable[str]) -> bool:
    return any(is_within(path, r) for r in roots if r)
