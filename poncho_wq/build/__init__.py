"""Environment builds: spec -> populated prefix -> packed, relocatable tarball, cached by content.

Three engines fill a prefix: ``conda`` (:mod:`.conda`: micromamba/mamba/conda or py-rattler, then pip) for specs
with a conda section, ``portable`` (:mod:`.portable`: a relocatable copy of a CPython interpreter, then pip) for
the others, and ``current`` (:mod:`.current`: the interpreter copy plus the spec's distributions copied, pruned to
their installed dependency closure, from the running environment: no index, never chosen by "auto"). Whatever the engine, :func:`build_prefix` then adds the data sections (:mod:`.data`),
``bin/run_in_env`` (the activator the run shim calls), ``poncho/spec.json`` and ``conda-meta/history`` (conda-pack
needs it), and :func:`poncho_wq.pack.pack_prefix` packs it, so one packer and one relocation step
(``conda-unpack``) serve both engines.

The cache key (:func:`cache_key`) is sha256 over the spec's canonical JSON, the platform (``sys.platform``,
machine, libc) and the builder's identity (engine, poncho_wq version, pack format, and for the portable engine the
base interpreter's implementation and full version/build string; for the current engine also a hash of the
copied files' identities, :func:`.current.installed_identity`). The cached tarball is named
``env-<key[:32]>.tar.gz`` (see :mod:`poncho_wq.cache`).
"""

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time

from ..errors import BuildError, PonchoError
from ..fsutil import build_scratch, check_output_path, place_copy, write_error
from ..progress import as_progress
from ..spec import as_spec
from ..tools import describe_os_error, tail

ENGINES = ("conda", "portable", "current")
#: Bumped whenever the archive layout or packing changes, so old cache entries are not reused.
PACK_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class BuildResult:
    path: str  # the tarball (in the cache when cached; else the requested output)
    key: str  # cache key (hex)
    cache_hit: bool
    seconds: float  # build (or lookup) time
    size: int  # bytes


def resolve_engine(spec, engine=None):
    """``None``/"auto" -> "conda" when the spec has a conda section, else "portable"."""
    if engine in (None, "auto"):
        return "conda" if spec.conda else "portable"
    if engine not in ENGINES:
        raise PonchoError("unknown engine {!r}; expected auto, conda, portable or current".format(engine))
    if engine == "portable" and spec.conda:
        raise PonchoError("the spec has a conda section ({}); the portable engine installs only pip packages: "
                          "use --engine conda (or auto)".format(" ".join(spec.conda.packages)))
    return engine


def platform_tag():
    libc, libc_version = platform.libc_ver()
    return {"platform": sys.platform, "machine": platform.machine(), "libc": "{} {}".format(libc, libc_version)}


def builder_identity(engine, python=None):
    from .. import __version__

    ident = {"engine": engine, "poncho_wq": __version__, "pack_format": PACK_FORMAT}
    if engine in ("portable", "current"):
        from .interpreter import probe_interpreter
        from .portable import base_python

        info = probe_interpreter(base_python(python))
        ident["python"] = {"implementation": info["implementation"], "version": info["version"],
                           "build": info["build"], "abiflags": info["abiflags"]}
    return ident


def cache_key(spec, *, engine, python=None):
    """The content key of the environment *spec* built by *engine* on this platform (sha256 hex)."""
    spec = as_spec(spec)
    engine = resolve_engine(spec, engine)
    doc = {"spec": spec.canonical(), "platform": platform_tag(), "builder": builder_identity(engine, python)}
    if engine == "current":
        from .current import installed_identity

        doc["installed"] = installed_identity(spec, python)  # the files copied, not only their names
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def build_prefix(spec, prefix, *, engine=None, python=None, progress=None):
    """Populate the new (or empty) directory *prefix* with the environment *spec* (not packed)."""
    spec = as_spec(spec)
    engine = resolve_engine(spec, engine)
    progress = as_progress(progress)
    if os.path.isdir(prefix) and os.listdir(prefix):
        raise PonchoError("build prefix {} is not empty".format(prefix))
    os.makedirs(prefix, exist_ok=True)
    if engine == "conda":
        try:
            from .conda import build_conda_prefix
        except ImportError as e:
            raise PonchoError("the conda engine is not available in this installation ({})".format(e), exit_code=3)
        build_conda_prefix(spec, prefix, progress)
    elif engine == "current":
        from .current import build_current_prefix

        build_current_prefix(spec, prefix, python, progress)
    else:
        from .portable import build_portable_prefix

        build_portable_prefix(spec, prefix, python, progress)
    if spec.git or spec.http:
        from .data import fetch_data

        fetch_data(spec, prefix, progress)
    from ..shim import run_in_env_path

    os.makedirs(os.path.join(prefix, "bin"), exist_ok=True)
    shutil.copyfile(run_in_env_path(), os.path.join(prefix, "bin", "run_in_env"))
    os.chmod(os.path.join(prefix, "bin", "run_in_env"), 0o755)
    _write(os.path.join(prefix, "poncho", "spec.json"), spec.dumps())
    history = os.path.join(prefix, "conda-meta", "history")
    if not os.path.exists(history):
        # conda-pack 0.9.2 fails with "mtime may not be None" without it; fixed content keeps archives reproducible.
        _write(history, "# created by poncho_wq ({} engine)\n".format(engine))


def _build_and_pack(spec, engine, python, progress, output):
    """Build a prefix next to *output* (scratch dir) and pack it to *output*; the scratch is removed."""
    scratch = os.path.dirname(output)
    prefix = os.path.join(scratch, "prefix")
    from ..pack import pack_prefix

    try:
        build_prefix(spec, prefix, engine=engine, python=python, progress=progress)
        pack_prefix(prefix, output, progress=progress)
    except PonchoError:
        raise
    except OSError as e:
        raise BuildError("build failed: {}".format(describe_os_error(e))) from e
    except (ValueError, RuntimeError) as e:
        raise BuildError("build failed: {}".format(tail("{}: {}".format(type(e).__name__, e)))) from e
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def create(spec, output=None, *, engine=None, python=None, use_cache=True, cache_dir=None, progress=None):
    """Build (or find in the cache) the packed environment for *spec*; return a :class:`BuildResult`.

    *spec*: Spec, dict or path. *output*: where the tarball should also appear (None: leave it in the cache).
    With ``use_cache=False`` the tarball is built straight into *output* (required then), via a temporary
    directory next to it and an atomic rename.
    """
    spec = as_spec(spec)
    engine = resolve_engine(spec, engine)
    progress = as_progress(progress)
    if python and engine not in ("portable", "current"):
        raise PonchoError("--python chooses the base interpreter of the portable engine (or the environment of the "
                          "current engine); the conda engine "
                          "takes Python from the spec's conda packages")
    start = time.monotonic()
    key = cache_key(spec, engine=engine, python=python)
    if output:
        check_output_path(output)  # before minutes of building, not after
    if not use_cache:
        if not output:
            raise PonchoError("an output path is needed when the cache is not used")
        out_dir = os.path.dirname(os.path.abspath(output))
        try:
            os.makedirs(out_dir, exist_ok=True)
            with build_scratch(out_dir) as scratch:
                tmp_output = os.path.join(scratch, "env.tar.gz")
                _build_and_pack(spec, engine, python, progress, tmp_output)
                os.replace(tmp_output, output)
        except OSError as e:
            raise write_error(output, e) from e
        return BuildResult(os.path.abspath(output), key, False, time.monotonic() - start, os.path.getsize(output))

    from ..cache import Cache

    cache = Cache(cache_dir)
    meta = {"spec": spec.to_dict(), "summary": spec.summary(), "engine": engine, "platform": platform_tag()}
    try:
        # verify_digest: the bytes handed on are the bytes that were built. Hashing every hit doubled the cost of
        # a hit (bench/cache_hit.py: 37 MB, +45 ms, 7.6% of a cold build, target < 5%), so a file that is still
        # the one published (inode and mtime as recorded) is trusted and only another one is hashed.
        path, hit = cache.build(key, lambda tmp: _build_and_pack(spec, engine, python, progress, tmp), meta,
                                verify_digest=True)
    except OSError as e:
        raise BuildError("cannot use the build cache {}: {}; set PONCHO_WQ_CACHE or --cache-dir to a writable "
                         "directory".format(cache.root, e.strerror or e)) from e
    if hit:
        progress.info("cache hit: %s", path)
    if output and os.path.realpath(output) != os.path.realpath(path):  # asked for the entry itself: it is there
        place_copy(path, output)
    return BuildResult(path, key, hit, time.monotonic() - start, os.path.getsize(path))
