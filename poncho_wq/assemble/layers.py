"""Code layers: the user's own code, packed apart from the base environment and keyed by its content.

Why: a task environment is a *base* (interpreter + third-party distributions, keyed by exact versions and the
builder) and the user's *code* (local modules, editable and local distributions). The base is large and changes
rarely; the code is small and changes at every edit. Packing both into one tarball made every edit a rebuild and
a re-send of the base; attaching local files one by one under their own paths let Work Queue, which caches
inputs by *local path*, run the old bytes after an edit ("Task will be executed with an older version").

A code layer is one deterministic tarball, ``code-<hash>.tar.gz``, where the hash is sha256 over every member's
relative path, mode and content. It lives in the build cache under that name (``<cache>/code/``), so a changed
file gives a new path and any path-keyed cache (Work Queue's) sees a new file, while an unchanged tree gives the
very same path (a cache hit, nothing re-sent). Its layout, stacked by the run shim on top of the base::

    lib/                on sys.path (PYTHONPATH) ahead of the base's site-packages: local modules under the
                        paths the scripts import them by, the import packages of local/editable distributions
                        and their ``.dist-info`` (metadata, entry points; no RECORD, no direct_url.json)
    bin/                console scripts of those distributions (``#!/usr/bin/env python3``: the base's python)

Files are hashed once per process while their stat (inode, size, mtime, ctime) is unchanged, so checking a tree
of 200 unchanged modules costs 200 ``stat`` calls, and an edit re-reads only the edited file.
"""

import hashlib
import json
import logging
import os
import re
import tarfile
import tempfile
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..analysis.analyzer import MANAGER_ONLY
from ..analysis.installation import installation
from ..archive.cache import content_copy, default_cache_dir  # content_copy: re-exported
from ..archive.pack import DEFAULT_COMPRESS_LEVEL, _compress, _DeterministicTar
from ..engines.current import _editable_entries, _installed_entries, rewrite_shebang
from ..errors import PonchoError
from ..fsutil import atomic_output
from ..identity import file_digest, file_identity, set_content_mtime, stat_key
from ..memo import register
from ..shim import run_in_layer_path

log = logging.getLogger(__name__)

NAME_DIGITS = 32
CODE_NAME = re.compile(r"^code-([0-9a-f]{32})\.tar\.gz$")

_lock = threading.Lock()
#: Published layers known to be sound, by path: the file identity seen when this process published or checked it.
_published: Dict[str, tuple] = {}
#: distribution_members() results by (names, python), with the stat keys of every directory they were listed from
#: and of each RECORD: a file added to or removed from an editable's tree changes its directory's mtime.
_dist_members: Dict[tuple, tuple] = {}
register(_published.clear)
register(_dist_members.clear)


class CodeLayer:
    """A planned code layer: ``members`` = sorted ``(arcname, source path)``; :meth:`build` packs it (cached)."""

    def __init__(self, members: Sequence[Tuple[str, str]]):
        self.members = tuple(sorted(members))
        self._hash: Optional[str] = None
        self._manifest: Optional[tuple] = None

    def manifest(self):
        """``((arcname, mode, sha256), ...)``: what the layer's name stands for."""
        if self._manifest is None:
            rows = []
            for arc, src in self.members:
                digest, executable = file_digest(src)
                rows.append((arc, 0o755 if executable else 0o644, digest))
            self._manifest = tuple(rows)
        return self._manifest

    @property
    def hash(self) -> str:
        """sha256 over the members' relative paths, modes and contents (first 32 hex digits name the file)."""
        if self._hash is None:
            doc = json.dumps({"format": 1, "members": self.manifest()}, separators=(",", ":"))
            self._hash = hashlib.sha256(doc.encode()).hexdigest()[:NAME_DIGITS]
        return self._hash

    @property
    def remote_name(self) -> str:
        return "code-{}.tar.gz".format(self.hash)

    def build(self, cache_dir: Optional[str] = None) -> str:
        """The path of the packed layer in the cache (``<cache>/code/code-<hash>.tar.gz``), packed if missing."""
        root = os.path.join(os.path.abspath(cache_dir or default_cache_dir()), "code")
        path = os.path.join(root, self.remote_name)
        ident = file_identity(path)
        with _lock:
            if ident is not None and _published.get(path) == ident:
                return path
        if ident is not None and _sound(path):
            with _lock:
                _published[path] = ident
            return path
        os.makedirs(root, exist_ok=True)
        _write_layer(self, path)
        with _lock:
            _published[path] = file_identity(path)
        return path

    def __len__(self):
        return len(self.members)

    def __repr__(self):
        return "CodeLayer({} files)".format(len(self.members))


def _sound(path):
    """A layer another process published: read-only (as published) and a readable gzip'd tar to the end.

    Layers are small (a few MB at most), so reading one once per process is cheap, and it catches a file
    truncated by a full disk or a crash of something that is not this module."""
    try:
        if os.stat(path).st_mode & 0o222:
            return False
        with tarfile.open(path, "r:gz") as tar:
            for _ in tar:
                pass
        return True
    except (OSError, tarfile.TarError, EOFError):
        return False


def _write_layer(layer, path):
    """Pack *layer* to *path* with the reproducible writer of :mod:`poncho_wq.archive.pack`; publish by rename.

    Each file's bytes are read once here and checked against the digest its name was computed from: a file
    edited between planning and packing must not end up under the old name (the shim trusts names)."""
    tar = _DeterministicTar(os.path.dirname(path) + "/.none")
    for (arc, src), (_arc, _mode, digest) in zip(layer.members, layer.manifest()):
        with open(src, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise PonchoError("{} changed while its code layer was being packed; submit the task again".format(src))
        tar.add_bytes(src, data, arc)
    # read-only like cache entries: a published name always means the same bytes
    with atomic_output(path, "wb", file_mode=0o444) as out:
        _compress(tar, out, DEFAULT_COMPRESS_LEVEL, 1, False)
        out.flush()
        # Named by content, so its mtime is too: a layer packed again after a prune is the same file to TaskVine.
        set_content_mtime(out.fileno(), layer.hash)


# ------------------------------------------------------------------------------------------- what goes in


def local_file_members(local_files: Iterable[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """``lib/<arcname>`` for the analysis' ``(source, arcname)`` pairs (arcnames relative to the script's dir,
    which is what the script imports them relative to)."""
    return [("lib/" + arc.replace(os.sep, "/"), os.path.abspath(src)) for src, arc in local_files]


def _shippable(names):
    """*names* without the manager-only distributions (poncho_wq, ndcctools, work_queue): the analysis attributes
    a module under an editable project's tree to that project (a manager script importing a helper from a
    poncho_wq checkout reported poncho_wq as a local distribution), and the workers never run those."""
    manager = {canonicalize_name(n) for n in MANAGER_ONLY}
    return sorted(n for n in names if canonicalize_name(n) not in manager)


def distribution_members(names: Iterable[str], python: Optional[str] = None) -> List[Tuple[str, str]]:
    """The members for the local/editable distributions *names*: their import packages (an editable's from its
    source tree, as it is now), their ``.dist-info`` without the files that name this machine's paths, and their
    console scripts under ``bin/`` (shebang ``#!/usr/bin/env python3``, written to the layer's scratch files)."""
    env = installation(python)
    names = _shippable(names)
    key = (tuple(names), python, id(env))
    with _lock:
        hit = _dist_members.get(key)
    if hit is not None and all(stat_key(d) == k for d, k in hit[1]):
        return list(hit[0])
    members = []
    watched = set()
    for name in sorted(names):
        dist = env.distribution(name)
        if dist is None:
            log.warning("poncho: local distribution %s is not installed here: only its analyzed modules ship", name)
            continue
        warnings: List[str] = []
        if dist.meta_path:
            watched.add(dist.meta_path)
            watched.add(os.path.join(dist.meta_path, "RECORD"))
        if dist.is_editable():
            make = _editable_entries
            # Every directory of the source tree, empty ones too: a file created in any of them is a change.
            for top in dist.editable_sources().values():
                for d, dirnames, _files in os.walk(top):
                    dirnames[:] = [n for n in dirnames if n != "__pycache__" and not n.startswith(".")]
                    watched.add(d)
        else:
            make = _installed_entries
        for e in make(dist, env, "lib", warnings):
            if e.kind == "record" or os.path.basename(e.target) in ("RECORD", "direct_url.json", "INSTALLER"):
                continue
            if e.kind == "script":
                members.append(("bin/" + os.path.basename(e.target), _script_copy(e.source)))
            elif e.kind == "copy" and e.target.startswith("lib" + os.sep) and os.path.isfile(e.source):
                if "__pycache__" in e.target.split(os.sep) or e.target.endswith((".pyc", ".pyo")):
                    continue
                members.append((e.target.replace(os.sep, "/"), e.source))
    watched.update(os.path.dirname(src) for _arc, src in members)
    with _lock:
        _dist_members[key] = (tuple(members), tuple((d, stat_key(d)) for d in sorted(watched)))
    return members


_scripts_dir = None


def _script_copy(source):
    """A copy of the console script *source* with ``#!/usr/bin/env python3`` as its shebang, stored by content
    in a per-process scratch directory (the base's python3 is first on PATH when the command runs)."""
    global _scripts_dir
    with open(source, "rb") as f:
        data = rewrite_shebang(f.read(), "/usr/bin/env python3")
    with _lock:
        if _scripts_dir is None:
            _scripts_dir = tempfile.mkdtemp(prefix="poncho-scripts-")
    out = os.path.join(_scripts_dir, hashlib.sha256(data).hexdigest()[:32], os.path.basename(source))
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    return out


def merge(*groups: Iterable[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """One member list; two different files under one arcname are refused (which would the task import?)."""
    by_arc: Dict[str, str] = {}
    for group in groups:
        for arc, src in group:
            old = by_arc.setdefault(arc, src)
            if old != src and file_digest(old)[0] != file_digest(src)[0]:
                raise PonchoError("two different files would be {} in the code layer: {} and {}; rename one of the "
                                  "modules".format(arc, old, src))
    return sorted(by_arc.items())


def local_requirements(analysis, python: Optional[str] = None) -> List[str]:
    """The installed requirements (``Requires-Dist``, markers evaluated here, pinned to what is installed) of the
    analysis' local distributions: they leave the base with their code, their dependencies must not."""
    env = installation(python)
    out = []
    for name in _shippable(getattr(analysis, "local_distributions", None) or {}):
        dist = env.distribution(name)
        if dist is None:
            continue
        for text in dist.requires:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate(dict(env.markers, extra="")):
                continue
            dep = env.distribution(req.name)
            if dep is not None and dep.local_source() is None:
                out.append("{}=={}".format(dep.name, dep.version))
            elif dep is None:
                out.append(str(Requirement(text)).split(";")[0].strip())
    return sorted(set(out))


__all__ = ["CodeLayer", "CODE_NAME", "content_copy", "distribution_members", "local_file_members",
           "local_requirements", "merge"]


# ------------------------------------------------------------------------------- file:// projects in a spec

#: Directories of a local project that are build outputs or tool state, not its content.
def vine_layer(layer: Optional[CodeLayer]) -> Optional[CodeLayer]:
    """*layer* for TaskVine: the same members plus ``bin/run_in_env`` (``run_in_layer``), which TaskVine's nested
    environments call to stack the layer on the base (the Work Queue shim does that itself, so its layers do not
    carry it: the name would shadow the base's own ``bin/run_in_env`` on PATH)."""
    if layer is None:
        return None
    return CodeLayer(merge(layer.members, [("bin/run_in_env", run_in_layer_path())]))
