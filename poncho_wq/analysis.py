"""What does a script need? Static import analysis: which imports count, local-module following, analyze().

The user's code is never imported or run: a script may have side effects, need a GPU, or only work on a worker.
Everything comes from the AST, read statement by statement:

* ``import a.b``, ``from a import b``, aliases, relative imports, and imports nested in functions, classes,
  loops, ``with`` and ``if`` blocks are all found;
* an import inside ``try:`` whose handlers catch ``ImportError`` (or ``ModuleNotFoundError``, ``Exception``, a
  bare ``except``), inside such a handler (the fallback), or under ``with contextlib.suppress(ImportError)`` is
  *optional*: if it is not installed it is left out, not reported as an error;
* ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name count as imports;
* imports under ``if TYPE_CHECKING:`` (``typing.TYPE_CHECKING``) are for type checkers only: Python never runs
  them, so they are *not* runtime requirements and are left out (the ``else:`` branch is kept);
* ``from __future__ import ...`` is a compiler directive, never a dependency.

Local code (upstream poncho refuses it) is followed instead: a module or package next to a script, or in the
project the script belongs to (the directory above its topmost package), is resolved to files, scanned in turn,
and reported in :attr:`Analysis.local_files` with the path the task must see it under. Its third-party imports
count like the script's own. Distribution mapping and pinning live in :mod:`poncho_wq.distributions`, over the
model of the installed environment in :mod:`poncho_wq.installation`.

A project the scripts belong to is a hint (:func:`find_project`, :func:`declared_dependencies`, read statically):
a pin its declared requirements exclude becomes the declared requirement, with a warning.

Scanning one file and the per-file scan cache (and why they are fast) live in :mod:`poncho_wq.scan`; the local
module walk and the whole-run cache are here.
"""

import dataclasses
import hashlib
import logging
import marshal
import os
import re
import sys
import time
from importlib.machinery import EXTENSION_SUFFIXES
from typing import FrozenSet, Mapping, Tuple

from .errors import PonchoError
from .fsutil import TOOL_STATE_DIRS, is_within
from .spec import Spec
from .scan import (DYNAMIC, OPTIONAL, SCANNER_VERSION, TOPLEVEL, TYPE_CHECKING, FileScan, ImportRef, ScanCache,
                   _RACY_SECONDS, cache_dir, scan_file, scan_files, scan_source)

__all__ = [
    "Analysis", "analyze", "canonicalize", "stdlib_names",
    # moved to poncho_wq.scan, re-exported for existing importers
    "DYNAMIC", "OPTIONAL", "SCANNER_VERSION", "TOPLEVEL", "TYPE_CHECKING", "FileScan", "ImportRef", "ScanCache",
    "cache_dir", "scan_file", "scan_files", "scan_source",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The result of :func:`analyze` (see the module docstring of :mod:`poncho_wq.analysis`)."""

    spec: Spec  # pinned
    imports: FrozenSet[str]  # top-level third-party import names found
    distributions: Mapping[str, str]  # distribution name -> version the spec pins
    local_files: Tuple[Tuple[str, str], ...]  # ((absolute source path, arcname the task must see), ...)
    local_distributions: Mapping[str, str]  # editable / local-only distributions -> their source dir
    unresolved: Tuple[str, ...]  # third-party imports that are not installed (listed unpinned)
    warnings: Tuple[str, ...]  # human-readable warnings



# ---------------------------------------------------------------------------------------- local module lookup

_SOURCE_SUFFIXES = (".py",)


class _Finder:
    """Resolves dotted module names to local files under search roots, caching directory listings."""

    def __init__(self):
        self._listing = {}
        self._child = {}
        self.consulted = {}  # directory -> mtime_ns (None: missing)
        self.roots = {}  # script directory -> its local-import roots

    def listing(self, directory):
        """Names in *directory* (memoized). Every directory consulted is remembered with its mtime: a module
        appearing or disappearing changes its directory's mtime, which is what invalidates a cached run."""
        names = self._listing.get(directory)
        if names is None:
            try:
                st = os.stat(directory)
                names = frozenset(os.listdir(directory))
                self.consulted[directory] = st.st_mtime_ns
            except OSError:
                names = frozenset()
                self.consulted[directory] = None
            self._listing[directory] = names
        return names

    def is_package(self, directory):
        return "__init__.py" in self.listing(directory) and os.path.dirname(directory) != directory

    def child(self, directory, name, namespace_ok):
        """(kind, path) of module *name* directly in *directory*: a package dir ("pkg", its __init__.py), a
        source module ("py"), an extension module ("ext"), a namespace dir ("ns"), or None."""
        key = (directory, name, namespace_ok)
        try:
            return self._child[key]
        except KeyError:
            found = self._child[key] = self._lookup(directory, name, namespace_ok)
            return found

    def _lookup(self, directory, name, namespace_ok):
        names = self.listing(directory)
        if name in names:
            sub = os.path.join(directory, name)
            if "__init__.py" in self.listing(sub):
                return "pkg", os.path.join(sub, "__init__.py")
        if name + ".py" in names:
            return "py", os.path.join(directory, name + ".py")
        for suffix in EXTENSION_SUFFIXES:
            if name + suffix in names:
                return "ext", os.path.join(directory, name + suffix)
        if namespace_ok and name in names and os.path.isdir(os.path.join(directory, name)):
            return "ns", os.path.join(directory, name)
        return None


def _project_roots(path, finder):
    """Where a script's absolute imports are looked up locally: its own directory (``sys.path[0]`` when it is
    run as a file) and, when it lives inside a package, the directory above the topmost package (where it must
    be run from as ``python -m pkg.script``)."""
    d = os.path.dirname(path)
    roots = finder.roots.get(d)
    if roots is None:
        top = d
        while finder.is_package(top):
            top = os.path.dirname(top)
        roots = finder.roots[d] = (d, top) if top != d else (d,)
    return roots


# -------------------------------------------------------------------------------------------------- analysis


@dataclasses.dataclass
class _Site:
    """Where an import was seen (for messages), and whether a missing module there is acceptable."""

    file: str
    lineno: int
    optional: bool


class _Walk:
    """Follows local imports transitively and collects third-party import names."""

    def __init__(self, stdlib, exclude, cache, finder):
        self.stdlib = stdlib
        self.exclude = exclude
        self.cache = cache
        self.finder = finder
        self.local = {}  # absolute path -> arcname
        self.scanned = {}  # path -> FileScan
        self.roots_of = {}  # local source path -> roots it resolves absolute imports in
        self.pending = []
        self.third_party = {}  # top-level name -> {"dotted", "sites" (first 3), "required", "ns"}
        self.warnings = []
        self._resolved = {}
        self._absolute = {}
        self._relative = {}

    def ship(self, path, root, roots, follow=True):
        if path in self.local:
            return
        self.local[path] = os.path.relpath(path, root)
        if follow and path.endswith(".py"):
            self.roots_of[path] = roots
            self.pending.append(path)

    def resolve_in(self, root, parts, names, roots, from_dir=None):
        """Resolve *parts* (then *names* as submodules) under *root* (or under *from_dir* for relative imports,
        arcnames still relative to *root*) and ship what is found. Memoized: a big tree repeats the same few
        thousand imports tens of thousands of times."""
        key = (root, parts, names, roots, from_dir)
        ships = self._resolved.get(key)
        if ships is None:
            ships = self._resolved[key] = self._resolve(root, parts, names, from_dir)
        for path, follow in ships:
            self.ship(path, root, roots, follow)

    def _resolve(self, root, parts, names, from_dir):
        ships = []
        directory = from_dir or root
        for part in parts:
            found = self.finder.child(directory, part, namespace_ok=True)
            if found is None:
                return ships
            kind, path = found
            if kind == "ns":
                directory = path
                continue
            ships.append((path, kind != "ext"))
            if kind != "pkg":
                return ships
            directory = os.path.dirname(path)
        for name in names:
            if name == "*":
                continue
            found = self.finder.child(directory, name, namespace_ok=False)
            if found is not None and found[0] != "ns":
                ships.append((found[1], found[0] != "ext"))
        return ships

    def local_root_for(self, directory):
        d = directory
        while self.finder.is_package(d):
            d = os.path.dirname(d)
        return d

    def handle(self, ref, path, roots, arc_root):
        if ref.flags & TYPE_CHECKING:
            return
        if ref.level:
            rkey = (path, ref.level, arc_root)
            base_root = self._relative.get(rkey)
            if base_root is None:
                base = os.path.dirname(path) if path else os.getcwd()
                for _ in range(ref.level - 1):
                    base = os.path.dirname(base)
                root = arc_root if arc_root and is_within(base, arc_root) else self.local_root_for(base)
                base_root = self._relative[rkey] = (base, root)
            base, root = base_root
            parts = tuple(ref.module.split(".")) if ref.module else ()
            if not parts:
                if "__init__.py" in self.finder.listing(base):
                    self.ship(os.path.join(base, "__init__.py"), root, roots)
            self.resolve_in(root, parts, ref.names, roots, from_dir=base)
            return
        if not ref.module:
            return
        key = (roots, ref.module, ref.names)
        action = self._absolute.get(key)
        if action is None:
            action = self._absolute[key] = self._classify(ref, roots)
        kind, value = action
        if kind == "local":
            self.resolve_in(value, tuple(ref.module.split(".")), ref.names, roots)
        elif kind == "third":
            entry = self.third_party.get(value)
            if entry is None:
                entry = self.third_party[value] = {"dotted": set(), "sites": [], "required": False, "ns": None}
            if entry["ns"] is None:
                for root in roots:
                    found = self.finder.child(root, value, namespace_ok=True)
                    if found is not None and found[0] == "ns":
                        entry["ns"] = (root, tuple(ref.module.split(".")), ref.names, roots)
                        break
            entry["dotted"].add(ref.module)
            for name in ref.names:
                if name != "*":
                    entry["dotted"].add(ref.module + "." + name)
            optional = bool(ref.flags & OPTIONAL)
            if not optional:
                entry["required"] = True
            if len(entry["sites"]) < 3:
                entry["sites"].append(_Site(path, ref.lineno, optional))

    def _classify(self, ref, roots):
        top = ref.module.split(".", 1)[0]
        if top in self.exclude or top == "__main__" or top in sys.builtin_module_names:
            return "skip", None
        for root in roots:
            if self.finder.child(root, top, namespace_ok=False) is not None:
                return "local", root
        if top in self.stdlib:
            return "skip", None
        return "third", top

    def save(self, key, entry_files):
        """Remember this walk (local files, third-party names) with the stats of every file and directory it
        depended on, so that an unchanged tree is answered with a few thousand stat calls and no resolving."""
        if not self.cache.enabled:
            return
        files = {}
        for p in list(entry_files) + list(self.scanned):
            try:
                st = os.stat(p)
            except OSError:
                return
            files[p] = (st.st_size, st.st_mtime_ns)
        newest = max([m for _, m in files.values()] + [m for m in self.finder.consulted.values() if m] + [0])
        if time.time() - newest / 1e9 < _RACY_SECONDS:
            return  # see ScanCache: a change within the timestamp granularity could go unnoticed
        third = {k: (tuple(sorted(v["dotted"])), tuple(tuple(dataclasses.astuple(x)) for x in v["sites"]),
                     v["required"], v["ns"]) for k, v in self.third_party.items()}
        data = (files, dict(self.finder.consulted), self.local, self.roots_of, third, tuple(self.warnings))
        self.cache.store_run(key, data)

    def restore(self, key):
        data = self.cache.load_run(key)
        if data is None:
            return False
        try:
            files, dirs, local, roots_of, third, warnings = data
            for p, (size, mtime) in files.items():
                st = os.stat(p)
                if st.st_size != size or st.st_mtime_ns != mtime:
                    return False
            for d, mtime in dirs.items():
                try:
                    now = os.stat(d).st_mtime_ns
                except OSError:
                    now = None
                if now != mtime:
                    return False
        except (OSError, ValueError, TypeError):
            return False
        self.local.update(local)
        self.roots_of.update(roots_of)
        self.scanned.update(dict.fromkeys(files))  # scanned already: never queue them again
        for k, (dotted, sites, required, ns) in third.items():
            self.third_party[k] = {"dotted": set(dotted), "sites": [_Site(*x) for x in sites],
                                   "required": required, "ns": ns}
        self.warnings.extend(warnings)
        return True

    def follow(self):
        """Scan every local file shipped so far (in parallel when many), and handle its imports; repeat until
        nothing new is reached."""
        while self.pending:
            batch, self.pending = list(dict.fromkeys(self.pending)), []
            todo = [p for p in batch if p not in self.scanned]
            self.scanned.update(scan_files(todo, self.cache))
            for p in todo:
                arc_root = _arc_root(p, self.local[p])
                for ref in self.scanned[p].imports:
                    self.handle(ref, p, self.roots_of[p], arc_root)


def stdlib_names(python_version=None):
    """Top-level standard-library module names for *python_version* ("X.Y"; default: the running one)."""
    running = "{}.{}".format(*sys.version_info[:2])
    if (python_version in (None, running)) and hasattr(sys, "stdlib_module_names"):
        names = set(sys.stdlib_module_names)
    else:
        try:
            from stdlib_list import stdlib_list
        except ImportError:  # pragma: no cover - stdlib-list is a dependency
            raise PonchoError("analyzing for Python {} needs stdlib-list: pip install stdlib-list".format(
                python_version))
        try:
            names = {n.split(".")[0] for n in stdlib_list(python_version or running)}
        except ValueError:
            raise PonchoError("no standard-library list for Python {!r}; expected a version such as 3.11".format(
                python_version))
    names |= set(sys.builtin_module_names) | {"__future__", "__main__"}
    return frozenset(names)


def _expand(paths, finder):
    """Scripts as given, each with its local-import roots. A directory stands for every ``*.py`` file under it
    (hidden dirs and caches skipped) and is itself a root for them, like a project root (so is the directory
    above it when it is a package): the files of a tree given as a whole import each other as local code."""
    out = {}
    for p in paths:
        p = str(p)
        if os.path.isdir(p):
            d = os.path.abspath(p)
            extra = (d,) + _project_roots(os.path.join(d, "__init__.py"), finder)[1:]
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames[:] = sorted(x for x in dirnames if not x.startswith(".") and x != "__pycache__")
                for f in sorted(filenames):
                    if f.endswith(".py"):
                        full = os.path.join(dirpath, f)
                        out.setdefault(full, tuple(dict.fromkeys(_project_roots(full, finder) + extra)))
        elif not os.path.exists(p):
            raise PonchoError("{} does not exist: give the path of a Python script".format(p), exit_code=2)
        elif not os.path.isfile(p):
            raise PonchoError("{} is not a regular file: give the path of a Python script".format(p), exit_code=2)
        else:
            full = os.path.abspath(p)
            out.setdefault(full, _project_roots(full, finder))
    return out


def _select(scan, toplevel, function):
    refs = scan.imports
    if toplevel:
        refs = [r for r in refs if r.flags & TOPLEVEL]
    if function:
        want = tuple(function.split("."))
        n = len(want)
        refs = [r for r in refs if any(r.scope[i:i + n] == want for i in range(len(r.scope) - n + 1))]
    return refs


def _installed_file(path, inst):
    """Is *path* a file of an installed distribution (under a site-packages directory of *inst*, an
    :class:`~poncho_wq.installation.Installation`)?

    Parsl passes its own installed ``parsl/executors/workqueue/exec_parsl_function.py`` as the script. Taken as a
    script, the directory above its topmost package -- site-packages itself -- would become a local-import root,
    so every installed package it reaches would be followed as "local code" (hundreds of files, junk names such
    as ``win32pdh`` listed unpinned) and ``parsl`` itself would never be pinned. Such a file is analyzed as
    source text instead: its imports are then resolved like any other third-party import (``parsl==X``)."""
    if path == "-" or not os.path.isfile(path):
        return False
    return inst.is_installed_file(path)


def _installed_as_sources(scripts, sources, inst):
    """Move scripts that are files of installed distributions from *scripts* into *sources* (see
    :func:`_installed_file`)."""
    scripts = [os.fspath(s) for s in scripts or ()]
    for path in [s for s in scripts if _installed_file(s, inst)]:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                sources[path] = f.read()
        except OSError as e:
            raise PonchoError("cannot read {}: {}".format(path, e.strerror or e), exit_code=2)
        scripts.remove(path)
    return scripts


def analyze(scripts, *, toplevel=False, function=None, pkg_mapping=None, extra_pkgs=(), exclude=(),
            python_version=None, sources=None, use_cache=True, prefix=None):
    """Analyze *scripts* (paths; a directory means every ``*.py`` under it) and *sources* ({display name:
    source text}, e.g. ``{"<stdin>": text}``) and return an :class:`Analysis` with a pinned spec.

    ``toplevel``: only the imports outside function bodies of the given scripts; ``function``: only the imports
    inside that function (``name`` or ``Class.method``), as upstream does. Local modules they reach are always
    followed completely, since importing a module runs all of its top level. ``pkg_mapping``: {import name:
    package} overrides; ``extra_pkgs``: packages to add. ``exclude``: import names to leave out entirely (e.g.
    manager-only modules). ``python_version``: the target "X.Y" (stdlib list, recorded version). ``prefix``: an
    environment (conda prefix or venv) to resolve distributions in instead of the running interpreter's: its
    interpreter is asked for its site directories (:func:`poncho_wq.installation.installation`), so a venv's
    system site-packages, the user site and ``PYTHONPATH`` count as they would when the script runs there.
    """
    from . import distributions
    from .installation import installation

    if toplevel and function:
        raise PonchoError("--toplevel and --function cannot be used together")
    if python_version is not None:
        python_version = str(python_version)
        if not _valid_version(python_version):
            raise PonchoError("python version {!r} is not valid; expected X.Y such as 3.11".format(python_version))
    pkg_mapping = dict(pkg_mapping or {})
    finder = _Finder()
    sources = dict(sources or {})
    inst = installation(prefix=prefix)
    scripts = _installed_as_sources(scripts, sources, inst)
    roots_of = _expand(scripts, finder)
    files = list(roots_of)
    if not files and not sources:
        raise PonchoError("no scripts to analyze: give at least one Python script (or - for standard input)")
    env = distributions.Environment(python_version=python_version, inst=inst)
    cache = ScanCache(enabled=use_cache)
    stdlib = stdlib_names(env.python_minor)
    walk = _Walk(stdlib, frozenset(exclude or ()), cache, finder)
    run_key = _run_key(roots_of, sources, toplevel, function, exclude, stdlib, os.getcwd())
    if not walk.restore(run_key):
        scanned = scan_files(files, cache)
        entries = [(f, scanned[f], roots_of[f]) for f in files]
        entries += [(None, scan_source(text, name), (os.getcwd(),)) for name, text in sources.items()]
        if function and not any(function in s.functions or any(q.endswith("." + function) for q in s.functions)
                                for _, s, _ in entries):
            raise PonchoError("function {!r} is not defined in {}".format(function,
                                                                          ", ".join(files + list(sources))))
        for f, scan, roots in entries:
            for ref in _select(scan, toplevel, function):
                walk.handle(ref, f, roots, roots[-1] if f else None)
        walk.follow()
        walk.save(run_key, files)

    located = {}
    local_dists = {}
    warnings = []
    while True:
        new = sorted(t for t in walk.third_party if t not in located)
        if not new:
            break
        for top in new:
            entry = walk.third_party[top]
            if top in pkg_mapping:
                located[top] = distributions.Located("pin", env.pin_for_name(pkg_mapping[top]))
                continue
            loc = env.locate(top, entry["dotted"])
            if loc.kind == "missing" and entry["ns"]:
                root, parts, names, roots = entry["ns"]
                walk.resolve_in(root, parts, names, roots)
                loc = distributions.Located("local", root=root)
            elif loc.kind == "local":
                walk.ship(loc.path, loc.root, (loc.root,), follow=loc.module_kind != "ext")
                if loc.dist:
                    local_dists[loc.dist] = loc.source
                    warnings.append("{} comes from {} installed from local source {}: it is not put in the spec's "
                                    "package lists, its code is shipped with the task".format(top, loc.dist,
                                                                                             loc.source))
                else:
                    warnings.append("{} ({}) does not belong to any installed distribution: it is shipped with the "
                                    "task as local code".format(top, loc.path))
            located[top] = loc
        walk.follow()
    cache.flush()

    pins, unresolved = {}, []
    for top in sorted(located):
        loc = located[top]
        if loc.kind == "pin":
            pins.setdefault((loc.pin.kind, canonicalize(loc.pin.name)), loc.pin)
        elif loc.kind == "missing":
            entry = walk.third_party[top]
            where = ", ".join("{}:{}".format(s.file or "<stdin>", s.lineno) for s in entry["sites"])
            if not entry["required"]:
                log.info("poncho: note: optional import %s (%s) is not installed here: left out", top, where)
                continue
            unresolved.append(top)
            # A package name must start and end with a letter or digit: `_pytest` is listed as `pytest`.
            name = top.strip("_.")
            if not name:
                warnings.append("{} (imported at {}) is not installed here and is not a package name: left out; "
                                "name its package with --pkg-mapping {}=NAME".format(top, where, top))
                continue
            pins.setdefault(("pip", canonicalize(name)), distributions.Pin("pip", name, None, name))
            warnings.append("{} (imported at {}) is not installed here: listed unpinned in pip as {}; install it, or "
                            "name its package with --pkg-mapping {}=NAME".format(top, where, name, top))
    for pkg in extra_pkgs or ():
        pin = env.pin_for_name(pkg)
        if pin.version is None and re.match(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$", pkg.strip()):
            warnings.append("extra package {} is not installed here: listed unpinned".format(pkg))
        pins[(pin.kind, canonicalize(pin.name))] = pin  # explicit wins over what the imports gave
    _project_hint(files, pins, warnings)
    spec = _build_spec(env, list(pins.values()))
    local = dict(walk.local)
    local.update(_package_data(walk.local, warnings))
    return Analysis(
        spec=spec,
        imports=frozenset(walk.third_party),
        distributions={p.name: p.version for p in pins.values() if p.version is not None},
        local_files=tuple(sorted(local.items(), key=lambda pa: (pa[1], pa[0]))),
        local_distributions=local_dists,
        unresolved=tuple(unresolved),
        warnings=tuple(walk.warnings) + tuple(warnings),
    )


#: Directories and files that are never package data: caches, version control, build and tool debris.
_DEBRIS_DIRS = TOOL_STATE_DIRS | {".ipynb_checkpoints", ".ruff_cache", "build", "dist", ".eggs", "node_modules"}
_DEBRIS_SUFFIXES = (".py", ".pyc", ".pyo", ".egg-info", ".dist-info", "~", ".swp")
_DEBRIS_FILES = frozenset({".DS_Store", "Thumbs.db", ".gitignore", ".gitattributes"})


def _package_data(local, warnings):
    """``{path: arcname}`` of the data files of the local packages in *local* (``{path: arcname}`` of the code
    shipped): every other file in a shipped package's directory and in its subdirectories that are not packages
    themselves (``templates/``, ``data/``), so that code reading a file next to its ``__init__.py`` finds it on the
    worker. Python sources are left to the import analysis (only what is imported ships); caches, VCS and build
    debris and ``PONCHO_WQ_EXCLUDE`` patterns are left out; above ``PONCHO_WQ_DATA_WARN_MB`` a warning names the
    largest files."""
    import fnmatch

    from .config import settings

    patterns = settings().exclude_patterns
    out, sizes = {}, []
    for path, arcname in local.items():
        if os.path.basename(path) != "__init__.py":
            continue
        pkg, arc_pkg = os.path.dirname(path), os.path.dirname(arcname)
        for directory, dirs, files in os.walk(pkg):
            dirs[:] = sorted(d for d in dirs if d not in _DEBRIS_DIRS and not d.endswith(_DEBRIS_SUFFIXES)
                             and not os.path.islink(os.path.join(directory, d))
                             and not os.path.exists(os.path.join(directory, d, "__init__.py")))
            for name in files:
                if name in _DEBRIS_FILES or name.endswith(_DEBRIS_SUFFIXES):
                    continue
                source = os.path.join(directory, name)
                arc = os.path.normpath(os.path.join(arc_pkg, os.path.relpath(source, pkg)))
                if any(fnmatch.fnmatch(arc, p) or fnmatch.fnmatch(name, p) for p in patterns):
                    continue
                if source in local or not os.path.isfile(source):
                    continue
                out[source] = arc
                sizes.append((os.path.getsize(source), arc))
    total = sum(s for s, _ in sizes)
    limit = settings().data_warn_bytes
    if total > limit:
        largest = ", ".join("{} ({:.0f} MB)".format(a, s / 1e6) for s, a in sorted(sizes, reverse=True)[:3])
        warnings.append("the local packages' data files add up to {:.0f} MB (largest: {}); leave some out with "
                        "PONCHO_WQ_EXCLUDE=pattern:pattern, or raise PONCHO_WQ_DATA_WARN_MB".format(
                            total / 1e6, largest))
    return out


# ------------------------------------------------------------------------------------------ a project as a hint

_VCS = (".git", ".hg", ".svn")
_PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py")


def find_project(script):
    """The project directory of *script*: its directory when it holds ``pyproject.toml``, ``setup.cfg`` or
    ``setup.py``, else the nearest parent holding one inside the same version-control checkout (a parent outside
    any checkout, such as a stray ``pyproject.toml`` in a home directory, is not the script's project); None."""
    here = d = os.path.dirname(os.path.abspath(script))
    found = None
    while True:
        if found is None and any(os.path.isfile(os.path.join(d, n)) for n in _PROJECT_FILES):
            found = d
            if d == here:
                return d
        if any(os.path.exists(os.path.join(d, v)) for v in _VCS):
            return found
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def project_hint_files(scripts):
    """The paths the project hint of *scripts* depends on (the project files :func:`find_project` looks for, in each
    directory it looks in), for memo keys: a result cached across an edit of the project's declared dependencies,
    or a project file appearing, would keep the old constraint."""
    out = []
    for script in scripts:
        d = os.path.dirname(os.path.abspath(script))
        while True:
            out += [os.path.join(d, n) for n in _PROJECT_FILES]
            if any(os.path.exists(os.path.join(d, v)) for v in _VCS) or os.path.dirname(d) == d:
                break
            d = os.path.dirname(d)
    return list(dict.fromkeys(out))


def declared_dependencies(project):
    """The requirement strings a project declares, read statically (nothing of it runs): PEP 621
    ``[project] dependencies``, ``setup.cfg``'s ``[options] install_requires``, and a literal ``install_requires``
    list in ``setup.py`` (a keyword of the ``setup()`` call, or a module-level name it refers to)."""
    out = []
    path = os.path.join(project, "pyproject.toml")
    if os.path.isfile(path):
        from .project import read_toml

        try:
            table = read_toml(path).get("project")
            deps = table.get("dependencies") if isinstance(table, dict) else None
            if isinstance(deps, list):  # absent when dynamic; anything else is not PEP 621
                out += [d for d in deps if isinstance(d, str)]
        except (OSError, ValueError, ImportError):
            pass  # not TOML, or no reader (Python < 3.11 without tomli): no hint, the analysis goes on
    path = os.path.join(project, "setup.cfg")
    if os.path.isfile(path):
        import configparser

        cp = configparser.ConfigParser()
        try:
            cp.read(path, encoding="utf-8")
            text = cp.get("options", "install_requires", fallback="")
        except (configparser.Error, UnicodeDecodeError):
            text = ""
        out += [line.strip() for line in text.splitlines() if line.strip()]
    path = os.path.join(project, "setup.py")
    if os.path.isfile(path):
        out += _setup_py_requires(path)
    return list(dict.fromkeys(out))


def _setup_py_requires(path):
    import ast

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return []
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = node.value

    def strings(node):
        if isinstance(node, ast.Name):
            node = names.get(node.id)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        return []

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "setup":
            for kw in node.keywords:
                if kw.arg == "install_requires":
                    return strings(kw.value)
    return []


def _project_hint(scripts, pins, warnings):
    """Let the project the scripts belong to constrain their pins: a pip pin (the version installed here) that
    the project's declared requirement excludes is replaced by the declared requirement, with a warning; pins it
    allows are kept as they are (they are what was tested here)."""
    from packaging.requirements import InvalidRequirement, Requirement

    seen = set()
    for script in scripts:
        project = find_project(script)
        if project is None or project in seen:
            continue
        seen.add(project)
        for text in declared_dependencies(project):
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate():
                continue
            key = ("pip", canonicalize(req.name))
            pin = pins.get(key)
            if pin is None or pin.version is None or not req.specifier:
                continue
            if req.specifier.contains(pin.version, prereleases=True):
                continue
            req.marker = None
            pins[key] = dataclasses.replace(pin, version=None, text=str(req))
            warnings.append("project {} declares {} but {} {} is installed here: the spec asks for {} (install a "
                            "matching version here to test what the workers will run)".format(
                                project, text, pin.name, pin.version, req))


def canonicalize(name):
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;@\[(]", name.strip(), 1)[0]).lower()


def _build_spec(env, pins):
    from .spec import parse_spec

    data = {}
    conda = sorted((p for p in pins if p.kind == "conda"), key=lambda p: p.text)
    python_pin = env.python_pin()
    if python_pin is not None:
        conda = [python_pin] + [p for p in conda if p.name != "python"]
    else:
        data["python"] = env.python_full
    if conda:
        channels = list(dict.fromkeys(p.channel for p in conda))
        data["conda"] = {"channels": channels, "packages": [p.text for p in conda]}
    pip = [p.text for p in pins if p.kind == "pip"]
    if pip:
        data["pip"] = pip
    return parse_spec(data)


def _run_key(roots_of, sources, toplevel, function, exclude, stdlib, cwd):
    """What a walk's result depends on besides file contents and directory listings (checked by stat)."""
    h = hashlib.sha256()
    h.update(marshal.dumps((SCANNER_VERSION, tuple(roots_of.items()),
                            tuple((k, hashlib.sha256(v.encode("utf-8", "surrogateescape")).hexdigest())
                                  for k, v in sorted(sources.items())),
                            bool(toplevel), function or "", tuple(sorted(exclude or ())), tuple(sorted(stdlib)),
                            cwd if sources else "")))
    return h.hexdigest()[:40]


def _arc_root(path, arcname):
    """The directory *path* was resolved under, given its arcname ("pkg/mod.py" -> two levels up)."""
    root = path
    for _ in range(arcname.count(os.sep) + 1):
        root = os.path.dirname(root)
    return root


def _valid_version(v):
    parts = v.split(".")
    return len(parts) in (2, 3) and parts[0] == "3" and all(p.isdigit() for p in parts)
