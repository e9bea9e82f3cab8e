"""The interpreter base's members, compressed once per interpreter and reused by every build (issue 27).

Why: the portable and current engines hard-link the same interpreter base (~12 MB compressed with its stdlib
bytecode) into every prefix, and packing compressed it again on every build: most of a small environment's build
time (``{"pip": ["humanize"]}``: 3.7x ``uv venv`` + ``uv pip install`` + ``tar | pigz``).

How, keeping one ordinary ``.tar.gz``: the tar stream is written in three parts, ``poncho/floor`` and
``poncho/lock.json`` first (the run shim and ``poncho_wq inspect`` read them from the start of the stream), then
the members that are the interpreter base's own files (sorted by name), then the rest (sorted by name) with the
end-of-archive blocks. Each part is compressed on its own into raw deflate data; the first two end with a full
flush (byte-aligned, not final), the last is pigz's (or the zlib writer's) deflate stream, which ends the stream.
They are spliced into **one gzip member**: one header, one deflate stream, one CRC-32 (combined from the parts'
with :func:`crc32_combine`) and one length. One member rather than concatenated gzip members because readers that
stop after the first member exist and are silent about it: Python's ``tarfile`` in stream mode (``r|gz``) lists
only the first member's files; so do old bsdtar builds and Rust's single-member ``GzDecoder``.

The middle part depends only on the base (its fingerprint covers every file's size, mtime, inode and mode), the
names packed, the fixed mtime, the compression level, zlib's version and :data:`FORMAT`; it is kept beside the
base (``<cache>/interpreters/<hash>/packed/<key>.deflate`` and ``.json``). A part file that is still the one
stored (inode, size and mtime as recorded) is used as it is; another one is checked against the recorded sha256
first. A member counts as the base's only when it is the base's file itself (the same inode: hard-linked into the
prefix, not rewritten by conda-pack), the same symlink or a directory of the base; a
copied or rewritten file is packed with the rest, so the archive's content never depends on the cache.
"""

import hashlib
import json
import logging
import os
import stat
import tarfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Dict, Mapping, NamedTuple, Optional, Tuple

from ..fsutil import append_contents

log = logging.getLogger(__name__)

#: Bumped when the bytes of a cached part would change for the same inputs (the part's cache key includes it).
FORMAT = 1

#: The gzip header of a spliced archive: no name, no time, no flags (pigz -n writes the same 10 bytes).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"

#: The uncompressed bytes each thread compresses independently (each chunk ends with a full flush).
_CHUNK = 1 << 20

_NUL = b"\0"


class BaseEntry(NamedTuple):
    """One entry of an interpreter base's tree, as one ``lstat`` saw it: ``kind`` is "F" (file), "L" (symlink,
    ``linkname`` its target) or "D" (directory)."""

    kind: str
    size: int
    mtime_ns: int
    ino: int
    dev: int
    mode: int
    linkname: str = ""


def walk_base(tree: str) -> Tuple[Dict[str, BaseEntry], str]:
    """Every entry of *tree* (relative path -> :class:`BaseEntry`, the tree itself left out) and the text the
    base's fingerprint hashes (engines.interpreter), made in the same one walk: checking the fingerprint yields the
    listing that the packer and the floor then use without another ``lstat`` of the base's files."""
    entries: Dict[str, BaseEntry] = {}
    lines = []
    for directory, dirs, files in os.walk(tree):
        dirs.sort()
        rel_dir = os.path.relpath(directory, tree)
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]):
            path = os.path.join(directory, name)
            rel = name if rel_dir == "." else rel_dir + "/" + name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink(path)
                lines.append("L {} {}".format(os.path.join(rel_dir, name), link))
                entries[rel] = BaseEntry("L", st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_mode, link)
            else:
                lines.append("F {} {} {} {} {:o}".format(os.path.join(rel_dir, name), st.st_size, st.st_mtime_ns,
                                                       st.st_ino, st.st_mode & 0o7777))
                entries[rel] = BaseEntry("F", st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_mode)
        lines.append("D {}".format(rel_dir))
        if rel_dir != ".":
            entries[rel_dir] = BaseEntry("D", 0, 0, 0, 0, stat.S_IFDIR | 0o755)
    return entries, "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class InterpreterBase:
    """The interpreter base placed into a prefix: its *tree*, *identity* (what the tree's content depends on:
    the base's key and fingerprint) and the directory *store* where its packed parts are kept. *entries*: the
    tree's :func:`walk_base` listing when the caller has it (the walk that checked the fingerprint), else it is
    walked when first needed."""

    tree: str
    identity: str
    store: str
    entries: Optional[Mapping[str, BaseEntry]] = None

    def listing(self) -> Mapping[str, BaseEntry]:
        if self.entries is None:
            object.__setattr__(self, "entries", walk_base(self.tree)[0])
        return self.entries  # type: ignore[return-value]

    def owns(self, target: str, st: os.stat_result) -> bool:
        """Whether the prefix file *target* whose ``lstat`` is *st* is still this base's own file (the same
        inode: hard-linked, never rewritten), or the same symlink or a directory of the base."""
        entry = self.listing().get(target)
        if entry is None:
            return False
        if entry.kind == "F":
            return stat.S_ISREG(st.st_mode) and st.st_ino == entry.ino and st.st_dev == entry.dev
        if entry.kind == "D":
            return stat.S_ISDIR(st.st_mode)
        return stat.S_ISLNK(st.st_mode)


class TarWriter:
    """Tar members written exactly as :mod:`tarfile`'s ``w|`` PAX writer writes them, to any object with
    ``write``, with the end-of-archive blocks written only by :meth:`end` (so a stream can be written in parts).
    *offset*: the tar bytes written before this part (the end padding rounds the whole stream to a record)."""

    def __init__(self, out, offset=0):
        self.out = out
        self.offset = offset

    def addfile(self, info, fileobj=None):
        """Like :meth:`tarfile.TarFile.addfile`."""
        buf = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        self.out.write(buf)
        self.offset += len(buf)
        if fileobj is not None:
            tarfile.copyfileobj(fileobj, self.out, info.size)
            blocks, remainder = divmod(info.size, tarfile.BLOCKSIZE)
            if remainder:
                self.out.write(_NUL * (tarfile.BLOCKSIZE - remainder))
                blocks += 1
            self.offset += blocks * tarfile.BLOCKSIZE

    def end(self):
        self.out.write(_NUL * (tarfile.BLOCKSIZE * 2))
        self.offset += tarfile.BLOCKSIZE * 2
        remainder = self.offset % tarfile.RECORDSIZE
        if remainder:
            self.out.write(_NUL * (tarfile.RECORDSIZE - remainder))
            self.offset += tarfile.RECORDSIZE - remainder


class BytesSink:
    """A write-only stream kept in memory (a part of the tar stream before it is compressed)."""

    def __init__(self):
        self.parts = []

    def write(self, data):
        self.parts.append(bytes(data))
        return len(data)

    def getvalue(self):
        return b"".join(self.parts)


def _deflate_chunk(level, chunk):
    c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)
    return c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)


def raw_deflate(data, level, n_threads=1):
    """*data* as raw deflate blocks, byte-aligned and not final (a full flush after each 1 MiB chunk, compressed
    independently in *n_threads* threads: the same bytes for any thread count)."""
    chunks = [data[i:i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [b""]
    if n_threads > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(n_threads) as pool:
            return b"".join(pool.map(lambda c: _deflate_chunk(level, c), chunks))
    return b"".join(_deflate_chunk(level, c) for c in chunks)


#: CRC-32's polynomial, reflected (bit 31 is x^0).
_POLY = 0xEDB88320


def _multmodp(a, b):
    """``a * b mod p(x)`` for polynomials over GF(2) in CRC-32's reflected form."""
    product, bit = 0, 1 << 31
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers():
    """``x^(2^k) mod p(x)`` for k = 0..31."""
    out, power = [], 1 << 30  # x^1
    for _ in range(32):
        out.append(power)
        power = _multmodp(power, power)
    return out


_X2N = _powers()


def crc32_combine(crc1, crc2, len2):
    """The CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's ``crc32_combine``, which
    Python's zlib module does not expose).

    How: appending ``len2`` bytes multiplies A's CRC by ``x^(8 * len2)`` modulo CRC-32's polynomial; that power
    is a product of the precomputed ``x^(2^k)`` for the bits of ``8 * len2``: about 30 products of 32 steps each
    (the former 32x32 matrix squarings took 5 ms per call, two calls per build)."""
    if len2 <= 0:
        return crc1
    shift, k, n = 1 << 31, 3, len2  # x^0; 8 * len2 = len2 << 3
    while n:
        if n & 1:
            shift = _multmodp(_X2N[k & 31], shift)
        n >>= 1
        k += 1
    return (_multmodp(shift, crc1) ^ crc2) & 0xFFFFFFFF


def base_targets(base, members):
    """The targets of *members* (``target -> (source, lstat, data)`` as the packer collects them) that are the
    interpreter *base*'s own entries (see the module docstring: :meth:`InterpreterBase.owns`, and for a symlink the
    same target), sorted."""
    listing = base.listing()
    found = []
    for target, (source, st, data) in members.items():
        if data is not None or not base.owns(target, st):
            continue
        if stat.S_ISLNK(st.st_mode) and os.readlink(source) != listing[target].linkname:
            continue
        found.append(target)
    return sorted(found)


def part_key(base, targets, level, mtime):
    doc = {"format": FORMAT, "base": base.identity, "level": level, "mtime": mtime,
           "zlib": zlib.ZLIB_RUNTIME_VERSION, "members": hashlib.sha256("\n".join(targets).encode(
               "utf-8", "surrogateescape")).hexdigest()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class Part(NamedTuple):
    """A packed part of a base: *size* bytes of raw deflate data, the CRC-32 *crc* and length *tar_bytes* of the
    tar data they hold. The bytes are *data*, or (when None) the file *path*, trusted by its ``stat`` as recorded
    when it was stored; *file*: that file as it was opened and checked (copied from, then closed)."""

    crc: int
    tar_bytes: int
    size: int
    data: Optional[bytes] = None
    path: Optional[str] = None
    file: Optional[BinaryIO] = None

    def write_to(self, out) -> None:
        """Append the deflate bytes to the binary file *out* (at its position; a file copy stays in the kernel)."""
        if self.data is not None:
            out.write(self.data)
            return
        out.flush()
        with self.file or open(self.path, "rb") as f:  # type: ignore[arg-type]
            append_contents(f.fileno(), out.fileno(), self.size)



def _stat_id(st):
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def load_part(base, key):
    """The cached part *key* of *base* as a :class:`Part`, or None (missing or damaged).

    A part file that is still the one stored (inode, size and mtime as its record says: the cache's rule for its
    own entries, :mod:`poncho_wq.archive.cache`) is trusted without reading it (hashing 12 MB was 15-25 ms of
    every small build); another one is read and checked against the recorded sha256."""
    path = os.path.join(base.store, key[:32])
    try:
        with open(path + ".json", encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("key") != key:
            return None
        f = open(path + ".deflate", "rb")
        try:
            st = os.fstat(f.fileno())
            if meta.get("stat") == _stat_id(st) and st.st_size == meta.get("deflate_bytes"):
                # the very file checked is the one copied (kept open): the path may be removed or replaced before
                # the archive is written (a concurrent rm of the cache, a base found stale by another build)
                part, f = Part(meta["crc32"], meta["tar_bytes"], st.st_size, path=path + ".deflate", file=f), None
                return part
            data = f.read()
        finally:
            if f is not None:
                f.close()
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            log.warning("poncho: the packed interpreter part %s does not match its record; packing it again", path)
            return None
        if st.st_size == len(data) == meta.get("deflate_bytes"):
            # the file just hashed vouches for itself from now on: a record of an older version (no stat) or a
            # part file copied back (other inodes) is hashed once, not by every build (nothing stores a part found)
            _write_record(path, dict(meta, stat=_stat_id(st)))
        return Part(meta["crc32"], meta["tar_bytes"], len(data), data=data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_part(base, key, deflated, crc, tar_bytes, count):
    """Keep a part for the next build (atomically: the data renamed into place first, then its record, which
    holds the data file's ``stat``, so that a record never vouches for another file); a read-only cache only
    loses the saving."""
    path = os.path.join(base.store, key[:32])
    meta = {"key": key, "sha256": hashlib.sha256(deflated).hexdigest(), "crc32": crc, "tar_bytes": tar_bytes,
            "members": count, "deflate_bytes": len(deflated)}
    try:
        os.makedirs(base.store, exist_ok=True)
        tmp = "{}.deflate.tmp-{}".format(path, _writer())
        with open(tmp, "wb") as f:
            f.write(deflated)
            f.flush()
            meta["stat"] = _stat_id(os.fstat(f.fileno()))
        os.replace(tmp, path + ".deflate")
    except OSError as e:
        log.debug("poncho: cannot keep the packed interpreter part in %s: %s", base.store, e)
        return
    _write_record(path, meta)


def _writer():
    """This writer's part of a temporary name: the process and the thread (two builds of one manager may store the
    same part at once)."""
    return "{}-{}".format(os.getpid(), threading.get_ident())


def _write_record(path, meta):
    """Write the record of the part file *path* ``.deflate`` (atomically; a read-only cache only loses the saving)."""
    try:
        tmp = "{}.json.tmp-{}".format(path, _writer())
        with open(tmp, "wb") as f:
            f.write(json.dumps(meta, sort_keys=True).encode())
        os.replace(tmp, path + ".json")
    except OSError as e:
        log.debug("poncho: cannot write the record of the packed interpreter part %s: %s", path, e)
