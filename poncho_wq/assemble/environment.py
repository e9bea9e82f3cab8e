"""``Environment``: what a task needs on the worker (a packed environment plus local code), resolved once.

Many tasks share one environment, so everything here is memoized per process: analyzing the same scripts
again (unchanged on disk) returns the same object, and building the same spec again returns the cached tarball
without touching the builders. A later process gets the build from the on-disk cache (:mod:`poncho_wq.archive.cache`).
"""

import dataclasses
import os
import re
import shlex
import sys
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..config import settings
from ..progress import default_progress
from ..errors import InputMissing, PonchoError, SpecError
from ..memo import register
from ..request import PackageData
from ..identity import file_digest, file_identity, stat_key
from ..requirements import spec_from_requirements
from ..spec import Spec, as_spec, parse_spec

if TYPE_CHECKING:  # pragma: no cover
    from ..analysis.analyzer import Analysis
    from ..engines import BuildResult

# The analysis (poncho_wq.analysis), the builders (poncho_wq.engines), the code layers and the project builder are
# imported where an environment is first analyzed, built or given code (tests/test_structure.py, LAZY_INTERNAL): a
# task of a prebuilt tarball, or of a build found in this process' memo, loads none of them. A second manager
# process' first PonchoTask spent 0.15 s importing them before its first submit (issue 27).

#: Environment()'s default_target when the caller read no settings: $PONCHO_WQ_TARGET is read then.
_READ_NOW = object()
_ENV_NAME = re.compile(r"^env-([0-9a-f]{16,64})\.tar\.gz$")
_lock = threading.RLock()
#: Environments by (the scripts' file identities, exclude, source, engine, python, ship_local, layered, analyze
#: options, and the settings read at the entry: target, PONCHO_WQ_SOURCE, package data), and ship lists / task
#: code by ("ship" or "code", the package data settings, the scripts' file identities). Each value is stored
#: with the identities of the local files its analysis reached and is used only while they are unchanged (one
#: ``stat`` each): an edited local module or editable source is analyzed again (fast: the scan cache re-reads only
#: the edited file), so a new import in it reaches the spec, and its new bytes reach the code layer.
_script_memo: Dict[Any, Any] = {}
#: (BuildResult, file identity of its tarball) by (prepared spec digest, engine name, python, why, keep_tests: the
#: request's inputs of the cache key); trusted only while the tarball's identity is unchanged.
_build_memo: Dict[Any, Any] = {}
for _memo in (_script_memo, _build_memo):
    register(_memo.clear)


def _script_identities(scripts):
    """The scripts' :func:`~poncho_wq.identity.file_identity` (a memo key's part); InputMissing names a missing one."""
    identities = tuple(file_identity(s) for s in scripts)
    for script, ident in zip(scripts, identities):
        if ident is None:
            raise InputMissing("script {} does not exist".format(script))
    return identities


def _local_identities(paths):
    return tuple((p, stat_key(p)) for p in sorted(set(paths)))


def _unchanged(identities):
    return all(stat_key(p) == k for p, k in identities)


def _memo_get(key):
    with _lock:
        hit = _script_memo.get(key)
    if hit is not None and _unchanged(hit[1]):
        return hit[0]
    return None


def _memo_put(key, value, paths):
    with _lock:
        _script_memo[key] = (value, _local_identities(paths))


def _analysis_paths(analysis):
    """The local files an analysis reached (their edits can change its result)."""
    return [src for src, _arc in analysis.local_files]


def tarball_id(path):
    """The id of an environment tarball: from an ``env-<hash>.tar.gz`` name, else the sha256 of its content."""
    m = _ENV_NAME.match(os.path.basename(path))
    if m:
        return m.group(1)
    if file_identity(path) is None:
        raise InputMissing("environment tarball {} does not exist".format(path))
    return file_digest(path)[0][:32]  # memoized by the file's stat (poncho_wq.identity)


class Environment:
    """A task environment: a spec to build (cached), or a prebuilt tarball; plus local files to ship.

    Use the constructors :meth:`from_script`, :meth:`from_spec`, :meth:`from_tarball`, :meth:`from_project` and
    :meth:`from_requirements`.
    """

    def __init__(self, spec: Optional[Spec] = None, tarball: Optional[str] = None,
                 local_files: Iterable[Tuple[str, str]] = (), analysis: Optional["Analysis"] = None,
                 engine: Optional[str] = None, python: Optional[str] = None, source: str = "index",
                 layered: bool = False, target: Optional[str] = None, default_target: Any = _READ_NOW):
        if (spec is None) == (tarball is None):
            raise SpecError("an Environment needs exactly one of a spec or a tarball")
        if spec is not None or target is not None:
            # The build target (poncho_wq.target; target=, else the spec's, else $PONCHO_WQ_TARGET) becomes part
            # of the spec, hence of its digest, the cache key and this environment's identity.
            if spec is None:
                raise SpecError("target={!r} applies to an environment built from a spec; a prebuilt tarball "
                                "already has its floor (poncho/floor.json): leave target out".format(target))
            # default_target: $PONCHO_WQ_TARGET as the entry (from_script) read it; read here otherwise.
            from ..engines import with_target

            spec = with_target(spec, target, settings().target if default_target is _READ_NOW else default_target)
        if source not in ("auto", "index", "current"):
            raise SpecError("source={!r} is not valid; expected 'auto', 'index' or 'current'".format(source))
        # "current" is an engine: source="current" and engine="current" say the same thing, and any other engine
        # with source="current" would silently ignore one of the two.
        if engine == "current":
            source = "current"
        elif source == "current":
            if engine not in (None, "auto"):
                raise SpecError("source='current' copies the installed distributions (the current engine); "
                                "engine={!r} contradicts it: leave engine out, or use source='index'".format(engine))
            engine = "current"
        elif source == "auto" and engine in (None, "auto", "locked"):
            # The lock from the installed files (poncho_wq.engines.locked): decided by the spec alone, never by a
            # network probe. A build for another target cannot copy this machine's compiled files: the lock's
            # exact versions come from the index then, as wheels for the target.
            engine = None if spec is not None and spec.target else "locked"
        self._spec = spec
        self._tarball = os.path.abspath(tarball) if tarball else None
        self.local_files = tuple(local_files)
        self.analysis = analysis
        self.engine = engine
        self.python = python
        self.source = source
        #: layered: local/editable distributions are left out of the base (their installed requirements stay in
        #: it) and ship in the code layer (:meth:`code_layer`) instead, so an edit never rebuilds the base.
        self.layered = layered
        self.build_result: Optional["BuildResult"] = None
        self._identity = None  # file_identity() of build_result.path when it was checked
        #: ``(source, name)`` of files every task of this environment gets in its sandbox (a project's
        #: ``data_files``, see :mod:`poncho_wq.assemble.project`; a task's own go to
        #: ``files=``, :mod:`poncho_wq.deliver.files`).
        self.files: Tuple[Tuple[str, str], ...] = ()
        #: ``(arcname, source)`` the code layer carries besides the local files (a project's ``bin/`` scripts).
        self.layer_members: Tuple[Tuple[str, str], ...] = ()
        #: the :class:`poncho_wq.assemble.project.Project` an environment made by :meth:`from_project` was built from.
        self.project: Optional[object] = None

    # -- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Union[Spec, Mapping[str, Any], str, "os.PathLike[str]"], *,
                  engine: Optional[str] = None, python: Optional[str] = None,
                  target: Optional[str] = None) -> "Environment":
        """From a :class:`~poncho_wq.spec.Spec`, a dict, or a path to a spec file; *target*: the oldest worker it
        must run on, e.g. ``"manylinux_2_28_x86_64"`` (overrides the spec's ``target``, see
        :mod:`poncho_wq.target`)."""
        return cls(spec=as_spec(spec), engine=engine, python=python, target=target)

    @classmethod
    def from_tarball(cls, path: Union[str, "os.PathLike[str]"]) -> "Environment":
        """From a prebuilt environment tarball (poncho_wq's, or any conda-pack archive)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputMissing("environment tarball {} does not exist".format(path))
        return cls(tarball=path)

    @classmethod
    def from_requirements(cls, path: Union[str, "os.PathLike[str]"], *, engine: Optional[str] = None,
                          python: Optional[str] = None, target: Optional[str] = None) -> "Environment":
        """From a pip requirements file (pins, markers, ``-r``/``-c`` includes; index options refused, see
        :mod:`poncho_wq.requirements`); *target* as for :meth:`from_spec`."""
        return cls(spec=spec_from_requirements(os.fspath(path)), engine=engine, python=python, target=target)

    @classmethod
    def from_project(cls, path: Union[str, "os.PathLike[str]"], extras: Iterable[str] = (), *,
                     engine: Optional[str] = None, python: Optional[str] = None, layered: bool = True,
                     build_isolation: Optional[bool] = None) -> "Environment":
        """From a project directory (``setup.py`` / ``pyproject.toml``): its dependencies (and *extras*') in the
        base, the project built as a wheel into the code layer, its ``data_files`` in each task's sandbox (see
        :mod:`poncho_wq.assemble.project`)."""
        return project_environment(os.fspath(path), tuple(extras), layered=layered, engine=engine, python=python,
                                   build_isolation=build_isolation)

    @classmethod
    def from_script(cls, *scripts: Union[str, "os.PathLike[str]"], source: str = "auto",
                    exclude: Optional[Iterable[str]] = None, engine: Optional[str] = None,
                    python: Optional[str] = None, ship_local: bool = True, layered: bool = False,
                    target: Optional[str] = None, **analyze_options: Any) -> "Environment":
        """Analyze *scripts* (memoized while they are unchanged on disk) and return their environment.

        ``source="auto"`` (default) builds the analysis' lock: every distribution of the imports' installed closure
        at the version installed here, from the installed files (the package index only for what they cannot
        serve, :mod:`poncho_wq.engines.locked`); the same scripts on the same installation give the same
        environment whatever the network does (``$PONCHO_WQ_SOURCE`` = ``index`` or ``current`` overrides it).
        ``source="index"`` builds only the imported distributions pinned, the index resolving the rest (packages
        fetched from PyPI/channels); ``source="current"`` copies the installed distributions, never the index.
        ``ship_local``: tasks get the local modules the scripts import (paths relative to each script's dir).
        ``layered``: see :attr:`layered` (what PonchoTask uses; a single tarball for other tools otherwise).
        ``target``: the oldest worker the environment must run on (``"manylinux_2_28_x86_64"``, see
        :mod:`poncho_wq.target`).
        The result is memoized while the scripts and the local files their analysis reached are unchanged.
        """
        from ..analysis.analyzer import MANAGER_ONLY, analyze, project_hint_files

        scripts = tuple(str(s) for s in scripts)
        if engine == "current":
            source = "current"
        exclude = tuple(MANAGER_ONLY if exclude is None else exclude)
        # The settings the result depends on, read once, here: all of them in the memo key.
        default_target, default_source, package_data = _entry_settings()
        source = resolve_source(source, default_source)
        key = (_script_identities(scripts), exclude, source, engine, python, ship_local, layered,
               tuple(sorted((k, repr(v)) for k, v in analyze_options.items())), target or default_target, package_data)
        env = _memo_get(key)
        if env is None:
            result = analyze(scripts, exclude=exclude, package_data=package_data, **analyze_options)
            if result.unresolved:
                print("poncho_wq: warning: allowed unresolved, left to the package index unpinned: "
                      + ", ".join(result.unresolved), file=sys.stderr)
            spec = result.direct_spec if source == "index" else result.spec
            env = cls(spec=spec, local_files=result.local_files if ship_local else (), analysis=result,
                      engine=engine, python=python, source=source, layered=layered, target=target,
                      default_target=default_target)
            old = _memo_get_any(key)
            if old is not None and _same_environment(old, env):
                env = old  # only local code changed: keep the object (and its build memo) for the base
                env.analysis = result
                env.local_files = result.local_files if ship_local else ()
            # the project hint reads these: an edit is a new spec
            _memo_put(key, env, _analysis_paths(result) + project_hint_files(scripts))
        return env

    @classmethod
    def for_command(cls, command: str, **options: Any) -> "Environment":
        """The environment of a task command: its spec covers the submitting script (``__main__``) and the
        ``*.py`` files the command names that exist here (what ships with a task: :func:`ship_list`)."""
        scripts = command_scripts(command)
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        analyzed = list(scripts)
        if main and os.path.isfile(main) and main.endswith(".py"):
            analyzed.insert(0, main)
        if not analyzed:
            raise PonchoError(
                "cannot tell what {!r} needs: no Python script found in the command or __main__; "
                "pass environment= (a spec, a tarball or an Environment)".format(command))
        # Local files ship per task (ship_list, or task_code for the code layer of a layered environment).
        return cls.from_script(*_unique(analyzed), ship_local=False, **options)

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def spec(self) -> Optional[Spec]:
        """The spec (None for a prebuilt tarball)."""
        return self._spec

    @property
    def tarball(self) -> str:
        """Path of the packed environment, building it first when needed."""
        return self.build()

    @property
    def hash(self) -> str:
        """The environment's id: names the tarball on workers (``env-<hash>.tar.gz``) and its unpack dir."""
        return tarball_id(self.build())

    @property
    def remote_name(self) -> str:
        return "env-{}.tar.gz".format(self.hash)

    def build(self, progress: Any = None) -> str:
        """Build (or fetch from the cache) and return the tarball path; memoized per process.

        *progress*: as for :func:`poncho_wq.engines.create` (True, False, a callable or a Progress); None follows
        ``PONCHO_WQ_PROGRESS`` (default ``auto``: rendered when stderr is a terminal, else silent).

        The path is the cache entry itself, which every task attaches under its ``env-<hash>`` name. The memo is
        trusted only while that file is unchanged (same inode, size, mtime and ctime: one ``stat`` per task);
        otherwise :func:`poncho_wq.engines.create` is asked again, which checks the entry's sha256 against the one
        recorded when it was built and rebuilds a damaged entry.
        """

        if self._tarball:
            return self._tarball
        if self.build_result is not None and file_identity(self.build_result.path) == self._identity:
            return self.build_result.path  # every task asks again: no spec hashing on that path
        from ..engines import build_request, create_request
        from .layers import local_requirements

        spec, analysis = self._spec, self.analysis
        if self.layered and analysis is not None and analysis.local_distributions:
            # The local distributions ship in the code layer; the base keeps what they require.
            spec = _with_requirements(spec, local_requirements(analysis, self.python))
            analysis = dataclasses.replace(analysis, local_distributions={})
        why = analysis.build_why() if analysis is not None else None  # what poncho/lock.json says of each
        # One request: the engine chosen and checked, $PONCHO_WQ_TARGET applied (read now, as create() did: issue
        # 19) and the settings of the key read, once; the memo key and the build both come from it.
        request = build_request(spec, engine=self.engine, python=self.python, why=why, prepare=True,
                                analysis=analysis)
        key = (request.spec.digest(), request.engine.name, self.python, tuple(sorted((why or {}).items())),
               request.keep_tests)
        with _lock:
            memo = _build_memo.get(key)
            if memo is None or file_identity(memo[0].path) != memo[1]:
                if progress is None:
                    progress = default_progress()
                result = create_request(request, progress=progress)
                memo = _build_memo[key] = (result, file_identity(result.path))
            self.build_result, self._identity = memo
            return self.build_result.path

    def code_layer(self, members: Iterable[Tuple[str, str]] = ()):
        """The :class:`~poncho_wq.assemble.layers.CodeLayer` of this environment plus *members* (``(arcname, source)``),
        or None when there is no code to ship. Layered environments put their local files and local/editable
        distributions there; *members* are a task's own (:func:`task_code`)."""
        if not (members or self.local_files or self.layer_members or (
                self.layered and self.analysis is not None and self.analysis.local_distributions)):
            return None  # nothing to ship: no code layer, and no need to load poncho_wq.assemble.layers
        from .layers import CodeLayer, distribution_members, local_file_members, merge

        groups = [list(members), local_file_members(self.local_files), list(self.layer_members)]
        if self.layered:
            if self.analysis is not None and self.analysis.local_distributions:
                groups.append(distribution_members(self.analysis.local_distributions, self.python))
        try:
            merged = merge(*groups)
        except PonchoError as e:
            project = getattr(self, "project", None)  # Environment.from_project: its code is the build's copy
            if project is None:
                raise
            raise SpecError("{}: a module the command's scripts import from here differs from the build of the "
                            "project {} (edited since Environment.from_project?); call Environment.from_project "
                            "again after an edit (an unchanged project is not built again)".format(
                                str(e).split(";")[0], project.source)) from None
        return CodeLayer(merged) if merged else None

    def __repr__(self):
        what = self._tarball or (self._spec.summary() if self._spec else "?")
        return "Environment({})".format(what)


def project_environment(path, extras: Sequence[str] = (), *, layered: bool = True, engine: Optional[str] = None,
                        python: Optional[str] = None, build_isolation: Optional[bool] = None,
                        cache_dir: Optional[str] = None):
    """The :class:`~poncho_wq.assemble.environment.Environment` of the project at *path* (see the module docstring).

    *layered* (default, what tasks use): the base holds the dependencies, the code layer the wheel's files, and
    :attr:`~poncho_wq.assemble.environment.Environment.files` its ``data_files`` (attached to each task's sandbox).
    ``layered=False`` (``poncho_package_create --from-project``): one tarball, the wheel installed into it by the
    builder (its ``data_files`` then land in the environment's prefix, as ``pip install`` puts them)."""

    from ..analysis.installation import installation
    from .project import bin_members, build_project

    if isinstance(extras, str):
        extras = (extras,)
    project = build_project(path, python=python, build_isolation=build_isolation, cache_dir=cache_dir)
    inst = installation(python)
    pip = project.dependencies(extras, inst.markers)
    if not layered:
        pip.append("{}{} @ file://{}".format(project.name, "[{}]".format(",".join(extras)) if extras else "",
                                             quote(project.wheel)))
    data: dict = {"python": inst.python_version}
    if pip:
        data["pip"] = pip
    spec = parse_spec(data)
    if layered:
        env = Environment(spec=spec, local_files=tuple(project.lib), engine=engine, python=python, layered=True)
        env.files = tuple(project.data)
        env.layer_members = bin_members(project)
    else:
        env = Environment(spec=spec, engine=engine, python=python)
        env.files = ()
    env.project = project
    return env


def _memo_get_any(key):
    with _lock:
        hit = _script_memo.get(key)
    return hit[0] if hit is not None else None


def _same_environment(old, new):
    """Would *old* build the same base as *new*? (same spec, engine, source, local distributions and lock why)"""
    return (old._spec == new._spec and old.engine == new.engine and old.source == new.source
            and old.python == new.python and old.layered == new.layered
            and _why(old.analysis) == _why(new.analysis)  # poncho/lock.json's why is part of the base's key
            and dict(getattr(old.analysis, "local_distributions", {}) or {})
            == dict(getattr(new.analysis, "local_distributions", {}) or {}))


def _why(analysis):
    return analysis.build_why() if analysis is not None and hasattr(analysis, "build_why") else None


def _with_requirements(spec, requirements):
    """*spec* with *requirements* added to its pip list (those it already names by name are left as they are)."""
    if not requirements:
        return spec
    data = spec.to_dict()
    pip = list(data.get("pip", []))
    named = {canonicalize_name(Requirement(r).name) for r in pip}
    pip += [r for r in requirements if canonicalize_name(Requirement(r).name) not in named]
    data["pip"] = pip
    return parse_spec(data)


def _entry_settings():
    """What an analyzed environment depends on besides its arguments, read from the settings once at its entry:
    ``(PONCHO_WQ_TARGET, PONCHO_WQ_SOURCE, PackageData)``."""
    config = settings()
    return config.target, config.source, PackageData.from_settings(config)


def _package_data():
    return PackageData.from_settings(settings())


def resolve_source(source, default):
    """``"auto"``, ``"index"`` or ``"current"`` for *source*; *default* (``$PONCHO_WQ_SOURCE`` as the entry read
    it) replaces an ``auto``.

    No reachability check decides it (one once did, with a 3 s timeout: under load the same script got the other
    engine and another environment): ``auto`` is the lock, built from the installed files."""
    if source in (None, "auto"):
        return default
    if source not in ("index", "current"):
        raise SpecError("source={!r} is not valid; expected 'auto', 'index' or 'current'".format(source))
    return source


def command_scripts(command):
    """The ``*.py`` files a shell command names that exist relative to the current directory."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return [w for w in words if w.endswith(".py") and os.path.isfile(w)]


def _unique(paths):
    seen, out = set(), []
    for p in paths:
        if os.path.abspath(p) not in seen:
            seen.add(os.path.abspath(p))
            out.append(p)
    return out


def ship_list(scripts):
    """``(source, arcname)`` for command scripts (as the command names them) and the local code they import.

    Memoized while the scripts are unchanged: every task of a run names the same few scripts."""
    from ..analysis.analyzer import analyze

    package_data = _package_data()
    key = ("ship", package_data) + _script_identities(scripts)
    hit = _memo_get(key)
    if hit is not None:
        return hit
    files = {}
    for script in scripts:
        rel = os.path.normpath(script)
        if os.path.isabs(rel) or rel.startswith(".."):
            continue  # the command names it by a path that exists on the worker too
        files[rel] = os.path.abspath(script)
        where = os.path.dirname(rel)
        # strict=False: only the local files count here; unresolved imports are the environment's business
        for source, arcname in analyze([script], strict=False, package_data=package_data).local_files:
            files.setdefault(os.path.normpath(os.path.join(where, arcname)), source)
    result = tuple(sorted((src, arc) for arc, src in files.items()))
    _memo_put(key, result, [src for src, _arc in result])
    return result


def task_code(scripts):
    """What a task's command scripts bring: ``(scripts, members, local distributions)``.

    *scripts*: ``(source, relative path)`` of the command scripts named by a relative path (they must be in the
    sandbox under that path; attached as content-named copies, see :func:`poncho_wq.assemble.layers.content_copy`);
    *members*: ``(arcname, source)`` for the code layer: the local modules they import under ``lib/`` (relative
    to each script's directory, which is where the script imports them from); *local distributions*: {name:
    source dir} of the local/editable distributions they import (their packages and metadata ship in the code
    layer too). Memoized while the scripts and every local file reached are unchanged."""
    if not scripts:
        return (), (), {}
    from ..analysis.analyzer import analyze
    from .layers import local_file_members

    package_data = _package_data()
    key = ("code", package_data) + _script_identities(scripts)
    hit = _memo_get(key)
    if hit is not None:
        return hit
    named, members, dists, reached = {}, [], {}, []
    for script in scripts:
        rel = os.path.normpath(script)
        if os.path.isabs(rel) or rel.startswith(".."):
            continue  # the command names it by a path that exists on the worker too
        named[rel] = os.path.abspath(script)
        result = analyze([script], strict=False, package_data=package_data)  # the local code only (ship_list)
        members += local_file_members(result.local_files)
        dists.update(result.local_distributions)
        reached += [src for src, _arc in result.local_files]
    value = (tuple(sorted((src, rel) for rel, src in named.items())), tuple(sorted(set(members))), dists)
    _memo_put(key, value, reached)
    return value


def as_environment(environment, command=None, layered=False):
    """Turn what users pass as ``environment=`` into an :class:`Environment` (*layered*: see
    :attr:`Environment.layered`; for an analyzed environment, what PonchoTask asks for)."""
    if isinstance(environment, Environment):
        return environment
    if environment is None or environment == "auto":
        if command is None:
            raise PonchoError("environment=None needs a command to analyze")
        return Environment.for_command(command, layered=layered)
    if isinstance(environment, dict) or hasattr(environment, "digest"):
        return Environment.from_spec(environment)
    path = os.fspath(environment)
    if path.endswith((".tar.gz", ".tgz", ".tar")):
        return Environment.from_tarball(path)
    return Environment.from_spec(path)
