"""Environment builds: spec -> populated prefix -> packed, relocatable tarball, cached by content.

Four engines fill a prefix, each an :class:`Engine` (:data:`ENGINES`): ``conda`` (:mod:`.conda`:
micromamba/mamba/conda or py-rattler, then pip) for specs with a conda section, ``portable`` (:mod:`.portable`: a
relocatable copy of a CPython interpreter, then pip) for the others, ``current`` (:mod:`.current`: the
interpreter copy plus the spec's distributions copied, pruned to their installed dependency closure, from the
running environment: no index), and ``locked`` (:mod:`.locked`: what ``source="auto"`` environments are built
with: the analysis' lock from the installed files, the package index only for what those cannot serve). Whatever
the engine, :func:`build_prefix` then adds the data sections (:mod:`.data`), ``bin/run_in_env`` (the activator the
run shim calls), ``poncho/spec.json``, ``poncho/lock.json`` (:mod:`poncho_wq.archive.lock`) and ``conda-meta/history``
(conda-pack needs it), and :func:`poncho_wq.archive.pack.pack_prefix` packs it, so one packer and one relocation step
(``conda-unpack``) serve every engine.

The cache key (:func:`cache_key`) is sha256 over the spec's canonical JSON, the platform (``sys.platform``,
machine, libc) and the builder's identity (engine, poncho_wq version, pack format, and what the engine's
:meth:`Engine.identity` says its result depends on: the base interpreter's implementation and full version/build
string; for the current and locked engines also a hash of the copied files' identities) and, for an analyzed
environment, the digest of its lock's "why" (import names and requiring distributions, :mod:`poncho_wq.archive.lock`).
The cached tarball is named ``env-<key[:32]>.tar.gz`` (see :mod:`poncho_wq.archive.cache`).

One build is one :class:`~poncho_wq.request.BuildRequest`, made once by :func:`build_request` at the entry
(:func:`create`, :meth:`poncho_wq.assemble.environment.Environment.build`, the upstream drop-ins): the target
applied, the engine chosen and checked, the settings of the key read. :func:`request_key`, :func:`populate_prefix`,
:meth:`Engine.populate` and the packer take it (or its values) and read no setting of their own.
"""

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from typing import Any, Dict, Optional, Union

from ..analysis.condameta import conda_records
from ..archive.cache import Cache
from ..archive.floor import write_floor
from ..archive.lock import why_digest, write_lock
from ..archive.pack import dropped_test_dirs, ensure_history, pack_prefix
from ..config import DEFAULT_MTIME, settings
from ..errors import BuildError, PonchoError, SpecError
from ..fsutil import build_scratch, check_output_path, place_copy, write_error
from ..identity import local_project_digests
from ..progress import as_progress
from ..request import BuildRequest
from ..shim import run_in_env_path
from ..spec import as_spec
from ..target import file_owner, floor_problem, parse_target
from ..tools import describe_os_error, tail
from ..version import __version__
from .bytecode import compile_prefix, early_compilers
from .interpreter import build_cache_root, interpreter_bases, placed_base, probe_interpreter
from .portable import base_python, build_portable_prefix, check_target

#: Bumped whenever the archive layout or packing changes, so old cache entries are not reused.
# 2: checked-hash bytecode and poncho/floor.json in every environment; 3: poncho/floor first; 4: packages' test
# directories left out (poncho_wq.archive.pack.prune_tests); 5: poncho/lock.json, the archive's second member
PACK_FORMAT = 5


@dataclasses.dataclass(frozen=True)
class BuildResult:
    path: str  # the tarball (in the cache when cached; else the requested output)
    key: str  # cache key (hex)
    cache_hit: bool
    seconds: float  # build (or lookup) time
    size: int  # bytes
    #: what the environment needs of a worker (poncho_wq.archive.floor.prefix_floor): machine, libc, glibc, glibc_by
    floor: Optional[Dict[str, Any]] = None


class Engine:
    """What every engine states, and the only things the pipeline asks of it.

    An engine (like conda-pack's archive formats behind one ``ArchiveBase``) is chosen once, by name; after that
    nothing in the pipeline tests its name:

    * :meth:`check` refuses what makes no sense for this engine (``--python`` for conda, a conda section for the
      portable engine) before anything is built;
    * :meth:`identity` is everything besides the spec and the platform that the built bytes depend on (for the
      cache key): an engine that copies an interpreter names it, one that copies installed files names them;
    * :meth:`prepare` turns an analysis' spec into the spec this engine builds (the current engine also ships
      local distributions and leaves out what is not installed);
    * :meth:`populate` fills an empty prefix for a :class:`~poncho_wq.request.BuildRequest` (its spec, python and
      installer) and may return where each distribution came from (canonical name -> source, for
      ``poncho/lock.json``); :func:`build_prefix` adds what every environment carries.
    """

    name = ""
    #: whether ``python=`` / ``--python`` means anything to this engine
    takes_python = False

    def check(self, spec, python: Optional[str]) -> None:
        if python and not self.takes_python:
            raise SpecError("--python chooses the base interpreter of the portable engine (or the environment of "
                            "the current engine); the {} engine takes Python from the spec's conda packages: "
                            "leave --python out".format(self.name))

    def identity(self, spec, python: Optional[str]) -> Dict[str, Any]:
        return {}

    def prepare(self, spec, analysis=None):
        return spec

    def populate(self, request: BuildRequest, prefix: str, progress) -> Optional[Dict[str, dict]]:
        raise NotImplementedError

    def __repr__(self):
        return "<engine {}>".format(self.name)


def _interpreter_identity(python):
    info = probe_interpreter(base_python(python))
    return {"implementation": info["implementation"], "version": info["version"], "build": info["build"],
            "abiflags": info["abiflags"]}


class CondaEngine(Engine):
    """micromamba/mamba/conda when on PATH, else the embedded py-rattler; then the spec's pip section."""

    name = "conda"

    def check(self, spec, python):
        super().check(spec, python)
        if not spec.conda or not spec.conda.packages:
            raise SpecError("the conda engine needs a spec with conda packages; use --engine portable (or auto) "
                            "for a spec with only pip packages")

    def populate(self, request, prefix, progress):
        from .conda import build_conda_prefix

        build_conda_prefix(request.spec, prefix, progress, conda_exe=request.conda_exe)


class PortableEngine(Engine):
    """A relocatable copy of a CPython interpreter (the running one, or ``python=``), then the pip section."""

    name = "portable"
    takes_python = True

    def check(self, spec, python):
        super().check(spec, python)
        if spec.conda:
            raise SpecError("the spec has a conda section ({}); the portable engine installs only pip packages: "
                            "use --engine conda (or auto)".format(" ".join(spec.conda.packages)))
        check_target(spec, python)  # the interpreter's own floor against spec.target, before anything is built

    def identity(self, spec, python):
        return {"python": _interpreter_identity(python)}

    def populate(self, request, prefix, progress):
        build_portable_prefix(request.spec, prefix, request.python, progress)


class CurrentEngine(Engine):
    """The spec's distributions copied, closed over their installed dependencies, from the environment of the
    running interpreter (or ``python=``): no index; never chosen by "auto"."""

    name = "current"
    takes_python = True

    def check(self, spec, python):
        super().check(spec, python)
        check_target(spec, python, "current")

    def identity(self, spec, python):
        from .current import installed_identity

        # the files copied, not only their names
        return {"python": _interpreter_identity(python), "installed": installed_identity(spec, python)}

    def prepare(self, spec, analysis=None):
        from .current import spec_with_local

        return spec_with_local(spec, analysis)

    def populate(self, request, prefix, progress):
        from .current import build_current_prefix

        return dict(build_current_prefix(request.spec, prefix, request.python, progress).sources)


class LockedEngine(CurrentEngine):
    """The lock of an analysis (every distribution of the imports' closure pinned to the installed version) from
    the installed files; the package index serves only what they cannot: exact versions of distributions
    installed without a RECORD, and names the caller allowed unresolved (see :mod:`.locked`). What
    ``source="auto"`` builds."""

    name = "locked"

    def identity(self, spec, python):
        from .current import installed_identity

        return {"python": _interpreter_identity(python),
                "installed": installed_identity(spec, python, index_fallback=True)}

    def prepare(self, spec, analysis=None):
        from .current import spec_with_local

        return spec_with_local(spec, analysis, keep_unresolved=True)

    def populate(self, request, prefix, progress):
        from .locked import build_locked_prefix

        return build_locked_prefix(request.spec, prefix, request.python, progress)


#: The engines by name.
ENGINES: Dict[str, Engine] = {e.name: e for e in (CondaEngine(), PortableEngine(), CurrentEngine(),
                                                  LockedEngine())}


def get_engine(spec, engine: Union[None, str, Engine] = None) -> Engine:
    """The engine named *engine* (an :class:`Engine` is returned as is); ``None``/"auto": conda when the spec has
    a conda section, else portable."""
    if isinstance(engine, Engine):
        return engine
    if engine in (None, "auto"):
        return ENGINES["conda" if spec.conda else "portable"]
    if engine not in ENGINES:
        raise SpecError("unknown engine {!r}; expected auto, {}".format(engine, ", ".join(ENGINES)))
    return ENGINES[engine]


def platform_tag():
    libc, libc_version = platform.libc_ver()
    return {"platform": sys.platform, "machine": platform.machine(), "libc": "{} {}".format(libc, libc_version)}


def build_request(spec, *, engine=None, python=None, target=None, why=None, conda_exe=None, prepare=False,
                  analysis=None, config=None) -> BuildRequest:
    """The :class:`~poncho_wq.request.BuildRequest` of building *spec* (a Spec, dict or path): the build target
    applied (*target*, else the spec's, else ``$PONCHO_WQ_TARGET``), the engine chosen (:func:`get_engine`) and
    checked against *python*, and the settings the key and the bytes depend on read, all once, here (*config*: a
    :class:`poncho_wq.config.Settings`, default the process environment's). *prepare*: the spec is an analysis'
    (or an Environment's), turned into what the chosen engine builds (:meth:`Engine.prepare` with *analysis*)
    before ``$PONCHO_WQ_TARGET`` applies, as :meth:`poncho_wq.assemble.environment.Environment.build` needs."""
    config = config or settings()
    spec = as_spec(spec)
    eng = get_engine(spec, engine)  # "auto" looks at the conda section only, which no target changes
    if prepare:
        spec = eng.prepare(spec, analysis)
    spec = with_target(spec, target, config.target)
    eng.check(spec, python)
    return BuildRequest(spec=spec, engine=eng, python=python, why=dict(why) if why else None,
                        keep_tests=config.keep_tests, conda_exe=conda_exe or config.conda_exe,
                        source_date_epoch=config.source_date_epoch)


def cache_key(spec, *, engine, python=None, why=None, target=None):
    """The cache key a build of *spec* with *engine* gets (see :func:`request_key`): made through
    :func:`build_request` like a build's, so ``$PONCHO_WQ_TARGET`` and ``$PONCHO_WQ_KEEP_TESTS`` count the same."""
    return request_key(build_request(spec, engine=engine, python=python, why=why, target=target))


def request_key(request: BuildRequest) -> str:
    """The content key of the environment *spec* built by *engine* on this platform (sha256 hex): the spec's
    canonical JSON, the platform, and the builder (engine, poncho_wq version, pack format, the engine's
    :meth:`Engine.identity`); plus the content digests of local ``file://`` projects the spec names, and the digest
    of *why* (what ``poncho/lock.json`` says of each distribution, :func:`poncho_wq.archive.lock.why_digest`) when
    given. Everything comes from *request*: no setting is read here."""
    spec, eng, why = request.spec, request.engine, request.why
    builder = {"engine": eng.name, "poncho_wq": __version__, "pack_format": PACK_FORMAT}
    # PONCHO_WQ_KEEP_TESTS changes what is packed (poncho_wq.archive.pack); other keys unchanged
    if request.keep_tests:
        builder["keep_tests"] = True
    # SOURCE_DATE_EPOCH changes every member's mtime, so the bytes; the default's keys are unchanged
    if request.source_date_epoch != DEFAULT_MTIME:
        builder["source_date_epoch"] = request.source_date_epoch
    builder.update(eng.identity(spec, request.python))
    doc = {"spec": spec.canonical(), "platform": platform_tag(), "builder": builder}
    local = local_project_digests(spec)
    if local:  # `name @ file:///dir`: the project's content, not only its URL (issue 13); other keys unchanged
        doc["local"] = local
    digest = why_digest(why)
    if digest:  # the lock's why is in the tarball: the same key must give the same bytes
        doc["why"] = digest
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def with_target(spec, target=None, default=None):
    """*spec* with its build target replaced by *target* (a manylinux tag, see :mod:`poncho_wq.target`) when one is
    given, else with *default* (the entry's ``$PONCHO_WQ_TARGET``, ``Settings.target``) when the spec names none:
    the target is part of the spec, so of its digest and of the cache key. No setting is read here."""
    spec = as_spec(spec)
    if target is None:
        if spec.target:
            return spec
        target = default
        if target is None:
            return spec
    return dataclasses.replace(spec, target=parse_target(target, "target").tag)


def build_prefix(spec, prefix, *, engine=None, python=None, progress=None, target=None, why=None):
    """Populate the new (or empty) directory *prefix* with the environment *spec* (not packed); return its floor
    (:func:`poncho_wq.archive.floor.prefix_floor`), also written to ``poncho/floor.json``. A build target (*target*, or
    the spec's) that the floor is above is a BuildError naming the file that needs more. ``poncho/lock.json``
    records what the prefix holds, with *why* (canonical name -> reasons) from an analysis."""
    request = build_request(spec, engine=engine, python=python, target=target, why=why)
    return populate_prefix(request, prefix, as_progress(progress))


def populate_prefix(request: BuildRequest, prefix, progress):
    """:func:`build_prefix` of a resolved *request* (*progress*: a Progress)."""
    return _populate(request, prefix, progress)[0]


def _populate(request: BuildRequest, prefix, progress):
    """:func:`populate_prefix`, returning ``(floor, dropped)``: *dropped* is the set of test directories the
    packer leaves out (:func:`~poncho_wq.archive.pack.dropped_test_dirs`, decided before the bytecode step; None
    when not decided here), so that the packer need not decide again."""
    spec, eng, why = request.spec, request.engine, request.why
    if os.path.isdir(prefix) and os.listdir(prefix):
        raise BuildError("build prefix {} is not empty".format(prefix))
    os.makedirs(prefix, exist_ok=True)
    target = parse_target(spec.target) if spec.target else None
    # by the environment's own interpreter: not for another architecture
    compiles = target is None or not target.is_cross()
    with early_compilers(compiles):  # an engine may start the compiler while it installs (start_early)
        sources = eng.populate(request, prefix, progress)
        base = placed_base(prefix)
        dropped = None
        if compiles:
            dropped = dropped_test_dirs(prefix, request.keep_tests)
            compile_prefix(prefix, progress, build_cache_root(), base.tree if base is not None else None, dropped)
    if spec.git or spec.http:
        from .data import fetch_data

        fetch_data(spec, prefix, progress)
        dropped = None  # the packer decides again over what the data sections added
    os.makedirs(os.path.join(prefix, "bin"), exist_ok=True)
    shutil.copyfile(run_in_env_path(), os.path.join(prefix, "bin", "run_in_env"))
    os.chmod(os.path.join(prefix, "bin", "run_in_env"), 0o755)
    _write(os.path.join(prefix, "poncho", "spec.json"), spec.dumps())
    write_lock(prefix, spec, eng.name, sources, why)
    ensure_history(prefix, eng.name)
    floor = write_floor(prefix, base)
    if target is not None:
        problem = floor_problem(floor, target)
        if problem:
            owner = file_owner(prefix, floor.get("glibc_by") or "", conda_records(prefix).values())
            if owner:
                problem += " (" + owner + ")"
            fix = ("pin an older version of the package that ships this file, or build with the conda engine"
                   if eng.name != "current" else "the current engine copies what is installed here: build from "
                   "the index (--engine portable), which takes only wheels for the target, or install a version "
                   "of that package built for it")
            raise BuildError("the environment cannot run on its target {}: {}; {}".format(target.tag, problem, fix))
    return floor, dropped


def _build_and_pack(request, progress, output):
    """Build a prefix next to *output* (in the scratch dir, which the caller removes with the prefix: in the
    background once the cache entry is published, see :func:`poncho_wq.fsutil.remove_later`) and pack it to
    *output*. Returns the environment's floor."""
    scratch = os.path.dirname(output)
    prefix = os.path.join(scratch, "prefix")
    try:
        floor, dropped = _populate(request, prefix, progress)
        pack_prefix(prefix, output, progress=progress, keep_tests=request.keep_tests, mtime=request.source_date_epoch,
                    interpreter_base=placed_base(prefix), dropped_tests=dropped)
        return floor
    except PonchoError:
        raise
    except OSError as e:
        raise BuildError("build failed: {}".format(describe_os_error(e))) from e
    except (ValueError, RuntimeError) as e:
        raise BuildError("build failed: {}".format(tail("{}: {}".format(type(e).__name__, e)))) from e


def create(spec, output=None, *, engine=None, python=None, use_cache=True, cache_dir=None, progress=None,
           target=None, why=None):
    """Build (or find in the cache) the packed environment for *spec*; return a :class:`BuildResult`.

    *spec*: Spec, dict or path (or a :class:`~poncho_wq.request.BuildRequest`, which already holds the engine,
    python, target and why: those arguments must be left out then). *output*: where the tarball should also appear
    (None: leave it in the cache). With ``use_cache=False`` the tarball is built straight into *output* (required
    then), via a temporary directory next to it and an atomic rename. *progress*: None (silent), True (stderr), a
    callable that gets each :class:`poncho_wq.progress.ProgressEvent`, or a :class:`poncho_wq.progress.Progress`.
    *target*: the oldest worker the environment must run on (``manylinux_2_28_x86_64``, see
    :mod:`poncho_wq.target`), overriding the spec's ``target``. *why*: canonical distribution name -> reasons, for
    ``poncho/lock.json`` (an analysis' :meth:`~poncho_wq.analysis.analyzer.Analysis.build_why`; part of the key).
    """
    if isinstance(spec, BuildRequest):
        if engine is not None or python is not None or target is not None or why is not None:
            raise SpecError("create(request, ...): the request already holds engine, python, target and why; pass "
                            "them to build_request() instead")
        request = spec
    else:
        request = build_request(spec, engine=engine, python=python, target=target, why=why)
    return create_request(request, output, use_cache=use_cache, cache_dir=cache_dir, progress=progress)


def create_request(request: BuildRequest, output=None, *, use_cache=True, cache_dir=None, progress=None):
    """:func:`create` of a resolved *request* (:func:`build_request`): nothing is resolved or read again."""
    spec, engine = request.spec, request.engine
    progress = as_progress(progress)
    start = time.monotonic()
    key = request_key(request)
    if output:
        check_output_path(output)  # before minutes of building, not after
    if not use_cache:
        if not output:
            raise SpecError("an output path is needed when the cache is not used")
        out_dir = os.path.dirname(os.path.abspath(output))
        try:
            os.makedirs(out_dir, exist_ok=True)
            with build_scratch(out_dir) as scratch:
                tmp_output = os.path.join(scratch, "env.tar.gz")
                floor = _build_and_pack(request, progress, tmp_output)
                os.replace(tmp_output, output)
        except OSError as e:
            raise write_error(output, e) from e
        return BuildResult(os.path.abspath(output), key, False, time.monotonic() - start, os.path.getsize(output),
                           floor)

    cache = Cache(cache_dir)
    meta = {"spec": spec.to_dict(), "summary": spec.summary(), "engine": engine.name, "platform": platform_tag()}
    try:
        # verify_digest: the bytes handed on are the bytes that were built. Hashing every hit doubled the cost of
        # a hit (bench/cache_hit.py: 37 MB, +45 ms, 7.6% of a cold build, target < 5%), so a file that is still
        # the one published (inode and mtime as recorded) is trusted and only another one is hashed.
        # interpreter_bases: the portable and current engines place the interpreter from a base prepared once per
        # interpreter under this cache (issue 17); --no-cache builds prepare it in their own prefix.
        with interpreter_bases(cache.root):
            # The builder also records the floor in the entry's metadata (read after it returns).
            path, hit = cache.build(key, lambda tmp: meta.update(floor=_build_and_pack(request, progress, tmp)),
                                    meta, verify_digest=True)
    except OSError as e:
        raise BuildError("cannot use the build cache {}: {}; set PONCHO_WQ_CACHE or --cache-dir to a writable "
                         "directory".format(cache.root, e.strerror or e)) from e
    if hit:
        progress.info("cache hit: %s", path)
    if output and os.path.realpath(output) != os.path.realpath(path):  # asked for the entry itself: it is there
        place_copy(path, output)
    return BuildResult(path, key, hit, time.monotonic() - start, os.path.getsize(path),
                       meta.get("floor") if not hit else cache.read_meta(key).get("floor"))
