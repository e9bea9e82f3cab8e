"""``Environment``: what a task needs on the worker (a packed environment plus local code), resolved once.

Many tasks share one environment, so everything here is memoized per process: analyzing the same scripts
again (unchanged on disk) returns the same object, and building the same spec again returns the cached tarball
without touching the builders. A later process gets the build from the on-disk cache (:mod:`poncho_wq.cache`).
"""

import hashlib
import os
import re
import shlex
import sys
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, Mapping, Optional, Tuple, Union

from .config import settings
from .errors import InputMissing, PonchoError, SpecError
from .memo import register
from .spec import Spec, as_spec

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import Analysis
    from .engines import BuildResult

_ENV_NAME = re.compile(r"^env-([0-9a-f]{16,64})\.tar\.gz$")
_lock = threading.RLock()
#: Environments by (the scripts' file identities, exclude, source, engine, python, ship_local, analyze options), and
#: ship lists by ("ship", the scripts' file identities). Local modules the scripts import are not in the key: an
#: edit of such a module alone is seen after clear_caches() (the layered environments of issue 13 key code by content).
_script_memo: Dict[Any, Any] = {}
#: (BuildResult, file identity of its tarball) by (prepared spec digest, engine name, python); trusted only while
#: the tarball's identity is unchanged.
_build_memo: Dict[Any, Any] = {}
#: sha256[:32] of tarballs not named env-<hash>, by (path, size, mtime_ns).
_hash_memo: Dict[Any, str] = {}
for _memo in (_script_memo, _build_memo, _hash_memo):
    register(_memo.clear)


def _file_identity(path):
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def tarball_id(path):
    """The id of an environment tarball: from an ``env-<hash>.tar.gz`` name, else the sha256 of its content."""
    m = _ENV_NAME.match(os.path.basename(path))
    if m:
        return m.group(1)
    ident = _file_identity(path)
    with _lock:
        if ident not in _hash_memo:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _hash_memo[ident] = h.hexdigest()[:32]
        return _hash_memo[ident]


class Environment:
    """A task environment: a spec to build (cached), or a prebuilt tarball; plus local files to ship.

    Use the constructors :meth:`from_script`, :meth:`from_spec` and :meth:`from_tarball`.
    """

    def __init__(self, spec: Optional[Spec] = None, tarball: Optional[str] = None,
                 local_files: Iterable[Tuple[str, str]] = (), analysis: Optional["Analysis"] = None,
                 engine: Optional[str] = None, python: Optional[str] = None, source: str = "index"):
        if (spec is None) == (tarball is None):
            raise SpecError("an Environment needs exactly one of a spec or a tarball")
        if source not in ("index", "current"):
            raise SpecError("source={!r} is not valid here; expected 'index' or 'current' ('auto' is resolved by "
                            "Environment.from_script)".format(source))
        # "current" is an engine: source="current" and engine="current" say the same thing, and any other engine
        # with source="current" would silently ignore one of the two.
        if engine == "current":
            source = "current"
        elif source == "current":
            if engine not in (None, "auto"):
                raise SpecError("source='current' copies the installed distributions (the current engine); "
                                "engine={!r} contradicts it: leave engine out, or use source='index'".format(engine))
            engine = "current"
        self._spec = spec
        self._tarball = os.path.abspath(tarball) if tarball else None
        self.local_files = tuple(local_files)
        self.analysis = analysis
        self.engine = engine
        self.python = python
        self.source = source
        self.build_result: Optional["BuildResult"] = None
        self._identity = None  # file_identity() of build_result.path when it was checked

    # -- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Union[Spec, Mapping[str, Any], str, "os.PathLike[str]"], *,
                  engine: Optional[str] = None, python: Optional[str] = None) -> "Environment":
        """From a :class:`~poncho_wq.spec.Spec`, a dict, or a path to a spec file."""
        return cls(spec=as_spec(spec), engine=engine, python=python)

    @classmethod
    def from_tarball(cls, path: Union[str, "os.PathLike[str]"]) -> "Environment":
        """From a prebuilt environment tarball (poncho_wq's, or any conda-pack archive)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputMissing("environment tarball {} does not exist".format(path))
        return cls(tarball=path)

    @classmethod
    def from_script(cls, *scripts: Union[str, "os.PathLike[str]"], source: str = "auto",
                    exclude: Optional[Iterable[str]] = None, engine: Optional[str] = None,
                    python: Optional[str] = None, ship_local: bool = True, **analyze_options: Any) -> "Environment":
        """Analyze *scripts* (memoized while they are unchanged on disk) and return their environment.

        ``source="index"`` builds the analyzed spec with an engine (packages fetched from PyPI/channels);
        ``source="current"`` copies the installed distributions from the running environment instead;
        ``source="auto"`` (default) picks "index" when a package index is reachable, else "current", and says
        which on stderr (:func:`poncho_wq.netcheck.resolve_source`; ``$PONCHO_WQ_SOURCE`` overrides it).
        ``ship_local``: tasks get the local modules the scripts import (paths relative to each script's dir).
        """
        from .analysis import analyze
        from .wq import MANAGER_ONLY

        scripts = tuple(str(s) for s in scripts)
        if engine == "current":
            source = "current"
        exclude = tuple(MANAGER_ONLY if exclude is None else exclude)
        try:
            key = (tuple(_file_identity(s) for s in scripts), exclude, source, engine, python, ship_local,
                   tuple(sorted((k, repr(v)) for k, v in analyze_options.items())))
        except FileNotFoundError as e:
            raise PonchoError("script {} does not exist".format(e.filename), exit_code=2)
        with _lock:
            env = _script_memo.get(key)
            if env is None:
                result = analyze(scripts, exclude=exclude, **analyze_options)
                source = _choose_source(source, result.spec, engine, python)
                if result.unresolved:
                    print("poncho_wq: warning: not installed here, left unpinned: " + ", ".join(result.unresolved),
                          file=sys.stderr)
                env = cls(spec=result.spec, local_files=result.local_files if ship_local else (), analysis=result,
                          engine=engine,
                          python=python, source=source)
                _script_memo[key] = env
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
        # Local files ship per task (ship_list), placed next to the script that imports them.
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

        The path is the cache entry itself, which every task attaches under its ``env-<hash>`` name. The memo is
        trusted only while that file is unchanged (same inode, size, mtime and ctime: one ``stat`` per task);
        otherwise :func:`poncho_wq.engines.create` is asked again, which checks the entry's sha256 against the one
        recorded when it was built and rebuilds a damaged entry.
        """
        from .cache import file_identity

        if self._tarball:
            return self._tarball
        if self.build_result is not None and file_identity(self.build_result.path) == self._identity:
            return self.build_result.path  # every task asks again: no spec hashing on that path
        from .engines import create, get_engine

        engine = get_engine(self._spec, self.engine)
        spec = engine.prepare(self._spec, self.analysis)  # what this engine builds for the analysis
        key = (spec.digest(), engine.name, self.python)
        with _lock:
            memo = _build_memo.get(key)
            if memo is None or file_identity(memo[0].path) != memo[1]:
                result = create(spec, engine=engine, python=self.python, progress=progress)
                memo = _build_memo[key] = (result, file_identity(result.path))
            self.build_result, self._identity = memo
            return self.build_result.path

    def __repr__(self):
        what = self._tarball or (self._spec.summary() if self._spec else "?")
        return "Environment({})".format(what)


def _choose_source(source, spec, engine, python):
    """Resolve ``source="auto"``. An index build of *spec* already in the cache is reused without asking the
    network: the reachability check is a guess (a slow answer reads as "no index"), and flipping between index
    and current builds of the same scripts from one run to the next would ship different environments."""
    from .netcheck import resolve_source

    forced = settings().source
    if source in (None, "auto") and forced not in ("index", "current"):
        try:
            from .engines import cache_key
            from .cache import Cache, default_cache_dir

            if Cache(default_cache_dir()).get(cache_key(spec, engine=engine, python=python)):
                return "index"
        except PonchoError:
            pass
    return resolve_source(source)


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
    from .analysis import analyze

    key = ("ship",) + tuple(_file_identity(s) for s in scripts)
    with _lock:
        if key in _script_memo:
            return _script_memo[key]
    files = {}
    for script in scripts:
        rel = os.path.normpath(script)
        if os.path.isabs(rel) or rel.startswith(".."):
            continue  # the command names it by a path that exists on the worker too
        files[rel] = os.path.abspath(script)
        where = os.path.dirname(rel)
        for source, arcname in analyze([script]).local_files:
            files.setdefault(os.path.normpath(os.path.join(where, arcname)), source)
    result = tuple(sorted((src, arc) for arc, src in files.items()))
    with _lock:
        _script_memo[key] = result
    return result


def as_environment(environment, command=None):
    """Turn what users pass as ``environment=`` into an :class:`Environment`."""
    if isinstance(environment, Environment):
        return environment
    if environment is None or environment == "auto":
        if command is None:
            raise PonchoError("environment=None needs a command to analyze")
        return Environment.for_command(command)
    if isinstance(environment, dict) or hasattr(environment, "digest"):
        return Environment.from_spec(environment)
    path = os.fspath(environment)
    if path.endswith((".tar.gz", ".tgz", ".tar")):
        return Environment.from_tarball(path)
    return Environment.from_spec(path)
