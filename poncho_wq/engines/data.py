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
cannot be fetched that way) it is cloned fully and the commit checked out. A transfer that makes no progress for
``PONCHO_WQ_GIT_TIMEOUT`` seconds (default 120) fails the build instead of hanging it: http(s) remotes through
git's own ``http.lowSpeedLimit``/``http.lowSpeedTime``, every transport (``git://``, ssh, a server that accepts the
connection and never answers) through a watchdog that kills git's whole process group when its output (``--progress``)
stays silent that long. ``.git`` is then **removed**: the
environment is data, not a working copy; the object store would roughly double its size, and pack files differ
from clone to clone, which would make otherwise identical environments differ byte for byte. The resolved commit id
is kept in ``poncho/data.json``. Submodules are not fetched.

http: downloaded with ``requests``, streamed in chunks with progress, with connect and read timeouts of
``PONCHO_WQ_HTTP_TIMEOUT`` seconds (default 60: a server that stops sending for that long fails the build); decompressed per
``compression`` (``gzip``/``bzip2``/``xz``); ``type: tar`` archives are extracted with
:func:`poncho_wq.archive.safetar.safe_extract` (no absolute or ``..`` names, devices, or links leaving the directory).
Everything is first written to a temporary sibling in the prefix and renamed into place, so a failure leaves no
half-written variable. Every failure is a BuildError (exit code 3) naming the variable, the source and the cause.
"""

import bz2
import gzip
import hashlib
import json
import logging
import lzma
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import zlib

from ..archive.safetar import safe_extract
from ..config import settings
from ..errors import BuildError, PonchoError
from ..progress import as_progress
from ..tools import start_tool, tail

log = logging.getLogger(__name__)

CHUNK = 1 << 20
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
        raise BuildError("{}.{}: the environment already has a file or directory named {!r} (installed by a "
                         "package); rename the variable".format(what, var, var))
    return target


def _scratch(prefix, var):
    return tempfile.mkdtemp(prefix=".poncho-data-{}-".format(var), dir=prefix)


# --- git ---------------------------------------------------------------------------------------------------------

class GitStalled(BuildError):
    """git made no progress for ``PONCHO_WQ_GIT_TIMEOUT`` seconds (not retried: a second clone would stall too)."""


# Progress lines ("Receiving objects:  42% (..)", "remote: Counting objects: ...") are --progress noise in an
# error message; git's own "fatal:"/"error:" lines are the explanation.
_PROGRESS_LINE = re.compile(r"^(remote: )?[A-Za-z ]+: +\d+% ")


def _stderr_tail(raw):
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", raw) if ln.strip() and not _PROGRESS_LINE.match(ln.strip())]
    return tail("\n".join(lines))


def _git(args, what, cwd=None):
    """Run ``git <args>``; return its stdout. A stall of ``PONCHO_WQ_GIT_TIMEOUT`` seconds raises
    :class:`GitStalled`, any other failure :class:`BuildError` with the end of git's stderr.

    Why a watchdog on git's output: http(s) stalls are caught by git itself (``http.lowSpeedTime``), but for
    ``git://``, ssh or a local helper there is no such setting, and a server that accepts the connection and never
    answers would hang the build forever. With ``--progress`` (given by the callers for transfers) a working
    transfer writes to stderr at least every second or so. git runs in its own session so that on a stall the
    whole process group (git, git-remote-http, index-pack, ssh) is killed, not only the top process; its stdin is
    closed and it has no controlling terminal, so nothing can wait for a password.
    """
    timeout = settings().git_timeout
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a private repo must fail, not wait for a password on a closed stdin
    cmd = ["git", "-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime={}".format(max(1, math.ceil(timeout))),
           "-c", "protocol.ext.allow=never"] + args
    proc = start_tool(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                      start_new_session=True)
    out, err = [], []
    stalled = False
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            last = time.monotonic()
            while sel.get_map():
                left = last + timeout - time.monotonic()
                if left <= 0:
                    stalled = True
                    break
                for key, _ in sel.select(min(left, 1.0)):
                    data = os.read(key.fd, 65536)
                    if data:
                        key.data.append(data)
                        last = time.monotonic()
                    else:
                        sel.unregister(key.fileobj)
        if not stalled:
            try:
                proc.wait(timeout=max(1.0, timeout))  # the pipes are closed: git is exiting
            except subprocess.TimeoutExpired:
                stalled = True
    finally:
        if proc.poll() is None:  # stalled, or interrupted (Ctrl-C, SIGTERM): no git may outlive the build
            _kill_group(proc)
        proc.stdout.close()
        proc.stderr.close()
    stderr = _stderr_tail(b"".join(err).decode("utf-8", "replace"))
    if stalled or (proc.returncode != 0 and re.search(r"too slow|timed out", stderr, re.I)):
        raise GitStalled("{}: git {} made no progress for {:g} seconds; the remote does not answer (check the URL and "
                         "the network, or raise PONCHO_WQ_GIT_TIMEOUT){}".format(
                             what, args[0], timeout, ":\n" + stderr if stderr else ""))
    if proc.returncode != 0:
        raise BuildError("{}: git {} failed (exit code {}):\n{}".format(what, args[0], proc.returncode, stderr))
    return b"".join(out).decode("utf-8", "replace").strip()


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def git_remote(remote):
    """An existing local directory as an absolute path (a relative one would depend on the cwd); else unchanged."""
    return os.path.abspath(remote) if "://" not in remote and os.path.isdir(remote) else remote


def fetch_git(var, source, prefix, progress):
    """Clone ``source.remote`` at ``source.tag`` into ``<prefix>/<var>`` without ``.git``; return its record."""
    if shutil.which("git") is None:
        raise BuildError("git.{}: git is not installed; install git to fetch {}".format(var, source.remote))
    target = _target(prefix, var, "git")
    remote = git_remote(source.remote)
    what = "git.{} ({}{})".format(var, source.remote, " at " + source.tag if source.tag else "")
    scratch = _scratch(prefix, var)
    work = os.path.join(scratch, "tree")
    try:
        with progress.phase("git", "{} from {}".format(var, source.remote)):
            # --progress: the stall watchdog in _git() counts git's progress output as progress.
            shallow = ["clone", "--progress", "--depth", "1"]
            try:
                _git(shallow + (["--branch", source.tag] if source.tag else []) + ["--", remote, work], what)
            except GitStalled:
                raise  # the full clone below would only stall again
            except PonchoError:
                if not source.tag:
                    raise
                # A commit id (not a tag or branch name): full clone, then check it out.
                shutil.rmtree(work, ignore_errors=True)
                _git(["clone", "--progress", "--no-checkout", "--", remote, work], what)
                _git(["-c", "advice.detachedHead=false", "checkout", "--progress", source.tag + "^{commit}", "--"],
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
    timeout = settings().http_timeout
    try:
        # (connect, read): the read timeout bounds every wait for the next bytes, so a server that stops sending
        # fails the build after `timeout` seconds instead of hanging it.
        with requests.get(url, stream=True, timeout=(timeout, timeout)) as r:
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
        if isinstance(e, requests.Timeout) or "timed out" in str(e):
            raise BuildError("http.{}: cannot download {}: the server sent nothing for {:g} seconds (check the URL "
                             "and the network, or raise PONCHO_WQ_HTTP_TIMEOUT): {}".format(var, url, timeout, e))
        raise BuildError("http.{}: cannot download {}: {}".format(var, url, e))
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
                tree = os.path.join(scratch, "tree")
                try:
                    safe_extract(download, tree, compression=source.compression)
                except PonchoError as e:
                    raise BuildError("http.{}: {}: {}".format(var, source.url, e))
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
        raise BuildError("http.{}: {}: not valid {} data: {}".format(var, source.url, source.compression, e))
