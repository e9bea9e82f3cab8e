"""Delivery modes (``distribution=``, a :class:`Delivery`): how a task's environment tarball and code layer reach
the workers.

Why: in the default ``direct`` mode the manager sends every worker its own copy of the tarball, serially and
blocking (measured with a 73 MB environment on 1-16 workers: manager egress = N x tarball, 1.000-1.003; at 1,000
workers a 500 GB send). Two other modes take the manager's link out of the path:

* ``url``: the tarball (``env-<hash>.tar.gz``) and the code layer (``code-<hash>.tar.gz``) are *published*
  (copied, atomically, under their content-addressed names) into ``publish_dir``, which an HTTP server, an HTTP
  cache (squid), object storage or a shared file system serves at ``publish_url``; each task gets an input under
  the same remote name that the worker fetches itself, once. Measured: manager egress ~0, one GET per worker.
* ``shared``: the published tarball is unpacked once on a shared file system (``<worker dir>/envs``, by whichever
  task first takes the shim's lock) and used in place by every worker; the tarball never travels.

How workers fetch and check ``url`` inputs: :mod:`poncho_wq.deliver.fetch`.

:func:`serve` starts a plain local HTTP server for a publish directory, for small setups and tests: a separate
process (a server thread inside the manager stalls while the binding's ``wait()`` holds the GIL), with an access
log to count GETs. It is not a production server: use nginx, a squid cache or object storage at scale.
"""

import atexit
import contextlib
import dataclasses
import functools
import html
import io
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Optional

from ..archive.cache import content_digest
from ..identity import file_identity
from ..config import DISTRIBUTIONS as MODES, FETCH_TIMEOUT, settings  # modes: direct, url, shared (PONCHO_WQ_DISTRIBUTION)
from ..credentials import mask
from ..errors import BuildError, PonchoError, SpecError
from .fetch import Fetch, fetch_command
from ..fsutil import copy_contents
from ..version import __version__

log = logging.getLogger(__name__)

URL_SCHEMES = ("http", "https", "ftp", "file")
#: Where ``shared`` mode unpacks, below the workers' view of the publish directory.
SHARED_ENVS = "envs"

_lock = threading.Lock()
_published: dict = {}  # (source identity, destination) -> destination identity


@dataclasses.dataclass(frozen=True)
class Delivery:
    """How tasks get their tarball and code layer: ``mode`` (``direct``, ``url`` or ``shared``), ``publish_dir``
    (where the manager copies them), ``publish_url`` (the base URL the workers use: ``http(s)://``, ``ftp://`` or
    ``file://``). ``shared`` uses the path of a ``file://`` publish_url as the workers' view of the directory, else
    publish_dir itself (the same path on every machine); ``fetch_timeout``: the seconds a worker's fetch of a
    published file may take (``url`` mode). Build one with :func:`distribution`."""

    mode: str = "direct"
    publish_dir: Optional[str] = None
    publish_url: Optional[str] = None
    fetch_timeout: float = FETCH_TIMEOUT

    def __post_init__(self):
        if self.mode not in MODES:
            raise SpecError("distribution mode {!r} is not valid: expected one of {} (PONCHO_WQ_DISTRIBUTION)".format(
                self.mode, ", ".join(MODES)))
        if self.mode in ("direct", "serve"):
            return  # serve: the manager's own cache server (poncho_wq.deliver.serve), no publish directory
        if not self.publish_dir:
            raise SpecError("distribution mode {!r} needs a publish directory: set PONCHO_WQ_PUBLISH_DIR (or "
                            "publish_dir=) to a directory the workers can reach through a server or a shared file "
                            "system".format(self.mode))
        object.__setattr__(self, "publish_dir", os.path.abspath(os.path.expanduser(self.publish_dir)))
        if self.publish_url:
            object.__setattr__(self, "publish_url", _normalize_url(check_url(self.publish_url)))
        if self.mode == "url" and not self.publish_url:
            raise SpecError("distribution mode 'url' needs the base URL workers fetch from: set "
                            "PONCHO_WQ_PUBLISH_URL (or publish_url=), e.g. http://host:8000/ or file:///shared/dir/")
        if self.mode == "shared" and self.publish_url and urllib.parse.urlsplit(self.publish_url).scheme != "file":
            raise SpecError("distribution mode 'shared' unpacks on a shared file system: PONCHO_WQ_PUBLISH_URL={!r} "
                            "must be a file:// URL (the workers' path of PONCHO_WQ_PUBLISH_DIR) or unset".format(
                                self.publish_url))
        if self.publish_url and urllib.parse.urlsplit(self.publish_url).scheme == "file":
            # The workers' path may not exist here (another mount point): only a *different* directory at that
            # path on the manager is a sure mistake (the workers would read files the manager never wrote).
            seen = self.worker_dir
            if os.path.isdir(seen) and os.path.realpath(seen) != os.path.realpath(self.publish_dir):
                raise SpecError("PONCHO_WQ_PUBLISH_URL={!r} names {}, which is not PONCHO_WQ_PUBLISH_DIR={} on this "
                                "machine: point the file:// URL at the publish directory (file://{}/)".format(
                                    mask(self.publish_url), seen, self.publish_dir, self.publish_dir))

    def url_for(self, name):
        """The URL of the published *name*: the base URL's path + the quoted name, its query (an access token,
        a signature) kept after it."""
        parts = urllib.parse.urlsplit(self.publish_url)
        return urllib.parse.urlunsplit(parts._replace(path=parts.path + urllib.parse.quote(name)))

    @property
    def worker_dir(self):
        """The publish directory as the workers see it (``shared`` mode)."""
        if self.publish_url:
            return urllib.parse.unquote(urllib.parse.urlsplit(self.publish_url).path).rstrip("/") or "/"
        return self.publish_dir

    @property
    def shared_env_dir(self):
        """The root the shim unpacks into in ``shared`` mode (its ``PONCHO_ENV_DIR``)."""
        return os.path.join(self.worker_dir, SHARED_ENVS)


#: The name before issue 26 (kept: ``poncho_wq.Distribution`` is public API). "Distribution" also names an installed
#: package (:class:`poncho_wq.analysis.installation.Distribution`); the delivery mode is a :class:`Delivery`.
Distribution = Delivery


def check_url(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in URL_SCHEMES or (parts.scheme != "file" and not parts.netloc) or \
            (parts.scheme == "file" and not parts.path.startswith("/")):
        raise SpecError("publish URL {!r} is not valid: expected an absolute http://, https://, ftp:// or file:// "
                        "URL (PONCHO_WQ_PUBLISH_URL), e.g. http://host:8000/envs/ or file:///shared/envs/".format(
                            mask(url)))
    if "%%" in url or any(c in url for c in "'\"\n\r\t "):
        # Work Queue replaces %% in a fetch command by the cache path; quotes and blanks would need escaping
        # through two shells.
        raise SpecError("publish URL {!r} is not valid: it contains %%, a quote or a blank; percent-encode "
                        "them".format(mask(url)))
    longest = Fetch("env-" + "0" * 32 + ".tar.gz", url.split("?")[0] + "/env-" + "0" * 32 + ".tar.gz" +
                    ("?" + url.split("?", 1)[1] if "?" in url else ""), 10 ** 12, "0" * 64)
    if _wq_encoded_length(fetch_command(longest, 10 ** 6)) > WQ_COMMAND_MAX:
        # Work Queue sends the fetch command url-encoded on one protocol line of 4096 bytes and silently cuts
        # what does not fit (dttools url_encode): the worker would run a truncated command.
        raise SpecError("publish URL {!r}... is too long ({} characters) for Work Queue's protocol line: keep it "
                        "under about {} characters (PONCHO_WQ_PUBLISH_URL)".format(
                            mask(url)[:60], len(url), _url_budget()))
    if parts.fragment or url.endswith("#"):
        raise SpecError("publish URL {!r} is not valid: a #fragment would end up after the file names; remove "
                        "it (PONCHO_WQ_PUBLISH_URL)".format(mask(url)))
    return url


#: What the url-encoded fetch command may take of Work Queue's 4096-byte protocol line (the rest: the message
#: name, the cache name, the length and the mode).
WQ_COMMAND_MAX = 3600


def _url_budget():
    """About how many plain characters a publish URL may have (what the fetch command leaves of the line)."""
    base = _wq_encoded_length(fetch_command(Fetch("env-" + "0" * 32 + ".tar.gz", "http://h/", 10 ** 12, "0" * 64),
                                            10 ** 6))
    return max(0, WQ_COMMAND_MAX - base)


def _wq_encoded_length(text):
    """The length of *text* after Work Queue's url_encode (dttools): 3 bytes for blanks, controls, ``%``, ``\\``,
    ``<``, ``>``, quotes and bytes above ``z``."""
    return sum(3 if (b <= 32 or b > 122 or b in b"%\\<>'\"") else 1 for b in text.encode())


def _normalize_url(url):
    """The base URL with its path ending in ``/``; a query (a token, a signature) is kept after it."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/"))


def distribution(mode=None, publish_dir=None, publish_url=None, environ=None):
    """A :class:`Delivery` from arguments, completed by the settings: ``PONCHO_WQ_DISTRIBUTION``,
    ``PONCHO_WQ_PUBLISH_DIR``, ``PONCHO_WQ_PUBLISH_URL``, ``PONCHO_WQ_FETCH_TIMEOUT``. Default mode: ``url`` when a publish directory is set,
    else ``direct``."""
    s = settings(environ)
    mode_given = mode is not None
    publish_dir = publish_dir or s.publish_dir
    publish_url = publish_url or s.publish_url
    mode = mode or s.distribution or ("url" if publish_dir else "direct")
    if mode == "direct" and publish_url and not publish_dir and not (s.distribution or mode_given):
        # Without this the URL was ignored: every worker got its tarball from the manager, silently.
        raise SpecError("PONCHO_WQ_PUBLISH_URL={!r} is set but PONCHO_WQ_PUBLISH_DIR is not: set "
                        "PONCHO_WQ_PUBLISH_DIR to the directory that URL serves (or PONCHO_WQ_DISTRIBUTION=direct "
                        "to send tarballs from the manager)".format(mask(publish_url)))
    return Delivery(mode, publish_dir, publish_url, s.fetch_timeout)


def as_distribution(value):
    """``None`` (the settings), a mode name, or a :class:`Delivery`."""
    if value is None or isinstance(value, str):
        return distribution(value)
    if isinstance(value, Delivery):
        return value
    raise SpecError("distribution={!r} is not valid: expected None, one of {} or poncho_wq.distribution(...)".format(
        value, ", ".join(MODES)))


# -- publishing -------------------------------------------------------------------------------------------------
#: Temporary copies are named ``.tmp-<pid>+<host>+<random>-<name>``: a publisher killed mid-copy (SIGKILL runs no
#: clean-up) leaves one, which a later publish() removes once its process is gone (same host), or once it is older
#: than :data:`TEMP_MAX_AGE` (any host: the directory may be shared by managers on several machines).
_TEMP = re.compile(r"^\.tmp-(\d+)\+([^+/]*)\+")
TEMP_MAX_AGE = 86400


def publish(path, publish_dir, name=None):
    """Copy *path* into *publish_dir* as *name* (default: its own name, ``env-<hash>.tar.gz`` or
    ``code-<hash>.tar.gz``) and return the published path.

    Atomic and idempotent: the copy is written to a temporary sibling and *linked* to its name (``link`` fails
    when the name exists, where ``rename`` would replace it), so readers see the whole file or none, two managers
    publishing at once both succeed, and an existing file of that name is kept when it holds the same bytes. A
    different file under the name is never overwritten: that is an error (a name must always mean the same
    bytes, since workers cache by name). Repeated calls cost two ``stat`` calls each (memoized per process;
    a deleted published file is published again).

    What it refuses (:class:`BuildError`), because what the directory serves is what workers run: a publish
    directory that other users may write to without the sticky bit (they could replace any published file), and
    under the name anything but a regular file of this user (or root) that only its owner can write: a symbolic
    or hard link (its target can change without this directory changing), another user's file. Workers check
    every fetched file against the published size and sha256 anyway (:func:`poncho_wq.deliver.fetch.fetch_script`);
    these checks keep the directory from serving something else in the first place.
    """
    name = name or os.path.basename(path)
    dest = os.path.join(publish_dir, name)
    key = (file_identity(path), dest)
    with _lock:
        if key[0] is not None and _published.get(key) == file_identity(dest) is not None:
            return dest
    try:
        os.makedirs(publish_dir, exist_ok=True)
    except OSError as e:
        raise BuildError("cannot create the publish directory {} (PONCHO_WQ_PUBLISH_DIR): {}".format(
            publish_dir, e.strerror or e)) from None
    _check_publish_dir(publish_dir)
    _remove_dead_temps(publish_dir)
    created = False
    if not os.path.lexists(dest):
        try:
            # Inside the try: a read-only or foreign publish directory fails here, not only in the copy.
            fd, tmp = tempfile.mkstemp(prefix=".tmp-{}+{}+".format(os.getpid(), _host()), suffix="-" + name,
                                       dir=publish_dir)
        except OSError as e:
            raise BuildError("cannot publish {} into {} (PONCHO_WQ_PUBLISH_DIR): {}; make it writable by this "
                             "user or choose another directory".format(path, publish_dir, e.strerror or e)) from None
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                copy_contents(src.fileno(), out.fileno())
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, dest)
                created = True
            except FileExistsError:
                pass  # another publisher was first: compared below
            except OSError:
                # A file system without hard links (some FUSE/object stores): rename, after a last look.
                if not os.path.lexists(dest):
                    os.replace(tmp, dest)
                    created = True
        except OSError as e:
            raise BuildError("cannot publish {} into {} (PONCHO_WQ_PUBLISH_DIR): {}".format(
                path, publish_dir, e.strerror or e)) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    if not created:
        _check_published(dest)
        if os.path.getsize(dest) != os.path.getsize(path) or content_digest(dest) != content_digest(path):
            raise BuildError("{} already exists with different content than {}: a published name must always mean "
                             "the same bytes (workers cache by name); remove the stale file if it is damaged".format(
                                 dest, path))
    with _lock:
        _published[key] = file_identity(dest)
    return dest


def _host():
    return socket.gethostname().replace("+", "_").replace("/", "_")[:64]


def _check_publish_dir(publish_dir):
    st = os.stat(publish_dir)
    if st.st_mode & 0o002 and not st.st_mode & 0o1000:
        raise BuildError("the publish directory {} (PONCHO_WQ_PUBLISH_DIR) has mode {:o}: any user may replace the "
                         "files workers fetch from it; use a directory only you can write (chmod o-w {}), or set "
                         "its sticky bit (chmod +t)".format(publish_dir, st.st_mode & 0o7777, publish_dir))


def _check_published(dest):
    """*dest*, found under a published name, is a regular file of ours (or root's) that only its owner can
    write, or a BuildError saying what it is instead."""
    st = os.lstat(dest)
    what = None
    if stat.S_ISLNK(st.st_mode):
        what = "a symbolic link (to {})".format(os.readlink(dest))
    elif not stat.S_ISREG(st.st_mode):
        what = "not a regular file"
    elif st.st_uid not in (os.geteuid(), 0):
        what = "owned by another user (uid {})".format(st.st_uid)
    elif st.st_mode & 0o022:
        what = "writable by other users (mode {:o})".format(st.st_mode & 0o7777)
    elif st.st_nlink > 1 and not _our_temp_link(dest, st):
        what = "a hard link ({} names)".format(st.st_nlink)
    if what:
        raise BuildError("{} is {}: a published name must be a file that only its publisher can change (workers "
                         "fetch it by that name); remove it and publish again".format(dest, what))


def _our_temp_link(dest, st):
    """Is the second name of *dest* the temporary copy of a publisher still about to unlink it (a concurrent
    publish() of the same file)?"""
    folder = os.path.dirname(dest)
    try:
        names = [n for n in os.listdir(folder) if _TEMP.match(n)]
    except OSError:
        return False
    for n in names:
        with contextlib.suppress(OSError):
            other = os.lstat(os.path.join(folder, n))
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False


def _remove_dead_temps(publish_dir):
    """Remove the temporary copies of publishers that died (see :data:`_TEMP`); ours only."""
    now = time.time()
    host = _host()
    try:
        names = os.listdir(publish_dir)
    except OSError:
        return
    for n in names:
        m = _TEMP.match(n)
        if not n.startswith(".tmp-"):
            continue
        path = os.path.join(publish_dir, n)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if st.st_uid != os.geteuid():
            continue
        # (A name without pid and host is an older version's temporary copy: removed by age only.)
        dead = m is not None and m.group(2) == host and not _alive(int(m.group(1)))
        if dead or now - st.st_mtime > TEMP_MAX_AGE:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


# -- what workers fetch ------------------------------------------------------------------------------------
def fetch_for(path, publish_dir, dist, name):
    """Publish *path* as *name* and return the :class:`Fetch` for it (size and sha256 of the published bytes).

    The digest is *path*'s (publish() made the published file from it, or found it byte for byte equal): for a
    cache entry it is read from the entry's metadata, so a 500 MB environment is not hashed again."""
    publish(path, publish_dir, name)
    return Fetch(name, dist.url_for(name), os.path.getsize(path), content_digest(path), dist.fetch_timeout)


# -- a plain local HTTP server --------------------------------------------------------------------------------
def end_process(process, seconds=10):
    """Terminate a server *process* and wait for it; killed when it has not ended within *seconds*."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LocalServer:
    """A ``python -m poncho_wq.deliver.publish`` HTTP server process for *directory* (see :func:`serve`)."""

    def __init__(self, directory, port=0, bind="127.0.0.1", log_path=None, host=None):
        self.directory = os.path.abspath(directory)
        self.bind = bind
        self.log_path = log_path
        fd, port_file = tempfile.mkstemp(prefix="poncho-serve-", suffix=".port")
        os.close(fd)
        os.unlink(port_file)
        # --parent-pid: the server exits when this process does, even killed (no stop(), no atexit): a manager
        # that crashed must not leave a server exposing the directory and holding the port.
        cmd = [sys.executable, "-m", "poncho_wq.deliver.publish", "serve", self.directory, "--port", str(port),
               "--bind", bind, "--port-file", port_file, "--parent-pid", str(os.getpid())]
        if log_path:
            cmd += ["--log", log_path]
        # stderr into a file, not a pipe: nobody reads a pipe while the server runs, and the tracebacks of
        # clients hanging up mid-download would fill it and block the server's threads.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self._stderr)
        atexit.register(self.stop)
        deadline = time.time() + 30
        while not os.path.exists(port_file):
            if self.process.poll() is not None:
                self._stderr.seek(0)
                raise PonchoError("the local HTTP server for {} did not start: {}".format(
                    self.directory, self._stderr.read().decode(errors="replace").strip()[-500:]))
            if time.time() > deadline:
                self.stop()
                raise PonchoError("the local HTTP server for {} did not start within 30 s".format(self.directory))
            time.sleep(0.05)
        with open(port_file) as f:
            self.port = int(f.read())
        os.unlink(port_file)
        self.host = host or (socket.getfqdn() if bind in ("0.0.0.0", "") else bind)
        self.url = "http://{}:{}/".format(self.host, self.port)

    def stop(self):
        end_process(self.process)
        self._stderr.close()
        atexit.unregister(self.stop)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve(directory, port=0, bind="127.0.0.1", log_path=None, host=None):
    """Start a plain HTTP server for *directory* in a separate process and return a :class:`LocalServer` (``.url``,
    ``.port``, ``.stop()``; a context manager). For small setups and tests only: one Python process, no caching
    headers, no TLS. *bind* ``0.0.0.0`` serves other machines (the URL then names this host's FQDN, or *host*).
    *log_path* receives one line per request (``<epoch> <client> <method> <path> <status>``)."""
    return LocalServer(directory, port, bind, log_path, host)


def serve_main(argv):
    import argparse  # the server's command line only (tests/test_structure.py, LAZY_EXTERNAL)
    import http.server

    # The same --help shape as the poncho_wq commands in poncho_wq/cli/ (defaults, examples, --version), written
    # out here: this module is also the server process itself (`python -m poncho_wq.deliver.publish serve`) and does not
    # import the command-line package.
    ap = argparse.ArgumentParser(
        prog="poncho_wq serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a publish directory over HTTP: a plain local server for small setups, not a\n"
                    "production server. Nothing outside DIRECTORY, and no dot names, are served.",
        epilog="examples:\n"
               "  poncho_wq serve /srv/envs                                # http://127.0.0.1:8000/, this host only\n"
               "  poncho_wq serve --bind 0.0.0.0 --port 8080 /srv/envs     # reachable from other hosts\n"
               "  poncho_wq serve --port 0 --port-file port.txt /srv/envs  # a free port, written to port.txt\n"
               "  poncho_wq serve --log access.log /srv/envs               # one line per request in access.log")
    ap.add_argument("--version", action="version", version="%(prog)s (poncho_wq) " + __version__,
                    help="print the version and exit")
    ap.add_argument("directory", metavar="DIRECTORY", help="the publish directory (PONCHO_WQ_PUBLISH_DIR)")
    ap.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one (default: 8000)")
    ap.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                    help="address to listen on; 0.0.0.0 for every interface (default: 127.0.0.1, this machine only)")
    ap.add_argument("--port-file", metavar="FILE",
                    help="write the port listened on to FILE once serving (default: not written)")
    ap.add_argument("--log", metavar="FILE",
                    help="append one line per request to FILE (default: no access log)")
    ap.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not os.path.isdir(args.directory):
        print("poncho_wq serve: {} is not a directory".format(args.directory), file=sys.stderr)
        return 2
    log_lock = threading.Lock()
    root = os.path.realpath(args.directory)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code="-", size="-"):
            if not args.log:
                return
            with log_lock, open(args.log, "a") as f:
                f.write("{:.3f} {} {} {} {}\n".format(time.time(), self.client_address[0], self.command,
                                                      self.path, code))

        def log_message(self, fmt, *a):
            pass

        def send_head(self):
            # http.server follows symlinks: one in the directory pointing elsewhere would serve files outside it.
            real = os.path.realpath(self.translate_path(self.path))
            if real != root and not real.startswith(root + os.sep):
                self.send_error(404, "File not found")
                return None
            # Dot names are publish()'s temporary copies (and whatever else is hidden): never served.
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            if any(part.startswith(".") for part in path.split("/")):
                self.send_error(404, "File not found")
                return None
            return super().send_head()

        def list_directory(self, path):
            # The listing without dot names: http.server's own lists every entry (a half-written temporary copy too).
            try:
                names = sorted(n for n in os.listdir(path) if not n.startswith("."))
            except OSError:
                self.send_error(404, "No permission to list directory")
                return None
            items = "".join('<li><a href="{}">{}</a></li>\n'.format(
                urllib.parse.quote(n + ("/" if os.path.isdir(os.path.join(path, n)) else "")), html.escape(n))
                for n in names)
            body = "<!DOCTYPE HTML>\n<html><body><ul>\n{}</ul></body></html>\n".format(items).encode()
            self.send_response(200)
            self.send_header("Content-type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return io.BytesIO(body)

    server = http.server.ThreadingHTTPServer((args.bind, args.port),
                                             functools.partial(Handler, directory=args.directory))
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(args.port_file + ".tmp", args.port_file)
    else:
        print("serving {} at http://{}:{}/ (not a production server)".format(
            args.directory, args.bind, server.server_address[1]), file=sys.stderr)
    return run_server(server, args.parent_pid)


def run_server(server, parent_pid=None):
    """Serve until SIGTERM, or until the process *parent_pid* is gone (its children are reparented): a manager that
    crashed must not leave a server exposing its files and holding the port."""
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    if parent_pid:
        def watch_parent():
            while os.getppid() == parent_pid:
                time.sleep(1)
            server.shutdown()

        threading.Thread(target=watch_parent, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve_main(sys.argv[2:]))
    print("usage: python -m poncho_wq.deliver.publish serve DIR [--port N] [--bind ADDR] [--log FILE]", file=sys.stderr)
    sys.exit(1)
