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
* ``from __future__ import ...`` is a compiler directive, never a dependency;
* dead branches are not requirements: the ``else`` of the guard every SWIG-4 module starts with (``if __package__
  or "." in __name__: from . import _x`` / ``else: import _x``) in a module reached as part of a package, the
  absolute fallback of a relative import (``try: from . import x`` / ``except ImportError: import x``) there too,
  and ``if`` blocks on ``sys.version_info``, ``sys.platform``, ``os.name`` or ``platform.system()`` that are false
  for the target (Linux workers, the target Python).

Nothing is invented. An import resolves to the standard library, an installed distribution (from its metadata), a
local module or package -- next to a script, in its project, or in a directory a file puts on ``sys.path`` with a
static expression (``sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))``, ``pathlib.Path(__file__)
.parent / "lib"``, see :mod:`poncho_wq.analysis.scan`) -- or to nothing. Nothing is an error unless it is a required
import:
an optional one is left out, and a required one stops the analysis (:class:`~poncho_wq.errors.SpecError` naming
the file, line and module, before anything is built) unless the caller allows it (``allow_unresolved``), which is
the only way an import name that no installed distribution provides reaches a package index. Guessing a package
from an import name is the dependency-confusion pattern: ``import utils`` from a ``sys.path`` directory became the
index's unrelated ``utils``, a SWIG module's ``_cwork_queue`` the pip requirement ``cwork-queue``.

The lock: the distributions the imports resolve to, closed over their installed ``Requires-Dist`` (markers
evaluated for the target, :mod:`poncho_wq.analysis.closure`), each pinned to the version installed here
(:attr:`Analysis.spec`), with why each is there (:attr:`Analysis.lock`: the import and its file:line, or the
distributions requiring it). :attr:`Analysis.direct_spec` pins only what the scripts import, leaving the rest to
an index's resolver (``source="index"``). Manager-only modules (:data:`MANAGER_ONLY`: Work Queue,
ndcctools, poncho_wq) are left out unless ``exclude`` says otherwise, for the CLI and the API alike.

Local code (upstream poncho refuses it) is followed instead: a module or package next to a script, or in the
project the script belongs to (the directory above its topmost package), is resolved to files, scanned in turn,
and reported in :attr:`Analysis.local_files` with the path the task must see it under. Its third-party imports
count like the script's own. Distribution mapping and pinning live in :mod:`poncho_wq.analysis.pins`, over the
model of the installed environment in :mod:`poncho_wq.analysis.installation`.

A project the scripts belong to is a hint (:func:`find_project`, :func:`declared_dependencies`, read statically):
a pin its declared requirements exclude becomes the declared requirement, with a warning.

Scanning one file and the per-file scan cache (and why they are fast) live in :mod:`poncho_wq.analysis.scan`; the local
module walk and the whole-run cache are here.
"""

import ast
import configparser
import dataclasses
import fnmatch
import hashlib
import logging
import marshal
import os
import re
import sys
import time
from importlib.machinery import EXTENSION_SUFFIXES
from typing import FrozenSet, Mapping, Optional, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import pins as distributions
from . import closure as _closure
from ..request import PackageData
from ..errors import InputMissing, PonchoError, SpecError
from ..fsutil import TOOL_STATE_DIRS, is_within, read_toml
from ..spec import Spec, parse_spec
from .installation import installation
from .scan import (DYNAMIC, OPTIONAL, SCANNER_VERSION, TOPLEVEL, TYPE_CHECKING, Context, FileScan, ImportRef,
                   ScanCache, _RACY_SECONDS, cache_dir, evaluate, scan_file, scan_files, scan_source)

__all__ = [
    "Analysis", "LockEntry", "analyze", "canonicalize", "stdlib_names",
    # moved to poncho_wq.analysis.scan, re-exported for existing importers
    "DYNAMIC", "OPTIONAL", "SCANNER_VERSION", "TOPLEVEL", "TYPE_CHECKING", "FileScan", "ImportRef", "ScanCache",
    "cache_dir", "scan_file", "scan_files", "scan_source",
]

log = logging.getLogger(__name__)

# Modules that only the manager needs: never part of a task's environment.
MANAGER_ONLY = ("work_queue", "ndcctools", "poncho_wq", "_work_queue", "work_queue_futures")

#: The " (file:line)" a reason of the lock ends with.
_LOCATION = re.compile(r" \([^()]*\)$")


@dataclasses.dataclass(frozen=True)
class LockEntry:
    """One distribution of the lock: ``name``, installed ``version`` (None for a requirement the caller named that
    is not installed here: the index resolves it), ``kind`` "pip" or "conda", the spec ``requirement``, and
    ``why``: ``("import yaml (job.py:3)", "required by pandas", ...)``."""

    name: str
    version: Optional[str]
    kind: str
    requirement: str
    why: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The result of :func:`analyze` (see the module docstring of :mod:`poncho_wq.analysis.analyzer`)."""

    spec: Spec  # the lock: every distribution of the imports' installed closure, pinned to the installed version
    imports: FrozenSet[str]  # top-level third-party import names found
    distributions: Mapping[str, str]  # distribution name -> version the spec pins
    local_files: Tuple[Tuple[str, str], ...]  # ((absolute source path, arcname the task must see), ...)
    local_distributions: Mapping[str, str]  # editable / local-only distributions -> their source dir
    unresolved: Tuple[str, ...]  # required imports no installed distribution provides (allowed: listed unpinned)
    warnings: Tuple[str, ...]  # human-readable warnings
    #: only what the scripts import, pinned (what source="index" builds: the index resolves the rest)
    direct_spec: Optional[Spec] = None
    lock: Tuple[LockEntry, ...] = ()  # the spec's distributions, with why each is there

    def why(self, name):
        """Why distribution *name* (any spelling) is in the lock: a tuple of reasons, () when it is not."""
        key = canonicalize_name(name)
        for entry in self.lock:
            if canonicalize_name(entry.name) == key:
                return entry.why
        return ()

    def build_why(self):
        """{canonical name: reasons} for ``poncho/lock.json``: the reasons without the file and line of each
        import (see :mod:`poncho_wq.archive.lock` for why the tarball does not carry them)."""
        return {canonicalize_name(e.name): tuple(dict.fromkeys(_LOCATION.sub("", w) for w in e.why))
                for e in self.lock}



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

    def __init__(self, stdlib, exclude, cache, finder, target=None):
        self.stdlib = stdlib
        self.exclude = exclude
        self.cache = cache
        self.finder = finder
        #: the Context of the target (version, platform); package/submodule are filled in per file
        self.target = target or Context(None, None, tuple(sys.version_info[:3]))
        self._contexts = {}
        #: directories the code puts on sys.path (absolute) -> (file, line): "front" ones are searched before the
        #: installed distributions (sys.path.insert), "back" ones after (append, extend, site.addsitedir)
        self.front = {}
        self.back = {}
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

    def add_paths(self, path, entries):
        """Remember the directories a file puts on ``sys.path`` (relative ones are relative to the working
        directory the command runs in, which is this one)."""
        for entry in entries:
            d = os.path.normpath(os.path.join(os.getcwd(), entry.path))
            if os.path.isdir(d) and d not in self.front and d not in self.back:
                (self.front if entry.where == "front" else self.back)[d] = (path, entry.lineno)

    def in_extra(self, top, where):
        """The first directory of the "front" or "back" sys.path additions that holds module *top*, or None."""
        for d in (self.front if where == "front" else self.back):
            if self.finder.child(d, top, namespace_ok=False) is not None:
                return d
        return None

    def context(self, path):
        """The :class:`~poncho_wq.analysis.scan.Context` of a file: a module reached by import knows whether it is in a
        package (its arcname has a directory) and whether it is a submodule; a script does not (it may run as a
        file or with ``-m``), so both branches of such a guard stay live there."""
        ctx = self._contexts.get(path)
        if ctx is None:
            arc = self.local.get(path) if path else None
            if arc is None or not path.endswith(".py"):
                ctx = self.target
            else:
                parts = arc.split(os.sep)
                package = len(parts) > 1
                submodule = package and not (len(parts) == 2 and parts[-1] == "__init__.py")
                ctx = self.target._replace(package=package, submodule=submodule)
            self._contexts[path] = ctx
        return ctx

    def dead(self, ref, path):
        """Is *ref* in a branch that cannot run (a guard false for this file and the target)?"""
        ctx = self.context(path)
        return any(evaluate(cond, ctx) is (not taken) for cond, taken in ref.guards)

    def handle(self, ref, path, roots, arc_root):
        if ref.flags & TYPE_CHECKING:
            return
        if ref.guards and self.dead(ref, path):
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
        key = (roots, len(self.front), ref.module, ref.names)
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
        extra = self.in_extra(top, "front")
        if extra is not None:
            return "local", extra
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
        data = (files, dict(self.finder.consulted), self.local, self.roots_of, third, tuple(self.warnings),
                self.front, self.back)
        self.cache.store_run(key, data)

    def restore(self, key):
        data = self.cache.load_run(key)
        if data is None:
            return False
        try:
            files, dirs, local, roots_of, third, warnings, front, back = data
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
        self.front.update(front)
        self.back.update(back)
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
                self.add_paths(p, self.scanned[p].paths)
                for ref in self.scanned[p].imports:
                    self.handle(ref, p, self.roots_of[p], arc_root)

    def ship_dotted(self, root, entry):
        """Ship what the third-party-looking imports of *entry* resolve to under *root* (a sys.path directory)."""
        for dotted in sorted(entry["dotted"]):
            self.resolve_in(root, tuple(dotted.split(".")), (), (root,))


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
            raise InputMissing("{} does not exist: give the path of a Python script".format(p))
        elif not os.path.isfile(p):
            raise InputMissing("{} is not a regular file: give the path of a Python script".format(p))
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
    :class:`~poncho_wq.analysis.installation.Installation`)?

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
            raise InputMissing("cannot read {}: {}".format(path, e.strerror or e))
        scripts.remove(path)
    return scripts


def analyze(scripts, *, toplevel=False, function=None, pkg_mapping=None, extra_pkgs=(), exclude=None,
            python_version=None, sources=None, use_cache=True, prefix=None, allow_unresolved=(), strict=True,
            package_data=PackageData()):
    """Analyze *scripts* (paths; a directory means every ``*.py`` under it) and *sources* ({display name:
    source text}, e.g. ``{"<stdin>": text}``) and return an :class:`Analysis` whose spec is the lock.

    ``toplevel``: only the imports outside function bodies of the given scripts; ``function``: only the imports
    inside that function (``name`` or ``Class.method``), as upstream does. Local modules they reach are always
    followed completely, since importing a module runs all of its top level. ``pkg_mapping``: {import name:
    package} overrides; ``extra_pkgs``: packages to add. ``exclude``: import names to leave out entirely (default:
    the manager-only modules, :data:`MANAGER_ONLY`). ``python_version``: the target "X.Y" (stdlib
    list, recorded version, markers). ``prefix``: an environment (conda prefix or venv) to resolve distributions
    in instead of the running interpreter's: its interpreter is asked for its site directories
    (:func:`poncho_wq.analysis.installation.installation`), so a venv's system site-packages, the user site and
    ``PYTHONPATH`` count as they would when the script runs there. ``allow_unresolved``: import names that no
    installed distribution provides but that the package index may (listed unpinned); any other required import
    that resolves to nothing raises a :class:`~poncho_wq.errors.SpecError` naming file, line and module, unless
    ``strict=False`` (then they are only listed in :attr:`Analysis.unresolved`: for callers that need the local
    files alone). ``package_data``: a :class:`~poncho_wq.request.PackageData`, which data files of local packages
    ship (the entries read it from ``$PONCHO_WQ_EXCLUDE`` / ``$PONCHO_WQ_DATA_WARN_MB``; default: all of them, a
    warning above 100 MB); no setting is read here.
    """
    if toplevel and function:
        raise PonchoError("--toplevel and --function cannot be used together")
    if python_version is not None:
        python_version = str(python_version)
        if not _valid_version(python_version):
            raise PonchoError("python version {!r} is not valid; expected X.Y such as 3.11".format(python_version))
    exclude = tuple(MANAGER_ONLY if exclude is None else exclude)
    allowed = _allowed_names(allow_unresolved)
    pkg_mapping = dict(pkg_mapping or {})
    finder = _Finder()
    sources = dict(sources or {})
    inst = installation(prefix=prefix)
    scripts = _installed_as_sources(scripts, sources, inst)
    roots_of = _expand(scripts, finder)
    files = list(roots_of)
    if not files and not sources:
        raise PonchoError("no scripts to analyze: give at least one Python script (or - for standard input)")
    env = distributions.Pinner(python_version=python_version, inst=inst)
    markers = _target_markers(inst.markers, env.python_full)
    target = Context(None, None, tuple(int(x) for x in env.python_full.split(".")[:3]),
                     markers.get("sys_platform", "linux"), markers.get("os_name", "posix"),
                     markers.get("platform_system", "Linux"))
    cache = ScanCache(enabled=use_cache)
    stdlib = stdlib_names(env.python_minor)
    walk = _Walk(stdlib, frozenset(exclude), cache, finder, target)
    run_key = _run_key(roots_of, sources, toplevel, function, exclude, stdlib, os.getcwd(), target)
    if not walk.restore(run_key):
        scanned = scan_files(files, cache)
        entries = [(f, scanned[f], roots_of[f]) for f in files]
        entries += [(None, scan_source(text, name), (os.getcwd(),)) for name, text in sources.items()]
        if function and not any(function in s.functions or any(q.endswith("." + function) for q in s.functions)
                                for _, s, _ in entries):
            raise PonchoError("function {!r} is not defined in {}".format(function,
                                                                          ", ".join(files + list(sources))))
        for f, scan, _roots in entries:
            walk.add_paths(f, scan.paths)  # before any import is classified: sys.path is global at run time
        for f, scan, roots in entries:
            for ref in _select(scan, toplevel, function):
                walk.handle(ref, f, roots, roots[-1] if f else None)
        walk.follow()
        walk.save(run_key, files)

    located, local_dists, warnings = _locate(walk, env, pkg_mapping)
    cache.flush()

    # Direct pins (what the scripts import), then the import names that resolve to nothing.
    pins, why = {}, {}
    for top in sorted(located):
        loc = located[top]
        if loc.kind == "pin":
            key = (loc.pin.kind, canonicalize(loc.pin.name))
            pins.setdefault(key, (loc.pin, loc.installed))
            why.setdefault(key, []).append("import {} ({})".format(top, _site(walk.third_party[top])))
    unresolved, problems = [], []
    for top in sorted(t for t in located if located[t].kind == "missing"):
        entry = walk.third_party[top]
        where = _site(entry)
        if top in allowed:
            unresolved.append(top)
            pin = distributions.Pin("pip", allowed[top], None, allowed[top])
            key = ("pip", canonicalize(pin.name))
            pins.setdefault(key, (pin, None))
            why.setdefault(key, []).append("import {}, allowed unresolved ({})".format(top, where))
            warnings.append("{} (imported at {}) is not installed here: listed unpinned in pip as {}, as "
                            "allowed".format(top, where, pin.name))
        elif entry["required"]:
            unresolved.append(top)
            problems.append("{} {}".format(where, top))
        else:
            log.info("poncho: note: optional import %s (%s) is not installed here: left out", top, where)
    for name in sorted(set(allowed) - set(walk.third_party)):
        warnings.append("allowed unresolved import {} is not imported by these scripts (or is installed, local "
                        "or standard): nothing to list".format(name))
    if problems and strict:
        raise SpecError(_unresolved_message(problems))
    for pkg in extra_pkgs or ():
        pin = env.pin_for_name(pkg)
        if pin.version is None and re.match(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$", pkg.strip()):
            warnings.append("extra package {} is not installed here: listed unpinned".format(pkg))
        key = (pin.kind, canonicalize(pin.name))
        installed = inst.distribution(pin.name) if pin.version is not None and pin.kind == "pip" else None
        pins[key] = (pin, installed)  # explicit wins over what the imports gave
        why.setdefault(key, []).append("extra package {}".format(pkg.strip()))

    direct = {k: p for k, (p, _d) in pins.items()}
    _project_hint(files, direct, warnings)
    lock = _lock(env, markers, pins, why, local_dists, exclude, warnings)
    spec = _build_spec(env, [p for _e, p in lock])
    direct_spec = _build_spec(env, list(direct.values()))
    local = dict(walk.local)
    local.update(_package_data(walk.local, warnings, package_data))
    return Analysis(
        spec=spec,
        imports=frozenset(walk.third_party),
        distributions={e.name: e.version for e, _p in lock if e.version is not None},
        local_files=tuple(sorted(local.items(), key=lambda pa: (pa[1], pa[0]))),
        local_distributions=local_dists,
        unresolved=tuple(unresolved),
        warnings=tuple(walk.warnings) + tuple(dict.fromkeys(warnings)),
        direct_spec=direct_spec,
        lock=tuple(e for e, _p in lock),
    )


def _site(entry):
    """``file:line`` of the first place an import was seen (a required one when there is one)."""
    sites = sorted(entry["sites"], key=lambda s: s.optional)
    return ", ".join("{}:{}".format(s.file or "<stdin>", s.lineno) for s in sites[:1]) or "?"


def _allowed_names(names):
    """{import name: pip name} of ``allow_unresolved``; a name that is no package name is refused."""
    if isinstance(names, str):
        names = [names]
    out = {}
    for name in names or ():
        name = str(name).strip()
        pip_name = name.split(".")[0]
        if not re.match(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$", pip_name) or not pip_name.isidentifier():
            raise SpecError("allow_unresolved {!r} is not valid: expected the top-level name of an import that is "
                            "also its package's name, such as tabulate; name another package with --pkg-mapping "
                            "IMPORT=NAME".format(name))
        out[pip_name] = pip_name
    return out


def _unresolved_message(problems):
    """One line: every required import that resolves to nothing (``file:line import name``), and the fixes."""
    names = [p.rsplit(" ", 1)[1] for p in problems]
    sites = ", ".join("{}: import {}".format(*p.rsplit(" ", 1)) for p in problems)
    one = len(problems) == 1
    return ("{} {} not installed here, not local code and not in the standard library; nothing was built. Install "
            "{} here (it is then pinned to that version), name {} package with --pkg-mapping IMPORT=NAME (API: "
            "pkg_mapping=) or use a spec that lists {}, or let the package index provide {} unpinned with {} (API: "
            "allow_unresolved={!r})".format(
                sites, "is" if one else "are", "it" if one else "them", "its" if one else "their",
                "it" if one else "them", "it" if one else "them",
                " ".join("--allow-unresolved " + n for n in names), names))


def _target_markers(markers, python_full):
    """The installation's PEP 508 marker environment, for *python_full* when the target Python differs."""
    out = dict(markers)
    if python_full and out.get("python_full_version") != python_full:
        out["python_full_version"] = python_full
        out["python_version"] = ".".join(python_full.split(".")[:2])
    return out


def _locate(walk, env, pkg_mapping):
    """{top-level import name: :class:`~poncho_wq.analysis.pins.Located`} of every third-party import the walk
    found, shipping (and following) the local code among them; plus the local distributions and warnings.

    A directory the code puts in front of ``sys.path`` wins over an installed distribution (as at run time);
    one appended to it only serves what nothing installed provides."""
    located, local_dists, warnings = {}, {}, []
    while True:
        new = sorted(t for t in walk.third_party if t not in located)
        if not new:
            break
        for top in new:
            entry = walk.third_party[top]
            front = walk.in_extra(top, "front")
            if front is not None:
                walk.ship_dotted(front, entry)
                located[top] = distributions.Located("local", root=front)
                continue
            if top in pkg_mapping:
                located[top] = distributions.Located("pin", env.pin_for_name(pkg_mapping[top]),
                                                     installed=env.inst.distribution(pkg_mapping[top]))
                continue
            loc = env.locate(top, entry["dotted"])
            if loc.kind == "missing" and entry["ns"]:
                root, parts, names, roots = entry["ns"]
                walk.resolve_in(root, parts, names, roots)
                loc = distributions.Located("local", root=root)
            elif loc.kind == "missing" and walk.in_extra(top, "back") is not None:
                back = walk.in_extra(top, "back")
                walk.ship_dotted(back, entry)
                loc = distributions.Located("local", root=back)
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
    return located, local_dists, warnings


def _lock(env, markers, pins, why, local_dists, exclude, warnings):
    """``[(LockEntry, Pin), ...]``, sorted by name: the direct *pins* (``{key: (Pin, installed Distribution or
    None)}``) and every installed distribution their ``Requires-Dist`` reach, and the requirements of the local
    distributions (their code travels apart, what they need must be in the environment), each pinned to the
    installed version. Local/editable distributions reached are added to *local_dists* instead."""
    index = env.inst.distributions()
    manager_only = {canonicalize_name(n) for n in exclude}
    roots, reasons = [], {}
    for key, (pin, dist) in pins.items():
        if dist is not None:
            roots.append(Requirement(dist.name))
            reasons.setdefault(dist.key, []).extend(why.get(key, ()))
    for name in sorted(local_dists):
        dist = env.inst.distribution(name)
        for text in (dist.requires if dist is not None else ()):
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if not _closure.marker_applies(req.marker, markers) or canonicalize_name(req.name) not in index:
                continue
            roots.append(Requirement(req.name + ("[{}]".format(",".join(sorted(req.extras))) if req.extras else "")))
            reasons.setdefault(canonicalize_name(req.name), []).append("required by local project {}".format(name))
    result = _closure.pip_closure(roots, index, markers)
    for requirer, text in result.missing:
        warnings.append("{} requires {}, which is not installed here: it is not in the lock (an index build resolves "
                        "it; one from the installed files goes without it, as here)".format(requirer, text))
    for requirer, text, version in result.conflicts:
        warnings.append("{} requires {} but {} is installed here: the lock keeps the installed one".format(
            requirer, text, version))
    out, seen = [], set()
    for key, dist in result.dists.items():
        if key in manager_only:
            continue
        src = dist.local_source()
        if src is not None:
            if dist.name not in local_dists:
                local_dists[dist.name] = src
                warnings.append("{} (required by {}) is installed from local source {}: its code is shipped with the "
                                "task".format(dist.name, ", ".join(result.required_by.get(key, ())) or "?", src))
            continue
        pin = env.pin(dist)  # a conda record's name and version when conda installed it
        reason = list(reasons.get(key, ())) + ["required by {}".format(n) for n in result.required_by.get(key, ())]
        seen.add((pin.kind, canonicalize(pin.name)))
        out.append((LockEntry(pin.name, pin.version, pin.kind, pin.text, tuple(dict.fromkeys(reason))), pin))
    for key, (pin, dist) in pins.items():  # conda packages without metadata, unpinned names the caller gave
        if dist is None and (pin.kind, canonicalize(pin.name)) not in seen:
            seen.add((pin.kind, canonicalize(pin.name)))
            out.append((LockEntry(pin.name, pin.version, pin.kind, pin.text, tuple(why.get(key, ()))), pin))
    out.sort(key=lambda ep: (ep[0].kind, canonicalize(ep[0].name)))
    return out


#: Directories and files that are never package data: caches, version control, build and tool debris.
_DEBRIS_DIRS = TOOL_STATE_DIRS | {".ipynb_checkpoints", ".ruff_cache", "build", "dist", ".eggs", "node_modules"}
_DEBRIS_SUFFIXES = (".py", ".pyc", ".pyo", ".egg-info", ".dist-info", "~", ".swp")
_DEBRIS_FILES = frozenset({".DS_Store", "Thumbs.db", ".gitignore", ".gitattributes"})


def _package_data(local, warnings, package_data):
    """``{path: arcname}`` of the data files of the local packages in *local* (``{path: arcname}`` of the code
    shipped): every other file in a shipped package's directory and in its subdirectories that are not packages
    themselves (``templates/``, ``data/``), so that code reading a file next to its ``__init__.py`` finds it on the
    worker. Python sources are left to the import analysis (only what is imported ships); caches, VCS and build
    debris and *package_data*'s ``exclude`` patterns are left out; above its ``warn_bytes`` a warning names the
    largest files."""
    patterns = package_data.exclude
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
    limit = package_data.warn_bytes
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
        try:
            table = read_toml(path).get("project")
            deps = table.get("dependencies") if isinstance(table, dict) else None
            if isinstance(deps, list):  # absent when dynamic; anything else is not PEP 621
                out += [d for d in deps if isinstance(d, str)]
        except (OSError, ValueError, ImportError):
            pass  # not TOML, or no reader (Python < 3.11 without tomli): no hint, the analysis goes on
    path = os.path.join(project, "setup.cfg")
    if os.path.isfile(path):
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
            warnings.append("project {} declares {} but {} {} is installed here: environments built from what is "
                            "installed here (the lock) ship {}, source='index' asks the index for {} (install a "
                            "matching version here to test what the workers will run)".format(
                                project, text, pin.name, pin.version, pin.version, req))


def canonicalize(name):
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;@\[(]", name.strip(), 1)[0]).lower()


def _build_spec(env, pins):
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


def _run_key(roots_of, sources, toplevel, function, exclude, stdlib, cwd, target):
    """What a walk's result depends on besides file contents and directory listings (checked by stat); the cwd
    always (relative sys.path entries are relative to it)."""
    h = hashlib.sha256()
    h.update(marshal.dumps((SCANNER_VERSION, tuple(roots_of.items()),
                            tuple((k, hashlib.sha256(v.encode("utf-8", "surrogateescape")).hexdigest())
                                  for k, v in sorted(sources.items())),
                            bool(toplevel), function or "", tuple(sorted(exclude or ())), tuple(sorted(stdlib)),
                            cwd, tuple(target))))
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
