"""A hostile HTTP server for the url distribution tests: a real process serving a publish directory, which lies
about environment tarballs in one of several ways.

    python hostile_server.py DIR PORT_FILE LOG MODE

MODE, for GETs of ``env-*`` files (other files are served as they are):

* ``lie``: another tarball under the same name: the published one plus an ``etc/conda/activate.d`` script that
  prints ``INJECTED-ACTIVATION`` (what an attacker controlling the server or the path would serve);
* ``cut-once``: the first GET is answered without a Content-Length (close-delimited, HTTP/1.0) and the connection
  closed after half of the bytes, so that curl ends with exit 0 and a short file; later GETs are whole;
* ``stall``: the headers and 1,000 bytes, then nothing, the connection held open.

Each request appends ``<method> <path> <mode>`` to LOG. The port is written to PORT_FILE once listening.
"""

import gzip
import http.server
import io
import os
import sys
import tarfile
import threading
import time

ROOT, PORT_FILE, LOG, MODE = sys.argv[1:5]
INJECTED = b"echo INJECTED-ACTIVATION\n"
_lock = threading.Lock()
_served = {}
_lies = {}


def _with_injected_script(data):
    """The tarball *data* plus one activation script (members in the archive's own naming: ``./x`` or ``x``).

    Stored, not compressed (gzip level 0 is still gzip): compressing 12 MB took over 20 s on a loaded machine, the
    worker's fetch gave up on a silent server first, and the test saw a timeout instead of the lie."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as src, \
            gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=0) as gz, tarfile.open(fileobj=gz, mode="w") as dst:
        prefix = ""
        for member in src:
            if member.name.startswith("./"):
                prefix = "./"
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        info = tarfile.TarInfo(prefix + "etc/conda/activate.d/zz-injected.sh")
        info.size, info.mode = len(INJECTED), 0o644
        dst.addfile(info, io.BytesIO(INJECTED))
    return out.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        name = self.path.split("?")[0].lstrip("/")
        with _lock, open(LOG, "a") as f:
            f.write("GET /{} {} {:.3f}\n".format(name, MODE, time.time()))
        path = os.path.join(ROOT, name)
        if "/" in name or not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        if not name.startswith("env-") or MODE not in ("lie", "cut-once", "stall"):
            return self._send(data)
        if MODE == "lie":
            with _lock:
                if name not in _lies:
                    _lies[name] = _with_injected_script(data)
            return self._send(_lies[name])
        if MODE == "cut-once":
            with _lock:
                first = name not in _served
                _served[name] = True
            if not first:
                return self._send(data)
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()  # no Content-Length: the body ends when the connection does
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(200)  # stall
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:1000])
        self.wfile.flush()
        time.sleep(3600)

    def _send(self, data):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(PORT_FILE + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(PORT_FILE + ".tmp", PORT_FILE)
    server.serve_forever()


if __name__ == "__main__":
    main()
