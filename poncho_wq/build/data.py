"""The data sections of a spec: ``git`` repositories and ``http`` downloads, stored inside the environment.

Each variable ``VAR`` becomes ``<prefix>/VAR`` (a directory for git and ``type: tar``, a file for ``type: file``),
and ``<prefix>/poncho/set_env`` gets the line ``export VAR="$1/VAR"``. The run shim sources that file with
``$1`` = the environment's absolute path on the worker (upstream poncho's convention), so tasks see absolute paths
wherever the environment was unpacked. ``<prefix>/poncho/data.json`` records where each variable came from
(git: remote, tag and the resolved commit id; http: URL, size and sha256 of the downloaded bytes).

Storing the data in the environment tarball means it is transferred and unpacked once per worker with the rest of
the environment, and is covered by the same content-addressed cache (the spec, hence the cache key, names the
tag/commit and URL).

git: the remote is cloned shallowly at the tag or branch (``--depth 1 --branch``); when that fails (a commit id
cannot be fetched that way) it is cloned fully and the commit checked out. ``.git`` is then **removed**: the
environment is data, not a working copy; the object store would roughly double its size, and pack files differ
from clone to clone, which would make otherwise identical environments differ byte for byte. The resolved commit id
is kept in ``poncho/data.json``. Submodules are not fetched.

http: downloaded with ``requests``, streamed in chunks with progress, with connect/read timeouts; decompressed per
``compression`` (``gzip``/``bzip2``/``xz``); ``type: tar`` archives are extracted with
:func:`poncho_wq.safetar.safe_extract` (no absolute or ``..`` names, devices, or links leaving the directory).
Everything is first written to a temporary sibling in the prefix and renamed into place, so a failure leaves no
half-written variable. Every failure is a PonchoError(exit_code=3) naming the variable, the source and the cause.
"""

import bz2
import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import subprocess
import tempfile
import time
import zlib

from ..errors import PonchoError
from ..progress import as_progress

log = logging.getLogger(__name__)

#: (connect, read) timeouts in seconds for downloads: a stalled server fails the build instead of hanging it.
HTTP_TIMEOUT = (30, 300)
CHUNK = 1 << 20
STDERR_TAIL = 4000
_OPENERS = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}


def fetch_data(spec, prefix, progress=None):
    """Fetch every git and http variable of *spec* into *prefix*; write ``poncho/set_env`` and ``poncho/data.json``."""
    progress = as_progress(progress)
    if not (spec.git or spec.http):
        return
    records = {}
    for var, source in spec.git:
        records[var] = fetch_git(var, source, prefix, progress)
    for var, source in spec.http:
        records[var] = fetch_http(var, source, prefix, progress)
    write_set_env(prefix, sorted(records))
    with open(os.path.join(prefix, "poncho", "data.json"), "w", encoding="utf-8") as f:
        json.dump(records, f, indent=2, sort_keys=True)
        f.write("\n")


def write_set_env(prefix, variables):
    """``<prefix>/poncho/set_env``: POSIX sh, sourced with ``$1`` = the environment's absolute path."""
    os.makedirs(os.path.join(prefix, "poncho"), exist_ok=True)
    lines = ["# Data variables of this environment; sourced by the run shim with $1 = its absolute path.\n"]
    lines += ['export {0}="$1/{0}"\n'.format(var) for var in variables]
    with open(os.path.join(prefix, "poncho", "set_env"), "w", encoding="utf-8") as f:
        f.writelines(lines)


def _target(prefix, var, what):
    target = os.path.join(prefix, var)
    if os.path.lexists(target):
        raise PonchoError("{}.{}: the environment already has a file or directory named {!r} (installed by a "
                          "package); rename the variable".format(what, var, var), exit_code=3)
    return target


def _scratch(prefix, var):
    return tempfile.mkdtemp(prefix=".poncho-data-{}-".format(var), dir=prefix)


# --- git ---------------------------------------------------------------------------------------------------------

def _git(args, what, cwd=None):
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a private repo must fail, not wait for a password on a closed stdin
    r = subprocess.run(["git"] + args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, text=True, errors="replace")
    if r.returncode != 0:
        raise PonchoError("{}: git {} failed (exit code {}):\n{}".format(
            what, args[0], r.returncode, r.stderr.strip()[-STDERR_TAIL:]), exit_code=3)
    return r.stdout.strip()


def git_remote(remote):
    """An existing local directory as an absolute path (a relative one would depend on the cwd); else unchanged."""
    return os.path.abspath(remote) if "://" not in remote and os.path.isdir(remote) else remote


def fetch_git(var, source, prefix, progress):
    """Clone ``source.remote`` at ``source.tag`` into ``<prefix>/<var>`` without ``.git``; return its record."""
    if shutil.which("git") is None:
        raise PonchoError("git.{}: git is not installed; install git to fetch {}".format(var, source.remote),
                          exit_code=3)
    target = _target(prefix, var, "git")
    remote = git_remote(source.remote)
    what = "git.{} ({}{})".format(var, source.remote, " at " + source.tag if source.tag else "")
    scratch = _scratch(prefix, var)
    work = os.path.join(scratch, "tree")
    try:
        with progress.phase("git", "{} from {}".format(var, source.remote)):
            shallow = ["clone", "--quiet", "--depth", "1"]
            try:
                _git(shallow + (["--branch", source.tag] if source.tag else []) + ["--", remote, work], what)
            except PonchoError:
                if not source.tag:
                    raise
                # A commit id (not a tag or branch name): full clone, then check it out.
                shutil.rmtree(work, ignore_errors=True)
                _git(["clone", "--quiet", "--no-checkout", "--", remote, work], what)
                _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", source.tag + "^{commit}", "--"],
                     what, cwd=work)
            commit = _git(["rev-parse", "HEAD"], what, cwd=work)
            shutil.rmtree(os.path.join(work, ".git"))
            os.rename(work, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"source": "git", "remote": source.remote, "tag": source.tag, "commit": commit}


# --- http --------------------------------------------------------------------------------------------------------

def _download(var, url, path, progress):
    """Stream *url* into *path*; return (size, sha256 hex)."""
    import requests

    digest = hashlib.sha256()
    size = 0
    try:
        with requests.get(url, stream=True, timeout=HTTP_TIMEOUT) as r:
            r.raise_for_status()
            total = int(r.headers.get("Content-Length") or 0)
            last = time.monotonic()
            with open(path, "wb") as out:
                for chunk in r.iter_content(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if time.monotonic() - last >= 2:
                        last = time.monotonic()
                        progress.info("%s: %s%s", var, _mb(size), " of " + _mb(total) if total else "")
    except requests.RequestException as e:
        raise PonchoError("http.{}: cannot download {}: {}".format(var, url, e), exit_code=3)
    progress.info("%s: %s downloaded", var, _mb(size))
    return size, digest.hexdigest()


def _mb(n):
    return "{:.1f} MB".format(n / 1e6)


def fetch_http(var, source, prefix, progress):
    """Download ``source.url`` into ``<prefix>/<var>`` (a file, or a directory for ``type: tar``); return its record."""
    target = _target(prefix, var, "http")
    scratch = _scratch(prefix, var)
    download = os.path.join(scratch, "download")
    try:
        with progress.phase("download", "{} from {}".format(var, source.url)):
            size, sha256 = _download(var, source.url, download, progress)
            if source.type == "tar":
                from ..safetar import safe_extract

                tree = os.path.join(scratch, "tree")
                try:
                    safe_extract(download, tree, compression=source.compression)
                except PonchoError as e:
                    raise PonchoError("http.{}: {}: {}".format(var, source.url, e), exit_code=3)
                os.chmod(tree, 0o755)
                os.rename(tree, target)
            else:
                data = download
                if source.compression:
                    data = os.path.join(scratch, "data")
                    _decompress(var, source, download, data)
                os.chmod(data, 0o644)
                os.rename(data, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"source": "http", "url": source.url, "type": source.type, "compression": source.compression,
            "size": size, "sha256": sha256}


def _decompress(var, source, src, dst):
    try:
        with _OPENERS[source.compression](src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise PonchoError("http.{}: {}: not valid {} data: {}".format(var, source.url, source.compression, e),
                          exit_code=3)
