"""The ``serve`` delivery mode: the manager serves its own build cache's environment tarballs over HTTP, and a worker
fetches one only when its root does not hold it ready (issue 27).

Why: Work Queue empties a worker's workspace at every manager disconnect, so in ``direct`` mode the next manager
sends the whole tarball again (measured: 100.7 % of it per worker), although the shim's worker root
(``<workdir>/poncho-<uid>``) still holds the environment unpacked. Work Queue has no "send only if missing": an
input file is sent whenever the worker's cache lacks it. So in this mode the tarball is no input at all: the task
passes ``--fetch URL --sha256 HEX --size N`` to the shim, which fetches under the id's lock only on a miss
(poncho_wq/worker/poncho_package_run.sh, ``_pr_fetchinto``), and a second workflow costs no transfer.

What is served, and to whom (docs/security.md, "The cache server"):

* only the tarballs tasks of this process use, each linked under its content-addressed name ``env-<hex>.tar.gz``
  into a private (0700) directory of this process; only names of that form are answered (GET and HEAD), nothing
  else: no listing, no other path, no dot names, no traversal (the name is matched whole before any file is
  opened);
* read-only (the server has no write method);
* on ``PONCHO_WQ_SERVE_ADDRESS`` (default ``127.0.0.1``, workers on this machine only) and a free port;
* the worker checks size and sha256 (passed in the task's command, not taken from the server) before unpacking.

Why a process and not a thread: a server thread inside the manager stalls while the binding's ``wait()`` holds the
GIL (the measurement in :mod:`poncho_wq.deliver.publish`), i.e. exactly while workers would fetch. The process is
started by the first task that needs it and ends with the manager's process (``atexit``, and by itself when its
parent is gone, even after a SIGKILL).
"""

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ..archive.cache import content_digest
from ..config import settings
from .fetch import Fetch
from .publish import end_process, run_server

#: The only names the server answers (a request path is ``/`` + one of them).
SERVED_NAME = re.compile(r"env-[0-9a-f]{8,64}\.tar\.gz")

_lock = threading.Lock()
_server = None  # the running CacheServer of this process


class CacheServer:
    """The server process of :mod:`poncho_wq.deliver.serve` for a private directory of links (see :func:`serve_file`).

    The listening socket is made here, so the URL is known at once, and handed to the process, which starts beside
    the manager: a task's creation does not wait for it (0.21 s when it waited for the process to report its port;
    a worker connecting meanwhile waits in the socket's queue)."""

    def __init__(self, address, log_path=None):
        self.links = tempfile.mkdtemp(prefix="poncho-serve-")  # 0700: only this user can add a name
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, 0))
            sock.listen(128)
            self.port = sock.getsockname()[1]
            cmd = [sys.executable, "-m", "poncho_wq.deliver.serve", "serve", self.links, "--fd", str(sock.fileno()),
                   "--parent-pid", str(os.getpid())]
            if log_path:
                cmd += ["--log", log_path]
            # stderr into a file, not a pipe nobody reads (see poncho_wq.deliver.publish.LocalServer).
            self._stderr = tempfile.TemporaryFile()
            self.process = subprocess.Popen(cmd, pass_fds=(sock.fileno(),), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=self._stderr)
        atexit.register(self.stop)
        host = socket.getfqdn() if address in ("0.0.0.0", "::") else address
        self.url = "http://{}:{}/".format("[{}]".format(host) if ":" in host else host, self.port)

    def add(self, path, name):
        """Serve the file *path* as *name* (a link in the private directory, made atomically)."""
        if not SERVED_NAME.fullmatch(name):
            raise ValueError("not a served name: {!r}".format(name))
        link = os.path.join(self.links, name)
        target = os.path.abspath(path)
        if os.path.islink(link) and os.readlink(link) == target:
            return
        tmp = os.path.join(self.links, ".tmp-{}-{}".format(os.getpid(), name))
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def stop(self):
        end_process(self.process)
        self._stderr.close()
        atexit.unregister(self.stop)
        shutil.rmtree(self.links, ignore_errors=True)


def cache_server():
    """This process's cache server, started on the first call (``PONCHO_WQ_SERVE_ADDRESS``, ``PONCHO_WQ_SERVE_LOG``);
    started again when it died."""
    global _server
    with _lock:
        if _server is None or _server.process.poll() is not None:
            s = settings()
            _server = CacheServer(s.serve_address, s.serve_log)
        return _server


def serve_file(path, name, fetch_timeout):
    """Serve the tarball *path* as *name* and return the :class:`~poncho_wq.deliver.fetch.Fetch` a worker's shim
    gets for it (URL, size, and the sha256 of the bytes, from the cache entry's metadata when there is one);
    *fetch_timeout*: the delivery's (``PONCHO_WQ_FETCH_TIMEOUT``, read once at its entry)."""
    server = cache_server()
    server.add(path, name)
    return Fetch(name, server.url + name, os.path.getsize(path), content_digest(path), fetch_timeout)


def stop():
    """Stop this process's cache server (tests, long-running managers between workflows); the next task starts a
    new one."""
    global _server
    with _lock:
        if _server is not None:
            _server.stop()
            _server = None


def serve_main(argv):
    """``python -m poncho_wq.deliver.serve serve DIR --fd N [--parent-pid P] [--log F]``: the server process on the
    listening socket *N* its manager made (started by :class:`CacheServer`, not a command for users). The server's
    modules (http.server, argparse) are imported here, in the server process: the manager that starts it does not
    load them (tests/test_structure.py, LAZY_EXTERNAL; issue 27)."""
    import argparse
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        """GET and HEAD of ``/<served name>`` only; 404 for anything else, 501 for other methods."""

        directory = ""
        log_path = None
        log_lock = threading.Lock()

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body):
            name = self.path[1:] if self.path.startswith("/") else ""
            f = None
            if SERVED_NAME.fullmatch(name):
                try:
                    f = open(os.path.join(self.directory, name), "rb")
                except OSError:
                    f = None
            if f is None:
                self.send_error(404, "Not Found")
                return
            with f:
                size = os.fstat(f.fileno()).st_size
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if body:
                    try:
                        shutil.copyfileobj(f, self.wfile, 1 << 20)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

        def log_request(self, code="-", size="-"):
            if self.log_path:
                with self.log_lock, open(self.log_path, "a") as log:
                    log.write("{:.3f} {} {} {} {}\n".format(time.time(), self.client_address[0], self.command,
                                                            self.path, code))

        def log_message(self, fmt, *a):
            pass

    ap = argparse.ArgumentParser(prog="python -m poncho_wq.deliver.serve serve")
    ap.add_argument("directory")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--log")
    ap.add_argument("--parent-pid", type=int)
    args = ap.parse_args(argv)
    handler = type("Handler", (Handler,), {"directory": args.directory, "log_path": args.log})
    sock = socket.socket(fileno=args.fd)
    server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": sock.family})
    server = server_class(sock.getsockname()[:2], handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    return run_server(server, args.parent_pid)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve_main(sys.argv[2:]))
    print("usage: python -m poncho_wq.deliver.serve serve DIR --fd N [--parent-pid PID] [--log FILE]", file=sys.stderr)
    sys.exit(1)
