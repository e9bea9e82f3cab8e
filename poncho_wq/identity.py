"""What a file or a tree *is*, for memos and cache keys: one home for stat keys, file digests and tree digests.

Why one module: the same questions ("has this file changed since I last looked?", "what are its bytes?", "what
is this project directory's content?") were answered in five places, each with its own stat tuple and its own
sha256 loop, and the cache key reached into the code-layer module for a private digest. Here:

* :func:`stat_key` / :func:`file_identity`: what changes whenever a file is written, replaced or chmod'ed (ctime
  too: a same-size edit within one mtime tick still changes it), or ``None`` when it is gone;
* :func:`sha256_file`: the bytes' digest, read in 1 MiB blocks;
* :func:`file_digest`: ``(sha256, executable?)``, memoized by :func:`file_identity`, so an unchanged file is
  never read twice in a process and an edited one always is (the memo is registered with
  :func:`poncho_wq.clear_caches`);
* :func:`tree_digest`: the content of a directory tree (relative paths, modes, bytes, symlink targets), without
  the directories that building a project writes into it; the one tree digest (a project's build key, a local
  ``file://`` requirement's part of the cache key); :func:`local_project_digests` uses it;
* :func:`set_content_mtime`: the modification time of a published content-named tarball, derived from its
  content, so that a rebuild with the same bytes is the same file to TaskVine.
"""

import hashlib
import os
import stat
import threading
import time
from typing import Dict, Iterable, Optional, Tuple
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement

from .config import DEFAULT_MTIME
from .errors import PonchoError
from .fsutil import TOOL_STATE_DIRS
from .memo import register

_lock = threading.Lock()
#: sha256 hex of a file's bytes, by (absolute path, device, inode, size, mtime_ns, ctime_ns): any write to the
#: file changes mtime/ctime, so an edited file is read again and an unchanged one never.
_digests: Dict[tuple, str] = {}
register(_digests.clear)


def stat_key(path) -> Optional[tuple]:
    """What changes when *path* (a file or a directory) is written, replaced or removed; None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _identity(st, path):
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_identity(path) -> Optional[tuple]:
    """What changes whenever the file at *path* is written, replaced or chmod'ed; None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _identity(st, os.path.abspath(path))


def sha256_file(path) -> str:
    """The sha256 hex digest of the file *path* (read in 1 MiB blocks; ~1 GB/s here)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_mtime(hexdigest) -> int:
    """The modification time (whole seconds) of a published tarball whose content has the digest *hexdigest*:
    2000-01-01 (the archives' member mtime, ``DEFAULT_MTIME``) plus the digest's first 24 bits in seconds (within
    about 194 days), so that the same bytes always get the same time and other bytes almost always another."""
    return DEFAULT_MTIME + int(hexdigest[:6], 16)


def set_content_mtime(target, hexdigest) -> None:
    """Give the file *target* (a path or an open descriptor, written and flushed) the modification time
    :func:`content_mtime` and the access time now.

    Why (issue 27): TaskVine 7.17.1 names a file declared at the workflow level, as content-named tarballs are
    (``poncho_wq.taskvine._tarball_cache``), by its path, size and mtime (``vine_meta_name``), and the unpacked
    environment the workers keep ("forever") by a digest of the unpack mini task, that name included. A build
    cache entry rebuilt with the same bytes (after ``cache prune`` or ``rm``) got a new mtime, so a new name: the
    manager sent the tarball again and every worker unpacked it again. The binding takes no cache name of ours;
    its only content naming, at the "worker" level and above, reads the whole file (md5) in every manager process:
    0.55 s for 50 MB on this machine, at each workflow's start, against a re-send only after a rebuild.
    The access time is the publish time: the build cache's last use (the later of atime and mtime,
    ``poncho_wq.archive.cache``) is then what it was with the publish time as mtime, and later reads still count
    (relatime: reads update an atime not later than the ctime, then daily)."""
    os.utime(target, ns=(time.time_ns(), content_mtime(hexdigest) * 10**9))


def file_digest(path) -> Tuple[str, bool]:
    """``(sha256 hex, executable?)`` of the regular file *path*, read only when its stat changed."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise PonchoError("{} is not a regular file: a code layer ships files only".format(path))
    ident = _identity(st, path)
    with _lock:
        known = _digests.get(ident)
    if known is None:
        known = sha256_file(path)
        with _lock:
            _digests[ident] = known
    return known, bool(st.st_mode & 0o111)


_PROJECT_SKIP = TOOL_STATE_DIRS | {".venv"}
_PROJECT_SKIP_TOP = {"build", "dist"}


def local_project_digests(spec) -> Dict[str, str]:
    """{requirement: sha256 of its content} for the spec's pip requirements that name a local path
    (``name @ file:///dir`` or a wheel/sdist file): the cache key holds these, so an edited project is a new
    environment and an unchanged one a cache hit (the URL alone named the old build after an edit).

    A directory's digest covers every file's relative path, mode and bytes (stat-memoized: unchanged files are
    not read again), without version-control and tool directories, ``*.egg-info`` and top-level ``build/`` and
    ``dist/`` (what building the project writes into it, which would otherwise change the key once per build)."""
    out = {}
    for text in getattr(spec, "pip", ()) or ():
        try:
            url = Requirement(text).url
        except InvalidRequirement:
            continue
        if not url or not url.startswith("file:"):
            continue
        path = unquote(urlparse(url).path)
        if os.path.isfile(path):
            out[text] = file_digest(path)[0]
        elif os.path.isdir(path):
            out[text] = tree_digest(path)
        else:
            raise PonchoError("the spec names {} but {} does not exist".format(text, path))
    return out


def tree_digest(root, files: Optional[Iterable[Tuple[str, str]]] = None, follow_links: bool = False) -> str:
    """sha256 over a directory tree's files: each one's relative path, executable bit and bytes (the bytes'
    digest from :func:`file_digest`, so an unchanged file is not read again), in walk order.

    *files*: ``(relative path, file)`` pairs to digest (in the order given), when the caller has already chosen the tree's files (a
    project's sources: the list that is copied and the list that is keyed must be one); *root* is then only named.
    Otherwise the tree under *root* is walked, without version-control and tool directories, ``.venv``,
    ``*.egg-info``, top-level ``build/`` and ``dist/`` and bytecode. *follow_links*: a symbolic link counts as
    what it points to (a directory link is walked, once: a link back to a parent is left out); by default a link
    counts as its target's text, and dangling links too."""
    h = hashlib.sha256()
    for rel, path, link in (_listed(files) if files is not None else _walk(root, follow_links)):
        if link is not None:
            h.update("L{}\0{}\n".format(rel, link).encode())
        else:
            digest, executable = file_digest(path)
            h.update("{}\0{}\0{}\n".format(rel, int(executable), digest).encode())
    return h.hexdigest()


def _listed(files):
    for rel, path in files:
        yield rel, path, None


def _walk(root, follow_links):
    """``(relative path, path, link target or None)`` of the files under *root*, in :func:`tree_digest`'s order."""
    chains = {root: frozenset([os.path.realpath(root)])}
    for d, dirnames, filenames in os.walk(root, followlinks=follow_links):
        top = os.path.samefile(d, root)
        chain = chains.pop(d, frozenset())
        dirnames[:] = sorted(n for n in dirnames if n not in _PROJECT_SKIP and not n.endswith(".egg-info")
                             and not (top and n in _PROJECT_SKIP_TOP)
                             and not (follow_links and os.path.realpath(os.path.join(d, n)) in chain))
        for n in dirnames:
            chains[os.path.join(d, n)] = chain | {os.path.realpath(os.path.join(d, n))}
        for fn in sorted(filenames):
            if fn.endswith((".pyc", ".pyo")):
                continue
            p = os.path.join(d, fn)
            rel = os.path.relpath(p, root)
            if os.path.islink(p) and not follow_links:
                yield rel, p, os.readlink(p)
            elif os.path.isfile(p):
                yield rel, p, None
