"""Distribution modes: how a task's environment tarball and code layer reach the workers.

Why: in the default ``direct`` mode the manager sends every worker its own copy of the tarball, serially and
blocking (measured with a 73 MB environment on 1-16 workers: manager egress = N x tarball, 1.000-1.003; at 1,000
workers a 500 GB send). Two other modes take the manager's link out of the path:

* ``url``: the tarball (``env-<hash>.tar.gz``) and the code layer (``code-<hash>.tar.gz``) are *published*
  (copied, atomically, under their content-addressed names) into ``publish_dir``, which an HTTP server, an HTTP
  cache (squid), object storage or a shared file system serves at ``publish_url``; each task gets a cached input
  under the same remote name that the worker fetches itself, once. Measured: manager egress ~0, one GET per worker.
* ``shared``: the published tarball is unpacked once on a shared file system (``<worker dir>/envs``, by whichever
  task first takes the shim's lock) and used in place by every worker; the tarball never travels.

How ``url`` inputs are fetched, and why not ``Task.specify_url``: Debian's binding (CCTools 8 API) has no
``specify_url``, and in CCTools 7.17.1 the worker runs ``curl -sSL -o CACHE URL`` *without* ``-f``: a 404 page is
stored as the tarball and stays in the worker's cache for its whole life, so every later task there fails
(measured). So url inputs are worker-side fetch commands (``specify_file_command``, in both bindings, with their
different argument orders) running ``curl -fsSL`` into a ``.part`` file renamed on success: an HTTP error or a
connection cut mid-download fails the input (the task ends with ``INPUT_MISSING`` or, with Debian's worker, its
retries) and leaves nothing in the worker's cache, so another attempt fetches again. Workers need ``curl`` on
their PATH (``file://`` URLs included).

A failed fetch is not seen by the run shim (the command never starts), so the manager names it:
:func:`fetch_failure` builds the one-line message (the URL, and what a request from the manager gets now).

:func:`serve` starts a plain local HTTP server for a publish directory, for small setups and tests: a separate
process (a server thread inside the manager stalls while the binding's ``wait()`` holds the GIL), with an access
log to count GETs. It is not a production server: use nginx, a squid cache or object storage at scale.
"""

import atexit
import contextlib
import dataclasses
import logging
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from .config import DISTRIBUTIONS as MODES  # direct, url, shared (PONCHO_WQ_DISTRIBUTION)
from .errors import BuildError, PonchoError, SpecError
from .cache import file_identity
from .fsutil import sha256_file

log = logging.getLogger(__name__)

URL_SCHEMES = ("http", "https", "ftp", "file")
#: Where ``shared`` mode unpacks, below the workers' view of the publish directory.
SHARED_ENVS = "envs"

_lock = threading.Lock()
_published: dict = {}  # (source identity, destination) -> destination identity


@dataclasses.dataclass(frozen=True)
class Distribution:
    """How tasks get their tarball and code layer: ``mode`` (``direct``, ``url`` or ``shared``), ``publish_dir``
    (where the manager copies them), ``publish_url`` (the base URL the workers use: ``http(s)://``, ``ftp://`` or
    ``file://``). ``shared`` uses the path of a ``file://`` publish_url as the workers' view of the directory, else
    publish_dir itself (the same path on every machine). Build one with :func:`distribution`."""

    mode: str = "direct"
    publish_dir: Optional[str] = None
    publish_url: Optional[str] = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise SpecError("distribution mode {!r} is not valid: expected one of {} (PONCHO_WQ_DISTRIBUTION)".format(
                self.mode, ", ".join(MODES)))
        if self.mode == "direct":
            return
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
                                    self.publish_url, seen, self.publish_dir, self.publish_dir))

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


def check_url(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in URL_SCHEMES or (parts.scheme != "file" and not parts.netloc) or \
            (parts.scheme == "file" and not parts.path.startswith("/")):
        raise SpecError("publish URL {!r} is not valid: expected an absolute http://, https://, ftp:// or file:// "
                        "URL (PONCHO_WQ_PUBLISH_URL), e.g. http://host:8000/envs/ or file:///shared/envs/".format(url))
    if "%%" in url or any(c in url for c in "'\"\n\r\t "):
        # Work Queue replaces %% in a fetch command by the cache path; quotes and blanks would need escaping
        # through two shells.
        raise SpecError("publish URL {!r} is not valid: it contains %%, a quote or a blank; percent-encode "
                        "them".format(url))
    if _wq_encoded_length(fetch_command(url + "/" + "e" * 80)) > WQ_COMMAND_MAX:
        # Work Queue sends the fetch command url-encoded on one protocol line of 4096 bytes and silently cuts
        # what does not fit (dttools url_encode): the worker would run a truncated command.
        raise SpecError("publish URL {!r}... is too long ({} characters) for Work Queue's protocol line: keep it "
                        "under about {} characters (PONCHO_WQ_PUBLISH_URL)".format(
                            url[:60], len(url), WQ_COMMAND_MAX - 400))
    if parts.fragment or url.endswith("#"):
        raise SpecError("publish URL {!r} is not valid: a #fragment would end up after the file names; remove "
                        "it (PONCHO_WQ_PUBLISH_URL)".format(url))
    return url


#: What the url-encoded fetch command may take of Work Queue's 4096-byte protocol line (the rest: the message
#: name, the cache name, the length and the mode).
WQ_COMMAND_MAX = 3600


def _wq_encoded_length(text):
    """The length of *text* after Work Queue's url_encode (dttools): 3 bytes for blanks, controls, ``%``, ``\\``,
    ``<``, ``>``, quotes and bytes above ``z``."""
    return sum(3 if (b <= 32 or b > 122 or b in b"%\\<>'\"") else 1 for b in text.encode())


def _normalize_url(url):
    """The base URL with its path ending in ``/``; a query (a token, a signature) is kept after it."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/"))


def distribution(mode=None, publish_dir=None, publish_url=None, environ=None):
    """A :class:`Distribution` from arguments, completed by the settings: ``PONCHO_WQ_DISTRIBUTION``,
    ``PONCHO_WQ_PUBLISH_DIR``, ``PONCHO_WQ_PUBLISH_URL``. Default mode: ``url`` when a publish directory is set,
    else ``direct``."""
    from .config import settings

    s = settings(environ)
    mode_given = mode is not None
    publish_dir = publish_dir or s.publish_dir
    publish_url = publish_url or s.publish_url
    mode = mode or s.distribution or ("url" if publish_dir else "direct")
    if mode == "direct" and publish_url and not publish_dir and not (s.distribution or mode_given):
        # Without this the URL was ignored: every worker got its tarball from the manager, silently.
        raise SpecError("PONCHO_WQ_PUBLISH_URL={!r} is set but PONCHO_WQ_PUBLISH_DIR is not: set "
                        "PONCHO_WQ_PUBLISH_DIR to the directory that URL serves (or PONCHO_WQ_DISTRIBUTION=direct "
                        "to send tarballs from the manager)".format(publish_url))
    return Distribution(mode, publish_dir, publish_url)


def as_distribution(value):
    """``None`` (the settings), a mode name, or a :class:`Distribution`."""
    if value is None or isinstance(value, str):
        return distribution(value)
    if isinstance(value, Distribution):
        return value
    raise SpecError("distribution={!r} is not valid: expected None, one of {} or poncho_wq.distribution(...)".format(
        value, ", ".join(MODES)))


# -- publishing -------------------------------------------------------------------------------------------------
def publish(path, publish_dir, name=None):
    """Copy *path* into *publish_dir* as *name* (default: its own name, ``env-<hash>.tar.gz`` or
    ``code-<hash>.tar.gz``) and return the published path.

    Atomic and idempotent: the copy is written to a temporary sibling and *linked* to its name (``link`` fails
    when the name exists, where ``rename`` would replace it), so readers see the whole file or none, two managers
    publishing at once both succeed, and an existing file of that name is kept when it holds the same bytes. A
    different file under the name is never overwritten: that is an error (a name must always mean the same
    bytes, since workers cache by name). Repeated calls cost two ``stat`` calls each (memoized per process;
    a deleted published file is published again).
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
    created = False
    if not os.path.exists(dest):
        try:
            # Inside the try: a read-only or foreign publish directory fails here, not only in the copy.
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + name, dir=publish_dir)
        except OSError as e:
            raise BuildError("cannot publish {} into {} (PONCHO_WQ_PUBLISH_DIR): {}; make it writable by this "
                             "user or choose another directory".format(path, publish_dir, e.strerror or e)) from None
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                from .fsutil import copy_contents

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
                if not os.path.exists(dest):
                    os.replace(tmp, dest)
                    created = True
        except OSError as e:
            raise BuildError("cannot publish {} into {} (PONCHO_WQ_PUBLISH_DIR): {}".format(
                path, publish_dir, e.strerror or e)) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    if not created and (os.path.getsize(dest) != os.path.getsize(path) or sha256_file(dest) != sha256_file(path)):
        raise BuildError("{} already exists with different content than {}: a published name must always mean the "
                          "same bytes (workers cache by name); remove the stale file if it is damaged".format(
                              dest, path))
    with _lock:
        _published[key] = file_identity(dest)
    return dest


# -- worker side: the fetch command --------------------------------------------------------------------------
#: A fetch that moves less than 1 KB/s for this many seconds fails (and so can be retried): without it, a server
#: that stops answering without closing the connection (a hung server, a lost route) holds the worker's curl,
#: and the task, for good (curl has no transfer timeout of its own).
STALL_SECONDS = 120


def curl_fetch(stall_seconds=STALL_SECONDS):
    """``curl`` and its options for a worker-side fetch (Work Queue's fetch command and TaskVine's fetch mini task):
    ``-f`` (an HTTP error is a failure, not a file), retries, and a transfer stalled for *stall_seconds* fails."""
    return "curl -fsSL --retry 2 --connect-timeout 60 --speed-limit 1024 --speed-time {}".format(int(stall_seconds))


def fetch_command(url, stall_seconds=STALL_SECONDS):
    """The sh command a worker runs to fetch *url* into Work Queue's cache path ``%%`` (:func:`curl_fetch`), into
    ``%%.part`` renamed on success, removed on failure."""
    return '{} -o "%%.part" {} && mv -f "%%.part" "%%" || {{ rm -f "%%.part"; false; }}'.format(
        curl_fetch(stall_seconds), shlex.quote(url))


def specify_fetch(task, url, remote_name):
    """Attach *url* to *task* as the cached input *remote_name*, fetched by the worker (see the module doc).
    ``specify_file_command`` takes ``(cmd, remote_name)`` in CCTools 7.x and ``(remote_name, cmd)`` in Debian's
    CCTools 8 binding; keywords would not help either (both spell them differently too)."""
    import inspect

    method = task.specify_file_command
    params = list(inspect.signature(method).parameters)
    cmd = fetch_command(url)
    if params and params[0] == "remote_name":
        return method(remote_name, cmd, cache=True)
    return method(cmd, remote_name, cache=True)


_probes: dict = {}  # url -> (time, answer): many tasks failing on one URL ask the server once
PROBE_MEMO_SECONDS = 30


def probe(url, timeout=5.0):
    """What a request for *url* from the manager gets now: ``"HTTP 404 Not Found"``, ``"connection refused"``,
    ``"reachable (N bytes)"``... (a HEAD request; for file:// the file's state).

    Bounded: it runs in the manager's wait loop (through ``shim_error``), so the whole request, name resolution
    included (which urllib's *timeout* does not cover), gets *timeout* seconds in a helper thread, and an answer
    is reused for :data:`PROBE_MEMO_SECONDS` (a thousand tasks failing on one dead URL cost one request)."""
    now = time.monotonic()
    with _lock:
        seen = _probes.get(url)
    if seen and now - seen[0] < PROBE_MEMO_SECONDS:
        return seen[1]
    box = []
    worker = threading.Thread(target=lambda: box.append(_probe(url, timeout)), daemon=True)
    worker.start()
    worker.join(timeout + 1)
    answer = box[0] if box else "no answer within {:g} s".format(timeout)
    with _lock:
        _probes[url] = (time.monotonic(), answer)
    return answer


class _KeepHead(urllib.request.HTTPRedirectHandler):
    """Follows a redirect with HEAD again: urllib's own handler turns it into a GET (the whole tarball)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        return new


def _probe(url, timeout):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = urllib.parse.unquote(parts.path)
        try:
            return "reachable ({} bytes) from the manager".format(os.path.getsize(path))
        except OSError as e:
            return "{} on the manager: {}".format(path, e.strerror)
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.build_opener(_KeepHead).open(req, timeout=timeout) as r:
            return "reachable from the manager now (HTTP {}, {} bytes)".format(
                r.status, r.headers.get("Content-Length", "?"))
    except urllib.error.HTTPError as e:
        return "HTTP {} {}".format(e.code, e.reason)
    except urllib.error.URLError as e:
        reason = e.reason
        return str(getattr(reason, "strerror", None) or reason).lower()
    except (OSError, ValueError) as e:
        return str(e)


def fetch_failure(task, urls, failed_results):
    """The one-line message for a task whose url inputs could not be fetched, else None. *urls* maps remote names
    to URLs; *failed_results* are the binding's result codes of a failed input. Work Queue reports a failed
    input as the task's result (``INPUT_MISSING``; Debian's worker disconnects and the manager retries until
    ``MAX_RETRIES``): the command, and so the run shim, never ran."""
    if not urls:
        return None
    if getattr(task, "result", None) not in failed_results:
        return None
    parts = []
    for name, url in sorted(urls.items(), key=lambda item: (not item[0].startswith("env-"), item[0])):
        parts.append("{} from {}: {}".format(name, url, probe(url)))
    return ("the worker could not fetch " + "; ".join(parts) + " (the task did not run; workers need curl and "
            "access to PONCHO_WQ_PUBLISH_URL; the cause on the worker is in its debug log)")


# -- a plain local HTTP server --------------------------------------------------------------------------------
class LocalServer:
    """A ``python -m poncho_wq.publish`` HTTP server process for *directory* (see :func:`serve`)."""

    def __init__(self, directory, port=0, bind="127.0.0.1", log_path=None, host=None):
        self.directory = os.path.abspath(directory)
        self.bind = bind
        self.log_path = log_path
        fd, port_file = tempfile.mkstemp(prefix="poncho-serve-", suffix=".port")
        os.close(fd)
        os.unlink(port_file)
        # --parent-pid: the server exits when this process does, even killed (no stop(), no atexit): a manager
        # that crashed must not leave a server exposing the directory and holding the port.
        cmd = [sys.executable, "-m", "poncho_wq.publish", "serve", self.directory, "--port", str(port),
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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
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
    import argparse
    import functools
    import http.server

    ap = argparse.ArgumentParser(prog="poncho_wq serve", description="Serve a publish directory over HTTP (a plain "
                                 "local server for small setups; not a production server).")
    ap.add_argument("directory")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port-file")
    ap.add_argument("--log", help="append one line per request to this file")
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
            return super().send_head()

    server = http.server.ThreadingHTTPServer((args.bind, args.port),
                                             functools.partial(Handler, directory=args.directory))
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(args.port_file + ".tmp", args.port_file)
    else:
        print("serving {} at http://{}:{}/ (not a production server)".format(
            args.directory, args.bind, server.server_address[1]), file=sys.stderr)
    import signal

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    if args.parent_pid:
        def watch_parent():
            while os.getppid() == args.parent_pid:
                time.sleep(1)
            server.shutdown()  # the parent is gone (its children are reparented)

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
    print("usage: python -m poncho_wq.publish serve DIR [--port N] [--bind ADDR] [--log FILE]", file=sys.stderr)
    sys.exit(1)
