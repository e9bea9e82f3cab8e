"""The content-addressed build cache: one packed tarball per environment key, built once, shared by processes.

Layout under the cache root (``$PONCHO_WQ_CACHE``, else ``$XDG_CACHE_HOME/poncho_wq``, else
``~/.cache/poncho_wq``)::

    envs/env-<key[:32]>.tar.gz   the published tarball, read-only (0444); with sound metadata it *is* the entry
    envs/env-<key[:32]>.json     metadata: key, spec, engine, created, size, sha256, inode, mtime_ns, mode, seconds
    locks/<key[:32]>.lock        filelock per key
    tmp/build-<key[:32]>/        scratch of the build in progress (prefix + unfinished tarball)
    builds.log                   one JSON line per completed build (audit trail; tests count builds with it)
    code/code-<hash>.tar.gz      code layers (:mod:`poncho_wq.assemble.layers`), content-named, read-only
    code/files/<sha>/<name>      content-named copies of the scripts commands name
    parts/part-<hash>.tar.gz     environment parts (PONCHO_WQ_PARTS, :mod:`poncho_wq.archive.parts`), read-only
    parts/env-<id>.parts.json    per environment: its parts in order (a part an index lists is never pruned)
    interpreters/, bytecode/,    interpreter bases, the pyc cache, downloaded wheels, analysis memos: inputs of
    wheels/, projects/, analyze/ builds (projects/: built project wheels), reported by ``cache list`` and safe to delete when no build runs

``cache prune`` removes environments and code layers/script copies (by last use: the later of atime and mtime,
so an entry read for a task within the last day - relatime - is not "old"), never the build inputs above: a
build running meanwhile may be reading them. A published tarball's mtime is derived from its content and its atime
is the publish time (:func:`poncho_wq.identity.set_content_mtime`: a same-content rebuild is the same file to
TaskVine), so its last use is the publish time or a later read.

The key is a sha256 hex digest (see :func:`poncho_wq.engines.cache_key`); the first 32 hex digits (128 bits) name the
file. The run shim takes the environment's id from that name without reading the file, so a name is never reused
for different content: a name is only ever published by renaming a finished tarball built for that key.

Why each step of :meth:`Cache.build` is there (the pex ``atomic_directory`` recipe):

1. Look for the tarball without locking and check it (:meth:`Cache.verify`): metadata present, size as published,
   still read-only, and the very file that was published (inode and mtime as recorded) or else one whose sha256
   is the published one. A hit costs a ``stat`` and a small JSON read; a file that is not the published one costs
   one read of it to hash (once per process).
2. Take the key's lock (``filelock.FileLock`` = ``flock``; the kernel releases it when a holder dies, even by
   SIGKILL, so a crashed build never blocks later ones).
3. Look again: another process may have published while we waited; then we reuse its result (one build for
   two concurrent requests).
4. An entry that failed the check is damaged (overwritten in place, truncated, made writable, metadata lost): it
   is removed and rebuilt - the archives are reproducible, so the name keeps standing for the same bytes.
   Remove ``tmp/build-<key>`` if present: we hold the lock, so it can only be the leftover of a dead build.
   The scratch path is fixed per key (not random) so that the build prefix path - which ends up in the
   tarball's ``conda-unpack`` records - is the same for every build of a key, one step towards reproducible
   archives.
5. Build into the scratch directory, hash it, make it read-only, write the metadata, then publish the tarball by
   ``os.replace`` (atomic). A build killed before the rename leaves only scratch, which no lookup ever reads and
   the next build (of any key) removes when its owner's lock is free.

Why entries are checked at all: the tarball is served to every later task under the same ``env-<hash>`` name,
which workers trust without reading the file. Outputs were once hard links to the entry, so ``echo x > out.tar.gz``
poisoned it; outputs are copies now (:func:`poncho_wq.fsutil.place_copy`), entries are read-only, and whatever
still goes wrong (root writing into the cache, a full disk truncating a copy, a crash) is caught by the check.
"""

import collections
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time

from ..config import settings
from ..errors import BuildError, PonchoError
from ..fsutil import atomic_output, remove_later, remove_old_trash
from ..identity import file_digest, file_identity, set_content_mtime, sha256_file
from ..memo import register

# poncho_wq.archive.parts (which loads the packer, poncho_wq.archive.pack) is imported by the methods that list or
# prune parts (tests/test_structure.py, LAZY_INTERNAL): a task submission reads this module's content_digest,
# default_cache_dir and content_copy, and must not load the packer for them (issue 27).

log = logging.getLogger(__name__)

NAME_DIGITS = 32

Entry = collections.namedtuple("Entry", "key path size mtime summary floor")
#: The stores under the root that hold build inputs (reported by :meth:`Cache.stores`, never pruned).
INPUT_STORES = ("interpreters", "bytecode", "wheels", "projects", "analyze")

#: sha256 of cache files already checked by this process, by file identity (path, device, inode, size, mtime,
#: ctime): any write, chmod or rename changes ctime, so a changed file is hashed again.
_digests: dict = {}
register(_digests.clear)


def content_digest(path):
    """The sha256 of the file *path*: from the cache's metadata when *path* is a published entry that is still the
    very file that was hashed at build time (inode, mtime and size as recorded beside it), else hashed, once per
    process while the file is unchanged."""
    ident = file_identity(path)
    if ident is None:
        raise FileNotFoundError(path)
    known = _digests.get(ident)
    if known:
        return known
    if path.endswith(".tar.gz"):
        try:
            with open(path[:-len(".tar.gz")] + ".json", encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            meta = {}
        if isinstance(meta, dict) and (meta.get("inode"), meta.get("mtime_ns"), meta.get("size")) == \
                (ident[2], ident[4], ident[3]) and isinstance(meta.get("sha256"), str):
            _digests[ident] = meta["sha256"]
            return meta["sha256"]
    digest = sha256_file(path)
    if file_identity(path) == ident:  # not replaced while we read it
        _digests[ident] = digest
    return digest


def default_cache_dir():
    """``$PONCHO_WQ_CACHE``, else ``$XDG_CACHE_HOME/poncho_wq``, else ``~/.cache/poncho_wq`` (see
    :attr:`poncho_wq.config.Settings.cache_dir`)."""
    return settings().cache_dir


def content_copy(source, cache_dir=None):
    """A read-only copy of *source* at ``<cache>/code/files/<sha256[:32]>/<basename>``: a path that changes when
    the content does (a script attached by its own path would be served stale from Work Queue's cache)."""
    digest, executable = file_digest(os.path.abspath(source))
    root = os.path.join(os.path.abspath(cache_dir or default_cache_dir()), "code", "files", digest[:NAME_DIGITS])
    out = os.path.join(root, os.path.basename(source))
    if os.path.isfile(out):
        return out
    os.makedirs(root, exist_ok=True)
    # Streamed, not read whole: files= and a project's data_files can be models of hundreds of MB.
    h = hashlib.sha256()
    with open(source, "rb") as f, atomic_output(out, "wb", file_mode=0o555 if executable else 0o444) as o:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            o.write(block)
        if h.hexdigest() != digest:
            raise PonchoError("{} changed while it was being copied; submit the task again".format(source))
    return out


def tarball_name(key):
    """``env-<key[:32]>.tar.gz``: the name the run shim reads the environment id from."""
    return "env-{}.tar.gz".format(key[:NAME_DIGITS])


class Cache:
    """A build cache rooted at *root* (default: :func:`default_cache_dir`)."""

    def __init__(self, root=None):
        self.root = os.path.abspath(root or default_cache_dir())
        self.envs = os.path.join(self.root, "envs")
        self.locks = os.path.join(self.root, "locks")
        self.tmp = os.path.join(self.root, "tmp")
        self.log_path = os.path.join(self.root, "builds.log")
        self.code = os.path.join(self.root, "code")

    def path_for(self, key):
        return os.path.join(self.envs, tarball_name(key))

    def meta_path(self, key):
        return os.path.join(self.envs, "env-{}.json".format(key[:NAME_DIGITS]))

    def scratch_for(self, key):
        return os.path.join(self.tmp, "build-" + key[:NAME_DIGITS])

    def get(self, key):
        """Path of the published tarball for *key* when it passes the cheap checks of :meth:`verify`, else None."""
        return self.verify(key)[0]

    def verify(self, key, digest=False, force_digest=False):
        """Check the entry for *key*: ``(path, None)`` when sound, ``(None, None)`` when there is no entry,
        ``(None, reason)`` when it is damaged.

        Always (one ``stat``, one small JSON read): the metadata names the key, a size and a sha256; the file has
        that size and the mode it was published with (0444). With *digest*, also its content: a file that still
        has the inode and mtime recorded when it was published is the file that was hashed then (any write
        changes the mtime, any replacement the inode); any other file - copied, restored from a backup, touched -
        is hashed and compared with the published sha256 (once per process while it is unchanged).
        *force_digest* hashes it anyway.
        """
        path = self.path_for(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None, None
        meta = self.read_meta(key)
        if meta.get("key") != key or not isinstance(meta.get("size"), int) or not meta.get("sha256"):
            # (Entries published before the metadata held a sha256 land here too: rebuilt once.)
            return None, "its metadata {} is missing or incomplete".format(self.meta_path(key))
        if st.st_size != meta["size"]:
            return None, "it has {} bytes, {} were published".format(st.st_size, meta["size"])
        # Compared with the mode recorded at publication rather than 0444: on a file system that ignores chmod
        # (CIFS, vfat) the entry stays writable, and a fixed rule would rebuild it on every hit.
        if st.st_mode & 0o7777 != meta.get("mode", 0o444):
            return None, "its mode is {:o}, it was published read-only ({:o})".format(st.st_mode & 0o7777,
                                                                                      meta.get("mode", 0o444))
        published = (meta.get("inode"), meta.get("mtime_ns")) == (st.st_ino, st.st_mtime_ns)
        if force_digest or (digest and not published):
            ident = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            actual = _digests.get(ident)
            if actual is None:
                actual = sha256_file(path)
                if file_identity(path) == ident:  # not replaced while we read it
                    _digests[ident] = actual
            if actual != meta["sha256"]:
                return None, "its sha256 is {}, {} was published".format(actual[:16], meta["sha256"][:16])
        return path, None

    def _lock(self, key):
        from filelock import FileLock

        os.makedirs(self.locks, exist_ok=True)
        return FileLock(os.path.join(self.locks, key[:NAME_DIGITS] + ".lock"))

    def build(self, key, builder, meta=None, verify_digest=False):
        """Return ``(path, hit)``: the tarball for *key*, building it with ``builder(tmp_output)`` if needed.

        *builder* must write the finished tarball to *tmp_output*; it may use the directory holding
        *tmp_output* as scratch (removed afterwards). Exceptions from *builder* propagate; nothing is published.
        A damaged entry (see :meth:`verify`; *verify_digest* adds the sha256 comparison) is rebuilt.
        """
        path, problem = self.verify(key, verify_digest)
        if path:
            return path, True
        self._remove_dead_scratch()
        with self._lock(key):
            path, problem = self.verify(key, verify_digest)
            if path:
                log.debug("%s was built by another process while we waited", path)
                return path, True
            if problem:
                log.warning("poncho: cache entry %s is damaged (%s); rebuilding it", self.path_for(key), problem)
                self._unlink_entry(key)
            scratch = self.scratch_for(key)
            if os.path.lexists(scratch):
                log.info("poncho: removing the leftovers of an interrupted build: %s", scratch)
                shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch)
            os.makedirs(self.envs, exist_ok=True)
            start = time.monotonic()
            built = False
            try:
                tmp_output = os.path.join(scratch, tarball_name(key))
                builder(tmp_output)
                if not os.path.isfile(tmp_output):
                    raise BuildError("the builder did not produce {}".format(tmp_output))
                seconds = time.monotonic() - start
                size = os.path.getsize(tmp_output)
                record = dict(meta or {}, key=key, created=time.time(), size=size, sha256=sha256_file(tmp_output),
                              seconds=round(seconds, 3))
                # Read-only, so that no one overwrites the entry by accident (root still can: verify() checks).
                os.chmod(tmp_output, 0o444)
                # The same bytes, the same mtime: a same-content rebuild is the same file to TaskVine's workers.
                set_content_mtime(tmp_output, record["sha256"])
                st = os.stat(tmp_output)  # the rename below keeps both: verify() can skip hashing this very file
                record.update(inode=st.st_ino, mtime_ns=st.st_mtime_ns, mode=st.st_mode & 0o7777)
                with atomic_output(self.meta_path(key)) as f:
                    json.dump(record, f, indent=1, sort_keys=True)
                path = self.path_for(key)
                os.replace(tmp_output, path)
                self._log_build(record)
                built = True
            finally:
                # The entry is published: the scratch (the build's prefix, thousands of files) goes in the
                # background. A failed build's goes now: nothing of it is left when the error is reported.
                if built:
                    remove_later(scratch)
                else:
                    shutil.rmtree(scratch, ignore_errors=True)
            return path, False

    def _unlink_entry(self, key):
        """Remove the tarball and metadata of *key*; the caller holds the key's lock."""
        for path in (self.path_for(key), self.meta_path(key)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _log_build(self, record):
        line = json.dumps({"key": record["key"], "pid": os.getpid(), "time": record["created"],
                           "seconds": record["seconds"], "size": record["size"]}) + "\n"
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())  # one O_APPEND write: lines of concurrent builders never interleave
        finally:
            os.close(fd)

    def read_meta(self, key):
        try:
            with open(self.meta_path(key), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def entries(self):
        """All published entries, oldest first."""
        out = []
        if not os.path.isdir(self.envs):
            return out
        for name in sorted(os.listdir(self.envs)):
            if not (name.startswith("env-") and name.endswith(".tar.gz")):
                continue
            short = name[len("env-"):-len(".tar.gz")]
            path = os.path.join(self.envs, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            meta = self.read_meta(short)
            out.append(Entry(meta.get("key", short), path, st.st_size, _last_use(st),
                             meta.get("summary", ""), meta.get("floor")))
        out.sort(key=lambda e: e.mtime)
        return out

    def layer_entries(self):
        """Code layers (key ``code-<hash>``), script copies (key ``file-<sha>``) and environment parts (key
        ``part-<hash>``, :mod:`poncho_wq.archive.parts`), least recently used first."""
        from .parts import PART_NAME, indexed_part_names, parts_dir

        out = []
        for name in _listdir(self.code):
            path = os.path.join(self.code, name)
            if name.startswith("code-") and name.endswith(".tar.gz"):
                st = _stat(path)
                if st is not None:
                    out.append(Entry(name[:-len(".tar.gz")], path, st.st_size, _last_use(st), "code layer", None))
        files = os.path.join(self.code, "files")
        for digest in _listdir(files):
            folder = os.path.join(files, digest)
            for name in _listdir(folder):
                st = _stat(os.path.join(folder, name))
                if st is not None:
                    out.append(Entry("file-" + digest, folder, st.st_size, _last_use(st), "script copy " + name, None))
        counts: dict = {}
        for names in indexed_part_names(self.root).values():
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        for name in _listdir(parts_dir(self.root)):
            if PART_NAME.match(name):
                st = _stat(os.path.join(parts_dir(self.root), name))
                if st is not None:
                    n = counts.get(name, 0)
                    out.append(Entry(name[:-len(".tar.gz")], os.path.join(parts_dir(self.root), name), st.st_size,
                                     _last_use(st), "part of {} environment{}".format(n, "" if n == 1 else "s"),
                                     None))
        out.sort(key=lambda e: e.mtime)
        return out

    def stores(self):
        """``{name: (files, bytes)}`` of the build-input stores (:data:`INPUT_STORES`) that exist."""
        out = {}
        for name in INPUT_STORES:
            top = os.path.join(self.root, name)
            if not os.path.isdir(top):
                continue
            count = size = 0
            for folder, _dirs, names in os.walk(top):
                for n in names:
                    st = _stat(os.path.join(folder, n), follow=False)
                    if st is not None:
                        count += 1
                        size += st.st_size
            out[name] = (count, size)
        return out

    def find(self, key_prefix):
        """The one entry whose key starts with *key_prefix*; PonchoError when none or several match."""
        layer = key_prefix.startswith(("code-", "file-", "part-"))
        matches = [e for e in (self.layer_entries() if layer else self.entries())
                   if e.key.startswith(key_prefix.lower())]
        if not matches:
            raise PonchoError("no cache entry matches {!r} in {}".format(key_prefix, self.envs))
        if len(matches) > 1:
            raise PonchoError("{!r} matches {} cache entries; give more digits".format(key_prefix, len(matches)))
        return matches[0]

    def remove(self, key):
        """Remove the entry for *key* (a full key or a unique prefix of one, >= 4 digits); return its Entry."""
        if len(key) < 4:
            raise PonchoError("give at least 4 digits of the key to remove, e.g. from `cache list`")
        entry = self.find(key)
        with self._writing("remove {}".format(entry.path)):
            return self._remove_entry(entry)

    @contextlib.contextmanager
    def _writing(self, what):
        """Turn an OSError of a change to the cache (a read-only or foreign cache) into one BuildError line."""
        try:
            yield
        except OSError as e:
            raise BuildError("cannot {} in the cache {}: {}; removing entries needs write access to it (or use "
                             "--cache-dir / PONCHO_WQ_CACHE for a cache of yours)".format(
                                 what, self.root, e.strerror or e)) from None

    def prune(self, max_bytes=None, max_age_seconds=None, dry_run=False):
        """Remove environments and code layers/script copies unused for more than *max_age_seconds*, then the
        least recently used until their total is <= *max_bytes*.

        Also removes scratch directories of dead builds (their key's lock is free). Returns the removed Entries;
        with *dry_run*, the Entries it would remove, removing nothing.
        """
        if dry_run:
            return self._to_prune(max_bytes, max_age_seconds)
        with self._writing("prune entries"):
            removed = [self._remove_entry(e) for e in self._to_prune(max_bytes, max_age_seconds)]
            self._remove_dead_scratch()
            return removed

    def _to_prune(self, max_bytes, max_age_seconds):
        """The entries a prune removes, in the order it removes them: too old ones, then the least recently used
        until the rest fits *max_bytes*."""
        from .parts import indexed_part_names

        now = time.time()
        chosen, kept = [], []
        # A part an index lists is never a candidate: it goes only with the last environment that lists it.
        listed = indexed_part_names(self.root)
        in_use = {name for names in listed.values() for name in names}
        entries = self.entries() + self.layer_entries()
        parts = [e for e in entries if e.key.startswith("part-")]
        candidates = [e for e in entries if not e.key.startswith("part-")]
        candidates += [e for e in parts if e.key + ".tar.gz" not in in_use]
        for e in sorted(candidates, key=lambda e: e.mtime):
            (chosen if max_age_seconds is not None and now - e.mtime > max_age_seconds else kept).append(e)
        if max_bytes is not None:
            total = sum(e.size for e in kept)
            for e in kept:
                if total <= max_bytes:
                    break
                chosen.append(e)
                total -= e.size
        gone = {"env-" + e.key[:NAME_DIGITS] for e in chosen if not e.key.startswith(("code-", "file-", "part-"))}
        still = {name for env_id, names in listed.items() if env_id not in gone for name in names}
        chosen += [e for e in parts if e.key + ".tar.gz" in in_use and e.key + ".tar.gz" not in still]
        return chosen

    def _remove_entry(self, entry):
        from .parts import index_path

        if entry.key.startswith(("code-", "part-")):
            _unlink(entry.path)
        elif entry.key.startswith("file-"):
            shutil.rmtree(entry.path, onerror=_missing_is_removed)
        else:
            with self._lock(entry.key):
                self._unlink_entry(entry.key)
            _unlink(index_path(self.root, "env-" + entry.key[:NAME_DIGITS]))
        return entry

    def _remove_dead_scratch(self):
        """Remove the scratch of builds that died (their key's lock is free): called before every build, so what
        a SIGKILLed build of any key left is gone by the next build, not only the next build of that key."""
        from filelock import Timeout

        if not os.path.isdir(self.tmp):
            return
        remove_old_trash(self.tmp)
        for name in os.listdir(self.tmp):
            if not name.startswith("build-"):
                continue
            try:
                with self._lock(name[len("build-"):]).acquire(timeout=0):
                    log.info("poncho: removing the leftovers of an interrupted build: %s", os.path.join(self.tmp, name))
                    shutil.rmtree(os.path.join(self.tmp, name), ignore_errors=True)
            except Timeout:
                pass  # a build is running


def _last_use(st):
    """When a cache file was last used: reads update atime (at most daily under relatime; never under noatime,
    where this is the mtime)."""
    return max(st.st_atime, st.st_mtime)


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _stat(path, follow=True):
    try:
        return os.stat(path, follow_symlinks=follow)
    except OSError:
        return None


def _missing_is_removed(_func, _path, exc_info):
    """``rmtree`` onerror: a file already gone (another prune) is fine; any other error is raised."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
