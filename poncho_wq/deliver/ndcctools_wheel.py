"""Ship the manager's own ``ndcctools`` to the workers, as a wheel made from the installed package.

Why this exists: some worker-side code imports ``ndcctools`` itself. TaskVine's serverless library
(``library_code.py``) imports ``ndcctools.taskvine.utils``, which loads ``_cvine.so`` (and through
``ndcctools.taskvine``'s ``__init__`` also ``ndcctools.resource_monitor`` and ``packaging``); DaskVine's tasks
unpickle functions that live in ``ndcctools.taskvine.dask_executor``. ``ndcctools`` is not on PyPI (conda-forge
ships it; sites also build it from source and put it on ``PYTHONPATH``), so no index build can get it, and a
different CCTools release on the worker would not match the manager's protocol anyway. What must travel is the very
package the manager imported: its pure-Python modules and its extension modules, built for this Python version.

How: the installed package directory is zipped into a wheel (``METADATA``, ``WHEEL``, ``RECORD``), and the spec
gets ``ndcctools @ file:///.../ndcctools-<version>+<content hash>-<tags>.whl`` in its pip section. That needs no
change to any builder (pip and uv install a local wheel like any other), and because the file name carries a hash
of the package's content, the spec, and with it the build cache key, changes exactly when the installed
``ndcctools`` changes. The wheel is reproducible (sorted members, fixed timestamps), written once to
``<build cache>/wheels`` with an atomic rename, and reused while the installed files are unchanged.

Tags: with extension modules the wheel is ``cp<XY>-cp<XY>-<platform>`` of the running interpreter, so installing it
into an environment with another Python version fails at build time with pip's "not a supported wheel" message
instead of at import time on a worker. Without extension modules it is ``py3-none-any``.

Limit: the extension modules are copied as they are. A source build links the system's ``libssl``/``libz`` (found
on workers of the same OS); a conda install links its prefix's copies through an rpath that the shipped
environment does not have unless those libraries are in it (a conda spec with ``openssl`` and ``zlib``).
"""

import base64
import csv
import hashlib
import importlib.util
import io
import os
import re
import sys
import sysconfig
import tempfile
import threading
import zipfile
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import quote

from ..archive.cache import default_cache_dir
from ..errors import BuildError, InputMissing
from ..identity import file_digest

PACKAGE = "ndcctools"
# Zip members get this fixed timestamp (the earliest zip can store): identical content gives identical bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_VERSION_IN_BINARY = re.compile(rb"(\d+\.\d+\.\d+) (?:FINAL|RC\d+|PRE)")
_lock = threading.Lock()
_memo: dict = {}


def installed_package_dir(name=PACKAGE):
    """The directory of the installed import package *name* (the one this interpreter imports), without importing
    anything below its ``__init__``."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations:
        raise InputMissing("{} is not importable by this Python ({}): install CCTools' Python bindings (conda "
                           "install -c conda-forge ndcctools, or a source build on PYTHONPATH) so that it can be "
                           "shipped to the workers".format(name, sys.executable))
    return os.path.realpath(locations[0])


def _files(package_dir):
    """``(relative path in the wheel, absolute path)`` of the package's files, sorted; bytecode caches left out
    (the environment compiles its own)."""
    base = os.path.dirname(package_dir)
    out = []
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in files:
            if f.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(root, f)
            if os.path.isfile(path):
                out.append((os.path.relpath(path, base).replace(os.sep, "/"), path))
    return sorted(out)


def _is_extension(rel):
    return rel.endswith((".so", ".pyd")) or ".so." in rel


def _version(files):
    """The CCTools version: from a ``dist-info`` when one exists, else the version string compiled into the
    extension modules ("7.17.1 FINAL"), else 0. Read from the files only, so the same content always gives the same
    wheel name (importing ``ndcctools.taskvine`` for its ``__version__`` would load the library to name it)."""
    try:
        return re.sub(r"[^0-9A-Za-z.]", ".", version(PACKAGE))
    except (PackageNotFoundError, ValueError):
        pass
    for rel, path in files:
        if _is_extension(rel):
            with open(path, "rb") as f:
                m = _VERSION_IN_BINARY.search(f.read())
            if m:
                return m.group(1).decode()
    return "0"


def _content_hash(files):
    """One hash of the files' names, executable bits and contents (each file's digest from :mod:`poncho_wq.identity`,
    read again only when its stat changed)."""
    h = hashlib.sha256()
    for rel, path in files:
        digest, executable = file_digest(path)
        h.update(rel.encode() + b"\0" + (b"x" if executable else b"-") + b"\0" + digest.encode() + b"\0")
    return h.hexdigest()


def _tags(files):
    if any(_is_extension(rel) for rel, _ in files):
        py = "cp{}{}".format(*sys.version_info[:2])
        platform = re.sub(r"[-.]", "_", sysconfig.get_platform())
        return py, py, platform
    return "py3", "none", "any"


def _record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _write_wheel(path, files, version, tags):
    dist_info = "{}-{}.dist-info".format(PACKAGE, version)
    metadata = ("Metadata-Version: 2.1\nName: {}\nVersion: {}\nSummary: CCTools Python bindings, copied by poncho_wq "
                "from the installed package\n").format(PACKAGE, version).encode()
    wheel = ("Wheel-Version: 1.0\nGenerator: poncho_wq\nRoot-Is-Purelib: {}\nTag: {}\n".format(
        "true" if tags[2] == "any" else "false", "-".join(tags))).encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")

    def add(zf, name, data, mode=0o644):
        info = zipfile.ZipInfo(name, _ZIP_TIME)
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, data)
        writer.writerow([name, _record_hash(data), len(data)])

    with zipfile.ZipFile(path, "w") as zf:
        for rel, source in files:
            with open(source, "rb") as f:
                data = f.read()
            add(zf, rel, data, 0o755 if os.stat(source).st_mode & 0o111 else 0o644)
        add(zf, dist_info + "/METADATA", metadata)
        add(zf, dist_info + "/WHEEL", wheel)
        writer.writerow([dist_info + "/RECORD", "", ""])
        info = zipfile.ZipInfo(dist_info + "/RECORD", _ZIP_TIME)
        info.external_attr = 0o100644 << 16
        zf.writestr(info, record.getvalue())


def ndcctools_wheel(directory=None, package_dir=None):
    """Path of a wheel of the installed ``ndcctools`` (made once per content, in *directory*, default
    ``<build cache>/wheels``)."""
    package_dir = package_dir or installed_package_dir()
    if directory is None:
        directory = os.path.join(default_cache_dir(), "wheels")
    files = _files(package_dir)
    # The memo key holds every file's stat: a rebuilt CCTools (same paths, new files) gives a new wheel.
    key = (os.path.abspath(directory), tuple((rel, os.stat(p).st_size, os.stat(p).st_mtime_ns) for rel, p in files))
    with _lock:
        if key in _memo and os.path.isfile(_memo[key]):
            return _memo[key]
        version = "{}+{}".format(_version(files), _content_hash(files)[:16])
        tags = _tags(files)
        path = os.path.join(directory, "{}-{}-{}.whl".format(PACKAGE, version, "-".join(tags)))
        if not (os.path.isfile(path) and zipfile.is_zipfile(path)):
            try:
                os.makedirs(directory, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".ndcctools-", suffix=".whl", dir=directory)
                os.close(fd)
                try:
                    _write_wheel(tmp, files, version, tags)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, path)  # concurrent writers produce the same bytes: the last rename wins
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            except OSError as e:
                raise BuildError("cannot write the ndcctools wheel to {}: {}; set PONCHO_WQ_CACHE to a writable "
                                 "directory".format(directory, e.strerror or e)) from e
        _memo[key] = path
        return path


def ndcctools_requirement(directory=None):
    """The pip requirement that installs the manager's ``ndcctools``: ``ndcctools @ file:///...whl``."""
    return "{} @ file://{}".format(PACKAGE, quote(ndcctools_wheel(directory), safe="/+"))
