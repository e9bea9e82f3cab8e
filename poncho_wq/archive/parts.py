"""Content-addressed parts of a packed environment, so that a changed environment ships only what changed.

Why (issue 28): one new import or one bumped pin makes a new ``env-<hash>.tar.gz`` that every worker receives and
unpacks whole, although the heavy distributions (numpy, pandas, ...) did not change. Here the packed tarball (the
single-tarball output stays as it is, for the CLI and other tools) is cut into parts, each named by the sha256 of
its uncompressed tar, so that two environments holding the very same distribution hold the very same part file,
which a worker's cache (Work Queue caches inputs by local path) receives and the run shim unpacks once:

* the environment's own part (first): ``poncho/`` metadata, ``bin/`` scripts, ``conda-meta/`` and anything no
  distribution or conda package owns: small, and different for every environment;
* the interpreter part: ``bin/python*``, ``lib/libpython*``, ``lib/pythonX.Y/`` but its ``site-packages``,
  ``include/pythonX.Y/``;
* one part per distribution whose files (its ``RECORD``; files under a top-level directory it owns, such as
  ``__pycache__`` entries written later, go with it; the other files of the conda package that installed it)
  add up to at least ``PONCHO_WQ_PART_MB`` MB (default 4); one per such conda package that installs no Python
  distribution (the files its ``conda-meta`` record lists: ``lib/libopenblas.so``);
* one group part for all the smaller distributions and conda packages.

Parts must not differ between environments for the same distribution, but conda-pack's archives keep the build
prefix (``<cache>/tmp/build-<key>/...``, different per environment) in the files its ``conda-unpack`` records
list. Each such file is stored in its part with that prefix replaced by a placeholder path of the same length
(binary records stay valid), and the own part's ``bin/conda-unpack`` names the placeholder instead, so the
worker's relocator rewrites placeholder -> final prefix as it rewrote the build prefix before. Console scripts
(which may hold the prefix) stay in the own part, so no distribution's ``RECORD`` row needs re-hashing.

Layout under the cache root: ``parts/part-<sha256[:32]>.tar.gz`` (reproducible gzip, read-only) and
``parts/env-<id>.parts.json`` (the index: the parts in order, own part first). The shim assembles an environment
from its parts by hard links into one prefix (docs/parts.md).
"""

import ast
import base64
import gzip
import hashlib
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from typing import Dict, List, NamedTuple, Optional

from ..errors import BuildError
from ..fsutil import atomic_output
from ..tools import PigzStream
from .pack import DEFAULT_COMPRESS_LEVEL

NAME_DIGITS = 32
PART_NAME = re.compile(r"^part-([0-9a-f]{32})\.tar\.gz$")
INDEX_NAME = re.compile(r"^(env-[0-9a-f]+)\.parts\.json$")
INDEX_FORMAT = 1

_SITE = re.compile(r"^lib/python\d+\.\d+/site-packages/")
_INTERPRETER = re.compile(r"^(bin/python[0-9.]*$|lib/libpython|lib/python\d+\.\d+/|include/python\d+\.\d+/)")
_BUILD_PREFIX = re.compile(r"/build-[0-9a-f]{32}(/|$)")
_PLACEHOLDER_STEM = "/poncho_wq_part_prefix"
_CONDA_RECORD = re.compile(r"^conda-meta/[^/]+\.json$")
_OWN_PREFIXES = ("conda-meta/", "poncho/", "bin/conda-unpack", "bin/activate", "bin/deactivate")


class Part(NamedTuple):
    """One part: its file ``name`` (``part-<hex>.tar.gz``), ``role`` (``env``, ``interpreter``, ``dist:<name>``
    or ``group``), ``path`` in the cache, unpacked ``bytes`` and number of ``members``."""

    name: str
    role: str
    path: str
    bytes: int
    members: int


def parts_dir(cache_dir: str) -> str:
    return os.path.join(os.path.abspath(cache_dir), "parts")


def index_path(cache_dir: str, env_id: str) -> str:
    return os.path.join(parts_dir(cache_dir), env_id + ".parts.json")


def placeholder_for(prefix: str) -> str:
    """A path of the same length as *prefix* that depends on nothing but that length (at least 2 characters)."""
    n = len(prefix)
    stem = _PLACEHOLDER_STEM
    if n <= len(stem):
        return stem[:n]
    return stem + "/" + "_" * (n - len(stem) - 1)


def load_index(cache_dir: str, env_id: str) -> Optional[List[Part]]:
    """The parts of environment *env_id* when its index and every part it lists are there, else None."""
    try:
        with open(index_path(cache_dir, env_id), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
        return None
    out = []
    for row in doc.get("parts", ()):
        path = os.path.join(parts_dir(cache_dir), row["name"])
        if not PART_NAME.match(row["name"]) or not os.path.isfile(path):
            return None
        out.append(Part(row["name"], row["role"], path, row["bytes"], row["members"]))
    return out or None


def indexed_part_names(cache_dir: str) -> Dict[str, List[str]]:
    """``{env id: [part names]}`` of every index under *cache_dir* (for ``cache list``/``prune``)."""
    out = {}
    d = parts_dir(cache_dir)
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for name in sorted(names):
        m = INDEX_NAME.match(name)
        if not m:
            continue
        try:
            with open(os.path.join(d, name), encoding="utf-8") as f:
                out[m.group(1)] = [row["name"] for row in json.load(f)["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def cut_parts(tarball: str, cache_dir: str, part_mb: float = 4.0, env_id: Optional[str] = None,
              use_pigz: Optional[bool] = None) -> List[Part]:
    """Cut the packed environment *tarball* into parts in ``<cache_dir>/parts/`` and write its index; return the
    parts in order (own part first). Reuses the index when it and its parts are there already.

    Each part's tar is written uncompressed to a temp file first and hashed: only a part not in the cache yet is
    then compressed (a bumped pin compresses the bumped distribution and the own part, not numpy again), by
    ``pigz -n -m`` when it is on PATH (``use_pigz=False``: never; threads of its own), else zlib. Same bytes for
    the same content either way (pigz's output does not depend on its thread count, zlib's is fixed by the
    level); pigz's bytes differ from zlib's, which only matters if one cache is filled from machines with and
    without pigz (a part's name is the hash of its uncompressed tar: the same)."""
    if env_id is None:
        env_id = os.path.basename(tarball)
        env_id = env_id[:-len(".tar.gz")] if env_id.endswith(".tar.gz") else env_id
    found = load_index(cache_dir, env_id)
    if found is not None:
        return found
    pigz = shutil.which("pigz") if use_pigz is not False else None
    owners, records, prefixes, rehash = _survey(tarball)
    sizes: Dict[str, int] = {}
    for name, (role, size) in owners.items():
        sizes[role] = sizes.get(role, 0) + size
    threshold = part_mb * 1e6
    role_of = {}
    for name, (role, _size) in owners.items():
        if role.startswith("dist:") and sizes[role] < threshold:
            role_of[name] = "group"
        else:
            role_of[name] = role
    out_dir = parts_dir(cache_dir)
    os.makedirs(out_dir, exist_ok=True)
    n_threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    writers: Dict[str, _PartWriter] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for info in tar:
                role = role_of.get(info.name, "env")
                w = writers.get(role)
                if w is None:
                    w = writers[role] = _PartWriter(out_dir, pigz, n_threads)
                data = None
                if info.isreg():
                    data = tar.extractfile(info).read()
                    if info.name in records or info.name == "bin/conda-unpack":
                        data = _replace(data, prefixes)
                    elif info.name.endswith(".dist-info/RECORD") and _SITE.match(info.name):
                        data = _rehash_record(info.name, data, rehash)
                w.add(info, data)
        names = {role: w.close_tar() for role, w in writers.items()}
        parts = [w.finish(role, names[role]) for role, w in writers.items()]
    except (OSError, tarfile.TarError, EOFError) as e:
        for w in writers.values():
            w.abort()
        raise BuildError("cannot cut {} into parts: {}".format(tarball, e))
    except BaseException:  # a failed pigz, an interruption: no compressor left running, no temp file left behind
        for w in writers.values():
            w.abort()
        raise
    order = {"env": 0, "interpreter": 1, "group": 3}
    parts.sort(key=lambda p: (order.get(p.role, 2), p.role))
    doc = {"format": INDEX_FORMAT, "env": env_id, "source": os.path.basename(tarball),
           "parts": [{"name": p.name, "role": p.role, "bytes": p.bytes, "members": p.members} for p in parts]}
    with atomic_output(index_path(cache_dir, env_id), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    return parts


def _survey(tarball):
    """First pass: ``({member: (role, size)}, {members with build-prefix records}, [build prefixes])``."""
    members = {}
    record_rows = {}
    unpack = None
    conda: Dict[str, List[str]] = {}  # conda package name -> the files its conda-meta record lists
    kept = {}  # console scripts and files that may hold the build prefix: their RECORD rows are re-hashed
    with tarfile.open(tarball, "r:gz") as tar:
        for info in tar:
            members[info.name] = info.size if info.isreg() else 0
            m = _SITE.match(info.name)
            if info.isreg() and m and info.name.endswith(".dist-info/RECORD") and \
                    info.name.count("/") == m.group(0).count("/") + 1:
                record_rows[info.name] = tar.extractfile(info).read().decode("utf-8", "replace")
            elif info.isreg() and info.name == "bin/conda-unpack":
                unpack = tar.extractfile(info).read()
            elif info.isreg() and _CONDA_RECORD.match(info.name):
                try:
                    rec = json.loads(tar.extractfile(info).read().decode("utf-8"))
                    conda[str(rec["name"])] = [str(f) for f in rec.get("files", ())]
                except (ValueError, KeyError, TypeError):
                    pass  # not a conda record we can read: its files stay in the own part
            elif info.isreg():
                data = tar.extractfile(info).read()
                if info.name.startswith("bin/") or b"/build-" in data:
                    kept[info.name] = data
    owner: Dict[str, str] = {}
    tops: Dict[str, set] = {}
    for record, text in sorted(record_rows.items()):
        site = _SITE.match(record).group(0)
        dist_info = record[len(site):].split("/", 1)[0]
        dist = "dist:" + dist_info[:-len(".dist-info")].split("-", 1)[0].lower().replace("_", "-")
        for line in text.splitlines():
            rel = line.rsplit(",", 2)[0].strip().strip('"')
            if not rel:
                continue
            path = posixpath.normpath(site + rel)
            if not path.startswith(site):
                continue  # console scripts (bin/) stay in the environment's own part
            if path in members and path not in owner:
                owner[path] = dist
                tops.setdefault(site + path[len(site):].split("/", 1)[0], set()).add(dist)
    conda_owner = _conda_owners(conda, owner, members)
    roles = {}
    for name, size in members.items():
        role = owner.get(name)
        if role is None:
            m = _SITE.match(name)
            if m:
                top = tops.get(m.group(0) + name[m.end():].split("/", 1)[0], ())
                if len(top) == 1 and "/" in name[m.end():]:
                    role = next(iter(top))
            elif _INTERPRETER.match(name):
                role = "interpreter"
        if role is None:
            role = conda_owner.get(name)
        roles[name] = (role or "env", size)
    records, prefixes = set(), set()
    if unpack is not None:
        for path, placeholder, _mode in _prefix_records(unpack):
            if _BUILD_PREFIX.search(placeholder):
                records.add(path)
                prefixes.add(placeholder)
    prefixes = sorted(prefixes, key=len, reverse=True)
    rehash = {name: _replace(data, prefixes) for name, data in kept.items()
              if name in records or not _SITE.match(name)}
    return roles, records, prefixes, rehash


def _conda_owners(conda, owner, members):
    """``{member: role}`` for the files conda packages own (their ``conda-meta/*.json`` records' ``files``) that
    no ``RECORD`` does: a conda environment's shared libraries outside ``site-packages`` (``lib/libopenblas.so``),
    its headers, its tools. A package that installs a Python distribution (its files include that distribution's
    files) puts them in that distribution's part (conda's ``numpy`` and its ``lib/`` files go together; conda's
    name may differ from pip's); ``python`` in the interpreter part; any other package in a part of its own
    (``dist:<name>``: one per large package, the group part for the small ones). The environment's own metadata
    (``conda-meta/``, ``poncho/``, conda-pack's ``bin/conda-unpack`` and activation scripts) stays in the own part."""
    out: Dict[str, str] = {}
    for name in sorted(conda):
        files = [posixpath.normpath(f) for f in conda[name]]
        if name == "python":
            role = "interpreter"
        else:
            dists = sorted({owner[f] for f in files if f in owner})
            role = dists[0] if len(dists) == 1 else "dist:" + name.lower().replace("_", "-")
        for f in files:
            if f in members and f not in owner and f not in out and not f.startswith(_OWN_PREFIXES):
                out[f] = role
    return out


def _replace(data, prefixes):
    for prefix in prefixes:
        data = data.replace(prefix.encode(), placeholder_for(prefix).encode())
    return data


def _rehash_record(record, data, rehash):
    """RECORD *data* with the rows of files whose stored bytes differ from what pip hashed re-hashed: files whose
    build prefix became the placeholder, console scripts (conda-pack rewrote their shebang, which named the build
    prefix): so equal distributions of two environments have equal RECORDs."""
    site = _SITE.match(record).group(0)
    out = []
    for line in data.decode("utf-8").split("\n"):
        cols = line.rsplit(",", 2)
        if len(cols) == 3 and cols[1]:
            path = posixpath.normpath(site + cols[0].strip('"'))
            new = rehash.get(path)
            if new is not None:
                digest = base64.urlsafe_b64encode(hashlib.sha256(new).digest()).rstrip(b"=").decode()
                line = "{},sha256={},{}".format(cols[0], digest, len(new))
        out.append(line)
    return "\n".join(out).encode("utf-8")


def _prefix_records(script):
    try:
        tree = ast.parse(script)
    except SyntaxError:
        return []
    recs = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "_prefix_records" for t in n.targets)]
    return recs[-1] if recs else []


class _Hashing:
    """A write-only stream that hashes what tarfile writes and passes it on."""

    def __init__(self, out):
        self.out = out
        self.sha = hashlib.sha256()

    def write(self, data):
        self.sha.update(data)
        self.out.write(data)
        return len(data)


class _PartWriter:
    """One part being written: a plain tar stream (members in the source tarball's order, their headers as they
    were) into a temp file, hashed on the way; at the end it is compressed into a reproducible gzip file (no name,
    no time) renamed to its content name, unless a part of that name is there already. So a part that another
    environment has (the unchanged numpy of a bumped pin) costs a write of its tar and no compression, the bulk of
    the cut's time. Compression: ``pigz -c -n -m`` (threads of its own) with *pigz* (its path), else zlib."""

    def __init__(self, out_dir, pigz=None, n_threads=1):
        self.out_dir = out_dir
        self.pigz = pigz
        self.n_threads = n_threads
        self.gz_tmp = None
        self.gz = None
        fd, self.tmp = tempfile.mkstemp(prefix=".part-", suffix=".tar.tmp", dir=out_dir)
        self.raw = os.fdopen(fd, "wb")
        self.hashing = _Hashing(self.raw)
        self.tar = tarfile.open(fileobj=self.hashing, mode="w|", format=tarfile.PAX_FORMAT)
        self.bytes = 0
        self.members = 0

    def add(self, info, data):
        info = _copy_info(info)
        if data is not None:
            info.size = len(data)
            self.tar.addfile(info, _BytesReader(data))
            self.bytes += len(data)
        else:
            self.tar.addfile(info)
        self.members += 1

    def close_tar(self):
        """Close the tar stream and return the part's name (its content's)."""
        self.tar.close()
        self.raw.close()
        return "part-{}.tar.gz".format(self.hashing.sha.hexdigest()[:NAME_DIGITS])

    def finish(self, role, name):
        path = os.path.join(self.out_dir, name)
        if not os.path.isfile(path):  # else the same content, published before (by this or another environment)
            fd, self.gz_tmp = tempfile.mkstemp(prefix=".part-", suffix=".tmp", dir=self.out_dir)
            with os.fdopen(fd, "wb") as raw:
                if self.pigz:
                    self.gz = PigzStream(self.pigz, raw, DEFAULT_COMPRESS_LEVEL, self.n_threads)
                else:
                    self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                            compresslevel=DEFAULT_COMPRESS_LEVEL, mtime=0)
                with open(self.tmp, "rb") as src:
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        self.gz.write(chunk)
                self.gz.close()
            os.chmod(self.gz_tmp, 0o444)
            os.replace(self.gz_tmp, path)
            self.gz_tmp = None
        os.unlink(self.tmp)
        return Part(name, role, path, self.bytes, self.members)

    def abort(self):
        if isinstance(self.gz, PigzStream):
            self.gz.abort()
        for f in (self.tar, self.raw, self.gz):
            try:
                if f is not None:
                    f.close()
            except Exception:  # noqa: BLE001 - cleaning up after the real error
                pass
        for tmp in (self.tmp, self.gz_tmp):
            try:
                if tmp:
                    os.unlink(tmp)
            except OSError:
                pass


def _copy_info(info):
    new = tarfile.TarInfo(info.name)
    for attr in ("mode", "uid", "gid", "mtime", "type", "linkname", "uname", "gname", "size"):
        setattr(new, attr, getattr(info, attr))
    new.pax_headers = {}
    return new


class _BytesReader:
    def __init__(self, data):
        self.data = memoryview(data)
        self.pos = 0

    def read(self, n=-1):
        if n is None or n < 0:
            n = len(self.data) - self.pos
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return bytes(chunk)
