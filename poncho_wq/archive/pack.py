"""Pack a prefix into a relocatable, *reproducible* ``.tar.gz`` with conda-pack's machinery.

What comes from conda-pack (0.9.2): :class:`conda_pack.CondaEnv` file discovery (managed vs. unmanaged files,
prefix placeholders from the package records), its :class:`~conda_pack.core.Packer` (shebang rewriting, the
``conda-meta/*.json`` clean-up, the generated ``bin/conda-unpack`` with its prefix records, the activate scripts).
What we replace is only the archive writer, because conda-pack's archives are not reproducible: members follow
``os.listdir`` order, carry the builder's uid/owner names and install-time mtimes, and the gzip header holds the
packing time. Issue 8 needs "same prefix -> same bytes", so :class:`_DeterministicTar` collects the members
conda-pack hands it and writes them sorted by name (``poncho/floor`` first: the run shim reads it before
unpacking, see :mod:`poncho_wq.archive.floor`), owner 0/0 without names, one fixed mtime
(``$SOURCE_DATE_EPOCH`` or 2000-01-01), modes normalized to 0755/0644, hard links stored as regular files, and a
gzip header without name or time. A prefix holding an interpreter base packs that base's members once per
interpreter (:mod:`.basemember`: same members, the base's after the floor and the lock, one gzip member). Side effect of the fixed mtime: ``.pyc`` files that record their source's mtime
(conda packages ship some) are recompiled on first import on a worker; they are never wrong.

Compression is parallel either way: ``pigz -p N`` when it is on PATH (C, fastest), else conda-pack's
:class:`~conda_pack.formats.ParallelGzipFileWriter` (zlib in threads, independent blocks). Both give the same
bytes for any thread count; they differ from each other, which only matters if one cache is filled from machines
with and without pigz (the cache key does not depend on it; the content does not either).

Left out by default: the ``tests``/``test`` directories inside installed packages (``pandas/tests``,
``scipy/*/tests``, ...). Measured on a numpy+pandas+scipy+sympy+matplotlib environment (bench/cold_start.py): 40% of
its files and 25% of its unpacked bytes, and a third of the CPU time of every worker's cold ``tar -xzf``. They are
never imported by a package's own code, with exceptions this module finds instead of guessing: any ``import`` /
``from ... import`` in the package code (or in a test directory that is kept) naming a test directory keeps that
directory (``mpmath/__init__.py`` does ``from .tests import runtests``). Never dropped: top-level ``tests``
packages, the code of distributions installed from a local path or URL (``direct_url.json``: the user's own
projects, whose tests a job may well import), anything outside ``site-packages``. A job that imports a
third-party package's tests itself (pandas' extension-array base tests) needs ``PONCHO_WQ_KEEP_TESTS=1``, which is
part of the cache key. The dropped files stay listed in the distributions' ``RECORD`` (only ``pip uninstall`` or
``importlib.metadata.files()`` would notice).

One more change of behaviour, for speed on workers: conda-pack lists *every* unmanaged text file (for the
portable engine: the whole stdlib) in ``conda-unpack``'s records, so each worker would rescan thousands of files
at unpack time. We hand conda-pack only the unmanaged files that actually contain the build prefix as "unknown";
the others are stored verbatim, which is what conda-unpack would have done to them anyway.
"""

import io
import logging
import os
import re
import shutil
import stat
import struct
import tarfile
import threading
import zlib
from typing import NamedTuple

from ..config import settings
from ..errors import BuildError
from .basemember import (BytesSink, GZIP_HEADER, Part, TarWriter, base_targets, crc32_combine, load_part, part_key,
                         raw_deflate, store_part)
from .floor import FLOOR_MEMBER
from .lock import LOCK_MEMBER
from ..fsutil import atomic_output
from ..progress import as_progress
from ..tools import PigzStream
from ..worker import conda_unpack_header

log = logging.getLogger(__name__)

#: Present when the environment records nothing to relocate (see :func:`pack_prefix`); the run shim looks for it.
NORELOCATE_MEMBER = "poncho/norelocate"

#: Compression level: measured (bench/pack_vs_tar.py) as the best time/size trade-off for environments.
DEFAULT_COMPRESS_LEVEL = 4


def fixed_mtime():
    """The mtime every archive member gets: ``$SOURCE_DATE_EPOCH`` when set (reproducible-builds convention)."""
    return settings().source_date_epoch


def default_threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


# conda-pack writes bin/conda-unpack with `#!/usr/bin/env python`: on a worker without a `python` on PATH (Debian
# has only python3), upstream's and Debian's python_package_run, which execute it directly, fail. The header that
# replaces that line is worker code, kept in poncho_wq/worker/conda_unpack_header.sh (see conda_unpack_header).
_UNPACK_HEADER = conda_unpack_header()


def _portable_unpack_script(data):
    """*data* (conda-unpack) with its ``#!/usr/bin/env python`` line replaced by :data:`_UNPACK_HEADER`."""
    if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
        return _UNPACK_HEADER + data.split(b"\n", 1)[1]
    return data


class _DeterministicTar:
    """The ``add``/``add_bytes`` interface conda-pack's Packer writes to, collecting members to sort later.

    Files inside the prefix are read when the archive is written; anything else (conda-pack's temporary
    ``conda-unpack`` script, its activate scripts) is read at once, because conda-pack deletes its temporaries
    right after handing them over.
    """

    def __init__(self, prefix):
        self.prefix = os.path.abspath(prefix).rstrip("/") + "/"
        self.members = {}

    def add(self, source, target):
        st = os.lstat(source)
        data = None
        if stat.S_ISREG(st.st_mode) and not os.path.abspath(source).startswith(self.prefix):
            with open(source, "rb") as f:
                data = f.read()
            if target == "bin/conda-unpack":
                data = _portable_unpack_script(data)
        self.members[target] = (source, st, data)

    def add_bytes(self, source, sourcebytes, target):
        data = bytes(sourcebytes)
        if target == "bin/conda-unpack":
            data = _portable_unpack_script(data)
        self.members[target] = (source, os.lstat(source), data)

    def add_data(self, target, data):
        """A regular file *target* (mode 0644) holding *data*, made here rather than found in the prefix."""
        self.members[target] = (target, os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, len(data), 0, 0, 0)),
                                bytes(data))

    def total_bytes(self):
        """The bytes of file content :meth:`write` will read (for progress in bytes)."""
        return sum(len(data) if data is not None else st.st_size
                   for _source, st, data in self.members.values() if stat.S_ISREG(st.st_mode))

    def order(self, middle=()):
        """The targets in archive order as three lists: ``poncho/floor`` and ``poncho/lock.json`` (the run shim
        reads the floor from the start of the stream, floor.py; ``poncho_wq inspect`` the lock, lock.py), then
        *middle* (the interpreter base's members, see :mod:`.basemember`), then the rest, each sorted by name."""
        first = [t for t in (FLOOR_MEMBER, LOCK_MEMBER) if t in self.members]
        middle = sorted(set(middle) - set(first))
        taken = set(first) | set(middle)
        return first, middle, sorted(t for t in self.members if t not in taken)

    def write(self, stream, mtime, on_bytes=None):
        """Write the sorted members as a tar stream (PAX format) to *stream*; ``on_bytes(n)`` after each *n* bytes
        of content (a large file reports as it is read, so a 1 GB member does not freeze the progress line)."""
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for targets in self.order():
                for target in targets:
                    self.add_member(tar, target, mtime, on_bytes)

    def add_member(self, tar, target, mtime, on_bytes=None):
        """Add the member *target* to *tar* (anything with tarfile's ``addfile``), normalized (module docstring)."""
        on_bytes = on_bytes or (lambda n: None)
        source, st, data = self.members[target]
        info = tarfile.TarInfo(target)
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(source)
            info.mode = 0o777
            tar.addfile(info)
        elif stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        else:
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                on_bytes(info.size)
            else:
                with open(source, "rb") as f:
                    info.size = os.fstat(f.fileno()).st_size
                    tar.addfile(info, _Counted(f, on_bytes) if info.size > _COUNT_READS_ABOVE else f)
                if info.size <= _COUNT_READS_ABOVE:
                    on_bytes(info.size)

    def content_bytes(self, targets):
        """The bytes of file content of *targets* (for progress)."""
        return sum(len(data) if data is not None else st.st_size
                   for source, st, data in (self.members[t] for t in targets) if stat.S_ISREG(st.st_mode))


#: Files larger than this report their bytes as they are read (smaller ones once, after being written).
_COUNT_READS_ABOVE = 4 << 20


class _Counted:
    """A file object that reports the bytes read from it (tarfile copies a member with ``read()`` calls)."""

    def __init__(self, f, on_bytes):
        self.f = f
        self.on_bytes = on_bytes

    def read(self, n=-1):
        data = self.f.read(n)
        self.on_bytes(len(data))
        return data


def _import_conda_pack():
    """What :func:`pack_prefix` uses of conda-pack, and the formats module its ``Packer.finish`` imports
    (multiprocessing, pickle); None when it cannot be imported (the packer's own import then says why)."""
    try:
        from conda_pack.core import Packer
        from conda_pack.formats import SquashFSArchive
    except Exception:
        return None
    return Packer, SquashFSArchive


def load_conda_pack_early():
    """Start importing conda-pack in a thread, so that a build loads it while its engine installs (the build's
    thread then mostly waits for uv or conda) instead of after: 15-20 ms of CPU in a fresh process (a command line
    build of a small environment), where the import is the first thing the pack step would do. Returns the
    thread; nothing needs to wait for it (an ``import`` waits for a module another thread is importing)."""
    thread = threading.Thread(target=_import_conda_pack, name="poncho-load-conda-pack", daemon=True)
    thread.start()
    return thread


def _load_env(prefix, keep_tests=None, base=None, dropped_tests=None):
    """conda-pack's view of *prefix*, each file it cannot place marked as holding the prefix or not (read once);
    returns ``(env, files, dropped, owned)``. A file that is still the interpreter *base*'s own (an
    :class:`.basemember.InterpreterBase`; hard-linked: the same inode) is not read: the base was prepared elsewhere
    and holds no build prefix (the stdlib: 35 MB read on every build). *owned* maps those files' targets to
    their ``lstat``: the packer adds them as they are (one ``lstat`` each in the whole build). *dropped_tests*: the
    test directories :func:`dropped_test_dirs` chose for this prefix (None: :func:`prune_tests` decides)."""
    from conda_pack import CondaEnv
    from conda_pack.core import CondaPackException, File

    try:
        env = CondaEnv.from_prefix(prefix, on_missing_cache="ignore")
    except CondaPackException as e:
        raise BuildError("conda-pack cannot pack {}: {}".format(prefix, str(e).strip()))
    needle = os.path.abspath(prefix).encode()
    # Test directories first: the files left out are not read (pandas: 57 MB).
    files = sorted(env.files, key=lambda f: f.target)
    if dropped_tests is None:
        files, dropped = prune_tests(files, keep_tests)
    else:
        files, dropped = _without(files, dropped_tests)
    owned = {}
    for i, f in enumerate(files):
        if f.file_mode == "unknown" and not f.is_conda:
            st = os.lstat(f.source)
            if stat.S_ISREG(st.st_mode):
                if base is not None and base.owns(f.target, st):
                    owned[f.target] = st
                    files[i] = File(f.source, f.target, is_conda=False, file_mode=None)
                else:
                    with open(f.source, "rb") as fh:
                        if needle not in fh.read():
                            files[i] = File(f.source, f.target, is_conda=False, file_mode=None)
    return env, files, dropped, owned


_SITE = re.compile(r"^lib/python\d+\.\d+/site-packages/")
_TEST_DIRS = ("tests", "test")
# from SOURCE import NAMES (parenthesized across lines, or to the end of the line) | import MODULES
_IMPORT = re.compile(rb"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*)"
                     rb"|import[ \t]+([^\n#;]*))", re.M)


def _test_dir(rel):
    """The package-relative test directory *rel* (a path below site-packages) lies in, e.g. ``pandas/tests``;
    None when it is not inside one (top-level ``tests`` packages included: they are somebody's code)."""
    parts = rel.split("/")
    for i in range(1, len(parts) - 1):
        if parts[i] in _TEST_DIRS:
            return "/".join(parts[:i + 1])
    return None


def _imports(data):
    """The matches of :data:`_IMPORT` in *data*, the same as ``_IMPORT.finditer(data)`` gives, found faster: every
    match starts at a line start and holds the word ``import`` on that line, so the pattern is tried only at the
    lines where ``bytes.find`` sees that word (finditer tries it at every byte: 0.17 s of a pandas build). Each line
    is looked at once: after a line, the search goes on from the next one (a long line holding the word many times,
    e.g. a bundled script in a string, would otherwise be scanned back once per time: quadratic)."""
    end = 0
    pos = data.find(b"import")
    while pos != -1:
        start = data.rfind(b"\n", 0, pos) + 1
        if start >= end:
            m = _IMPORT.match(data, start)
            if m:
                yield m
                end = m.end()
        eol = data.find(b"\n", max(pos, end))
        if eol == -1:
            return
        pos = data.find(b"import", eol + 1)


def _referenced_test_dirs(site, rel, data, is_dir):
    """The test directories (site-relative) the imports in *data*, the source of the module at site-relative
    *rel*, name: ``import a.tests.b``, ``from .tests import x``, ``from . import tests``."""
    package = rel.split("/")[:-1]
    found = set()
    for m in _imports(data):
        if b"test" not in m.group(0):
            continue  # no name in it can be a test directory
        source, names, plain = m.groups()
        if plain is not None:
            modules = [n.split()[0] for n in plain.decode("utf-8", "replace").split(",") if n.split()]
            targets = [mod.split(".") for mod in modules]
        else:
            source = source.decode("utf-8", "replace")
            dots = len(source) - len(source.lstrip("."))
            base = package[:len(package) - dots + 1] if dots else []
            if dots and len(base) != len(package) - dots + 1:
                continue
            mod = base + [p for p in source.lstrip(".").split(".") if p]
            listed = [n.split()[0] for n in names.decode("utf-8", "replace").strip("()").replace("\\", " ").split(",")
                      if n.split()]
            targets = [mod] + [mod + [n] for n in listed if n in _TEST_DIRS]
        for parts in targets:
            for i in range(1, len(parts)):
                if parts[i] in _TEST_DIRS:
                    path = "/".join(parts[:i + 1])
                    if is_dir(path):
                        found.add(path)
                    break
    return found


def prune_tests(files, keep_tests=None):
    """*files* (conda-pack ``File`` objects) without the test directories of installed packages that no kept code
    imports (see the module docstring); returns ``(kept, dropped)``, both lists of Files."""
    if keep_tests is None:
        keep_tests = settings().keep_tests
    if keep_tests:
        return list(files), []
    site_of, candidates, local_tops, dirs = {}, {}, set(), set()
    for f in files:
        m = _SITE.match(f.target)
        if not m:
            continue
        site, rel = m.group(0), f.target[m.end():]
        site_of[f.target] = (site, rel)
        parts = rel.split("/")
        for i in range(1, len(parts)):
            dirs.add(site + "/".join(parts[:i]))
        if parts[0].endswith(".dist-info") and parts[-1] == "direct_url.json":
            local_tops.add((site, parts[0]))
        test_dir = _test_dir(rel)
        if test_dir is not None:
            candidates[f.target] = test_dir
    if not candidates:
        return list(files), []
    # Top-level names owned by distributions installed from a path or URL: their tests stay.
    protected = set()
    for f in files:
        where = site_of.get(f.target)
        if where and (where[0], where[1].split("/")[0]) in local_tops and where[1].endswith("/RECORD"):
            with open(f.source, "rb") as fh:
                for line in fh.read().decode("utf-8", "replace").splitlines():
                    top = line.split(",", 1)[0].split("/", 1)[0]
                    if top and not top.endswith((".dist-info", ".data")) and top != "..":
                        protected.add((where[0], top))
    kept = set()
    scanned = set()
    todo = [f for f in files if f.target in site_of and f.target not in candidates]
    while todo:
        more = set()
        for f in todo:
            scanned.add(f.target)
            if not f.target.endswith(".py") or os.path.islink(f.source):
                continue
            with open(f.source, "rb") as fh:
                data = fh.read()
            if b"test" not in data:
                continue
            site, rel = site_of[f.target]
            more |= {(site, d) for d in _referenced_test_dirs(site, rel, data, lambda p, s=site: s + p in dirs)}
        new = more - kept
        kept |= new
        todo = [f for f in files if f.target in candidates and (site_of[f.target][0], candidates[f.target]) in new
                and f.target not in scanned]
    out, dropped = [], []
    for f in files:
        test_dir = candidates.get(f.target)
        if test_dir is not None:
            site = site_of[f.target][0]
            if (site, test_dir) not in kept and (site, test_dir.split("/")[0]) not in protected:
                dropped.append(f)
                continue
        out.append(f)
    return out, dropped


def _without(files, test_dirs):
    """``(kept, dropped)``: *files* split by whether their test directory (:func:`_test_dir`) is one of *test_dirs*
    (prefix-relative), as :func:`prune_tests` splits them when it decided on those directories."""
    kept, dropped = [], []
    for f in files:
        (dropped if _prefix_test_dir(f.target) in test_dirs else kept).append(f)
    return kept, dropped


def _prefix_test_dir(target):
    """The prefix-relative test directory the prefix-relative file *target* lies in (``lib/python3.11/
    site-packages/pandas/tests``), or None (see :func:`_test_dir`)."""
    m = _SITE.match(target)
    test_dir = _test_dir(target[m.end():]) if m else None
    return None if test_dir is None else m.group(0) + test_dir


def _site_dirs(prefix):
    """The ``lib/python*/site-packages`` directories of *prefix* whose files conda-pack lists: it follows no symlink
    below the prefix (a linked site-packages is one member to it, its files are packed, tests and all, from where
    they are). Not a glob: the prefix's path may hold glob characters."""
    lib = os.path.join(prefix, "lib")
    if os.path.islink(lib) or not os.path.isdir(lib):
        return []
    sites = []
    for name in sorted(os.listdir(lib)):
        site = os.path.join(lib, name, "site-packages")
        if name.startswith("python") and not os.path.islink(os.path.join(lib, name)) and not os.path.islink(site) \
                and os.path.isdir(site):
            sites.append(site)
    return sites


class _Listed(NamedTuple):
    source: str
    target: str


def dropped_test_dirs(prefix, keep_tests=None):
    """The test directories (relative to *prefix*) that :func:`prune_tests` leaves out of *prefix*'s archive, decided
    before the bytecode step so that it does not compile them (pandas: 1500 modules, half its bytecode time). The
    decision reads only ``.py`` sources and the list of files, which compiling does not change."""
    prefix = os.path.abspath(prefix)
    listed = []
    for site in _site_dirs(prefix):
        for directory, dirs, files in os.walk(site):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            rel_dir = os.path.relpath(directory, prefix)
            listed += [_Listed(os.path.join(directory, n), rel_dir + "/" + n) for n in files]
    _kept, dropped = prune_tests(listed, keep_tests)
    return {_prefix_test_dir(f.target) for f in dropped}


def _compress(tar, out, level, n_threads, use_pigz, on_bytes=None, mtime=None):
    """One gzip member of *tar* with every member's mtime *mtime* (None: ``$SOURCE_DATE_EPOCH``)."""
    mtime = fixed_mtime() if mtime is None else mtime
    return _compress_stream(lambda stream: tar.write(stream, mtime, on_bytes), out, level, n_threads, use_pigz)


def _compress_stream(write, out, level, n_threads, use_pigz):
    """One gzip member of what ``write(stream)`` writes, at *out*'s position; returns "pigz" or "zlib"."""
    pigz = shutil.which("pigz") if use_pigz is not False else None
    if pigz:
        out.flush()  # pigz writes to the same open file, from its current offset
        stream = PigzStream(pigz, out, level, n_threads)
        try:
            write(stream)
        except BaseException:
            stream.abort()
            raise
        stream.close()
        return "pigz"
    from conda_pack.formats import ParallelGzipFileWriter

    writer = ParallelGzipFileWriter(out, compresslevel=level, n_threads=n_threads, mtime=0)
    try:
        write(writer)
    finally:
        writer.close()
    return "zlib"


def _compress_spliced(tar, out, level, n_threads, use_pigz, on_bytes, base, mtime):
    """Write *tar* as one gzip member whose interpreter-base part comes precompressed from *base*'s store (see
    :mod:`.basemember`); returns how the rest was compressed, or None when no member is the base's (the caller
    then packs as usual)."""
    first, middle, rest = tar.order(base_targets(base, tar.members))
    if not middle:
        return None
    head = BytesSink()
    writer = TarWriter(head)
    for target in first:
        tar.add_member(writer, target, mtime, on_bytes)
    head_data = head.getvalue()
    key = part_key(base, middle, level, mtime)
    part = load_part(base, key)
    if part is None:
        body = BytesSink()
        writer = TarWriter(body)
        for target in middle:
            tar.add_member(writer, target, mtime)
        data = body.getvalue()
        deflated = raw_deflate(data, level, n_threads)
        part = Part(zlib.crc32(data), len(data), len(deflated), data=deflated)
        store_part(base, key, deflated, part.crc, part.tar_bytes, len(middle))
        del data, body, deflated
    on_bytes(tar.content_bytes(middle))
    out.write(GZIP_HEADER + raw_deflate(head_data, level))
    part.write_to(out)
    tar_bytes = len(head_data) + part.tar_bytes
    crc = crc32_combine(zlib.crc32(head_data), part.crc, part.tar_bytes)
    # The rest is a whole gzip member written over the last bytes written so far: its 10-byte header is replaced
    # by those bytes again afterwards, its trailer by the whole stream's (nothing is copied twice).
    out.flush()
    splice = out.tell() - len(GZIP_HEADER)
    covered = os.pread(out.fileno(), len(GZIP_HEADER), splice)
    out.seek(splice)
    rest_writer = [None]

    def write(stream):
        rest_writer[0] = TarWriter(stream, offset=tar_bytes)
        for target in rest:
            tar.add_member(rest_writer[0], target, mtime, on_bytes)
        rest_writer[0].end()

    how = _compress_stream(write, out, level, n_threads, use_pigz)
    out.flush()
    fd = out.fileno()
    end = os.lseek(fd, 0, os.SEEK_END)
    header, trailer = os.pread(fd, len(GZIP_HEADER), splice), os.pread(fd, 8, end - 8)
    if header[:4] != GZIP_HEADER[:4] or end - splice < len(GZIP_HEADER) + 8:
        raise BuildError("{} wrote an unexpected gzip header {!r}; cannot splice the archive".format(how, header))
    rest_len = rest_writer[0].offset - tar_bytes
    rest_crc = struct.unpack("<L", trailer[:4])[0]
    os.pwrite(fd, covered, splice)
    os.pwrite(fd, struct.pack("<LL", crc32_combine(crc, rest_crc, rest_len),
                              (tar_bytes + rest_len) & 0xFFFFFFFF), end - 8)
    out.seek(end)
    return how


def ensure_history(prefix, engine, notes=()):
    """Write ``conda-meta/history`` when *prefix* has none: the one writer of that file.

    conda-pack 0.9.2 fails with "mtime may not be None" on a prefix without it, and a portable or current prefix
    has none of its own; fixed content (no date) keeps archives reproducible. *notes*: more comment lines (the
    current engine lists the conda packages it shipped).
    """
    history = os.path.join(prefix, "conda-meta", "history")
    if not os.path.exists(history):
        os.makedirs(os.path.dirname(history), exist_ok=True)
        with open(history, "w", encoding="utf-8") as f:
            f.write("".join("# {}\n".format(line) for line in ("created by poncho_wq ({} engine)".format(engine),)
                            + tuple(notes)))
        os.chmod(history, 0o644)


def pack_prefix(prefix, output, *, n_threads=None, compress_level=None, progress=None, use_pigz=None,
                keep_tests=None, interpreter_base=None, mtime=None, dropped_tests=None):
    """Pack *prefix* into the gzip'd tarball *output* (published atomically); return its size in bytes.

    The archive unpacks with plain ``tar -xzf`` into any directory; ``<dir>/bin/python <dir>/bin/conda-unpack``
    then rewrites the remaining prefix references. ``n_threads`` defaults to all usable cores; ``use_pigz=False``
    forces the in-process compressor. *keep_tests*: pack packages' test directories (None: ``$PONCHO_WQ_KEEP_TESTS``;
    a build passes its request's). *interpreter_base*: the :class:`.basemember.InterpreterBase` placed into the
    prefix, whose members are then packed once per interpreter and reused (same content, one gzip member).
    *mtime*: every member's (None: ``$SOURCE_DATE_EPOCH``; a build passes its request's). *dropped_tests*: the
    test directories to leave out when the caller decided them with :func:`dropped_test_dirs` (None: decided here).
    """
    from conda_pack.core import Packer

    progress = as_progress(progress)
    prefix = os.path.abspath(prefix)
    n_threads = n_threads or default_threads()
    level = DEFAULT_COMPRESS_LEVEL if compress_level is None else int(compress_level)
    mtime = fixed_mtime() if mtime is None else mtime
    if not os.path.exists(os.path.join(prefix, "conda-meta", "history")):
        # conda-pack 0.9.2 fails with "mtime may not be None" without it.
        raise BuildError("{} has no conda-meta/history; conda-pack cannot pack it".format(prefix))
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    with progress.phase("pack", "{} threads, level {}".format(n_threads, level), unit="B") as phase:
        phase.status("listing the files of {}".format(prefix))
        env, files, dropped, owned = _load_env(prefix, keep_tests, interpreter_base, dropped_tests)
        if dropped:
            phase.note("left out {} files of packages' test directories ({:.1f} MB; PONCHO_WQ_KEEP_TESTS=1 keeps "
                       "them)".format(len(dropped), sum(os.path.getsize(f.source) for f in dropped
                                                          if not os.path.islink(f.source)) / 1e6))
        tar = _DeterministicTar(prefix)
        packer = Packer(prefix, tar)
        for f in files:
            st = owned.get(f.target)
            if st is not None:
                tar.members[f.target] = (f.source, st, None)  # what Packer.add does with such a file, minus an lstat
            else:
                packer.add(f)
        packer.finish()
        if not packer.prefixes:
            # Nothing for conda-unpack to rewrite (the portable and current engines' usual case): the shim and
            # run_in_env then mark the environment ready without starting its Python (issue 27: 27-190 ms of a
            # small environment's cold start).
            tar.add_data(NORELOCATE_MEMBER, b"bin/conda-unpack has no prefix records: nothing to relocate\n")
        done = [0]

        def on_bytes(n):
            done[0] += n
            phase.update(done[0])

        phase.status("writing {} files".format(len(tar.members)))
        phase.update(0, tar.total_bytes())
        with atomic_output(output, "wb") as out:
            how = None
            if interpreter_base is not None:
                how = _compress_spliced(tar, out, level, n_threads, use_pigz, on_bytes, interpreter_base, mtime)
                if how is not None:
                    how += ", the interpreter's {} precompressed".format(interpreter_base.identity[:12])
            if how is None:
                how = _compress(tar, out, level, n_threads, use_pigz, on_bytes, mtime)
        size = os.path.getsize(output)
        phase.note("{} files, {:.1f} MB of content into {:.1f} MB ({})".format(
            len(tar.members), done[0] / 1e6, size / 1e6, how))
    return size
