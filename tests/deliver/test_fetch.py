"""The worker-side fetch of url mode (poncho_wq/deliver/fetch.py), run with sh as a Work Queue worker runs it, with the real
curl (wget, busybox) against real local servers: checked bytes are kept, anything else is a failure note (an
HTTP error: 2; a cut, other bytes, a stall: 3; no downloader or hash tool: 4) naming the URL with its secrets
masked, and nothing unchecked is left. End-to-end tests on real workers: tests/deliver/test_delivery.py."""

import hashlib
import http.server
import os
import socket
import subprocess
import threading

import pytest

from poncho_wq.deliver.fetch import Fetch, fetch_command, probe_url
from poncho_wq.deliver.publish import distribution, fetch_for, serve


class _CutHandler(http.server.BaseHTTPRequestHandler):
    """Announces 1 MB, sends half, then closes the connection: a server dying mid-download."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"z" * (1 << 19))
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *a):
        pass


def _run_fetch(url, cache_path, data=b"good" * 1000, path="/usr/bin:/bin"):
    """Run the fetch command of *data* published at *url*, as a Work Queue worker does (``%%`` replaced by the
    cache path, sh, the worker's PATH)."""
    fetch = Fetch("env-1.tar.gz", url, len(data), hashlib.sha256(data).hexdigest())
    cmd = fetch_command(fetch, 60).replace("%%", cache_path)
    return subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env={"PATH": path},
                          stdin=subprocess.DEVNULL)


def _note(path):
    """``(exit code, message)`` of a failure note, or None when *path* holds something else."""
    with open(path, "rb") as f:
        lines = f.read().decode(errors="replace").splitlines()
    return (int(lines[1]), lines[2]) if lines[:1] == ["poncho-fetch-failed"] and len(lines) == 3 else None


def _kept(cache):
    """The checked copies the fetch command keeps beside Work Queue's cache, and anything else it left."""
    return sorted(n for n in os.listdir(cache) if n.startswith("."))


def test_fetch_command_checks_size_and_sha256_and_keeps_only_checked_bytes(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    good = b"good" * 1000
    (served / "env-1.tar.gz").write_bytes(good)
    log = tmp_path / "access.log"
    cache = tmp_path / "cache"
    cache.mkdir()
    with serve(str(served), log_path=str(log)) as server:
        ok = _run_fetch(server.url + "env-1.tar.gz", str(cache / "a"))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert (cache / "a").read_bytes() == good
        again = _run_fetch(server.url + "env-1.tar.gz", str(cache / "a2"))  # the next task on that worker: no GET
        assert again.returncode == 0 and (cache / "a2").read_bytes() == good
        # (Other expected bytes than good's: a file with good's sha256 is already kept, and is used, whatever the URL.)
        missing = _run_fetch(server.url + "env-2.tar.gz", str(cache / "b"), data=b"other")
        assert missing.returncode == 0, missing.stderr  # a note for the task, not a failed command
        code, message = _note(str(cache / "b"))
        assert code == 2 and "404" in message and server.url + "env-2.tar.gz" in message, message
        other = _run_fetch(server.url + "env-1.tar.gz", str(cache / "c"), data=b"Good" * 1000)  # same size
        code, message = _note(str(cache / "c"))
        assert code == 3 and "sha256" in message and server.url + "env-1.tar.gz" in message, message
        longer = _run_fetch(server.url + "env-1.tar.gz", str(cache / "d"), data=good + b"x")
        code, message = _note(str(cache / "d"))
        assert code == 3 and "4000 bytes, not the 4001 published" in message, message
        assert other.returncode == longer.returncode == 0
        assert probe_url(server.url + "env-2.tar.gz") == "HTTP 404 File not found"
    assert _kept(cache) == [".poncho-" + hashlib.sha256(good).hexdigest()]  # no temp files, nothing unchecked
    lines = log.read_text().splitlines()
    assert [ln.split()[2:] for ln in lines][:2] == [["GET", "/env-1.tar.gz", "200"], ["GET", "/env-2.tar.gz", "404"]]

    cut = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutHandler)
    threading.Thread(target=cut.serve_forever, daemon=True).start()
    try:
        r = _run_fetch("http://127.0.0.1:{}/env-3.tar.gz".format(cut.server_address[1]), str(cache / "e"),
                       data=b"z" * (1 << 20))
    finally:
        cut.shutdown()
        cut.server_close()
    assert r.returncode == 0 and _note(str(cache / "e"))[0] == 3
    assert len(_kept(cache)) == 1
    assert "refused" in probe_url("http://127.0.0.1:{}/env-3.tar.gz".format(cut.server_address[1]))

    # file:// (url mode over a shared file system): the same checks, read with cat.
    files = tmp_path / "cache2"
    files.mkdir()
    assert _run_fetch("file://" + str(served / "env-1.tar.gz"), str(files / "f")).returncode == 0
    assert (files / "f").read_bytes() == good
    assert _run_fetch("file://" + str(served / "env-9.tar.gz"), str(files / "g"), data=b"nine").returncode == 0
    assert _note(str(files / "g"))[0] == 3 and "No such file" in _note(str(files / "g"))[1]
    assert "No such file" in probe_url("file://" + str(served / "env-9.tar.gz"))


class _CloseDelimited(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 without a Content-Length, the body cut at half: curl ends with exit 0 and a short file."""

    def do_GET(self):
        self.protocol_version = "HTTP/1.0"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"h" * 5000)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *a):
        pass


def test_a_close_delimited_cut_short_is_a_note_not_a_kept_file(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CloseDelimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = tmp_path / "cache"
    cache.mkdir()
    try:
        url = "http://127.0.0.1:{}/env-1.tar.gz".format(server.server_address[1])
        r = _run_fetch(url, str(cache / "a"), data=b"h" * 10000)
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stderr
    assert _note(str(cache / "a")) == (3, "could not fetch env-1.tar.gz from {}: 5000 bytes, not the 10000 "
                                          "published (cut short?), not kept".format(url))
    assert _kept(cache) == []


@pytest.mark.parametrize("missing", [("curl",), ("curl", "wget"), ("curl", "wget", "busybox"),
                                     ("sha256sum", "shasum", "openssl", "busybox")])
def test_fetch_command_without_curl_uses_wget_or_busybox_else_notes_exit_4(tmp_path, missing):
    served = tmp_path / "served"
    served.mkdir()
    (served / "env-1.tar.gz").write_bytes(b"good" * 1000)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in os.listdir("/usr/bin"):
        if name not in missing:
            os.symlink(os.path.join("/usr/bin", name), str(bindir / name))
    cache = tmp_path / "cache"
    cache.mkdir()
    with serve(str(served)) as server:
        r = _run_fetch(server.url + "env-1.tar.gz", str(cache / "a"), path=str(bindir))
    assert r.returncode == 0, r.stderr
    if missing in (("curl",), ("curl", "wget")):
        assert (cache / "a").read_bytes() == b"good" * 1000
    else:
        code, message = _note(str(cache / "a"))
        assert code == 4 and server.url + "env-1.tar.gz" in message, message
        assert ("wget" if "wget" in missing else "sha256sum") in message


def test_fetch_messages_mask_the_secrets_of_the_url(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    url = "http://user:hunter2@127.0.0.1:9/env-1.tar.gz?X-Amz-Signature=abc123&x=1"
    _run_fetch(url, str(cache / "a"))
    code, message = _note(str(cache / "a"))
    assert "hunter2" not in message and "abc123" not in message and "127.0.0.1:9/env-1.tar.gz" in message, message


def test_the_fetch_and_the_note_check_run_in_every_worker_shell(tmp_path, shells):
    # Workers' /bin/sh is dash (Debian), bash (RHEL) or busybox ash (Alpine, containers): the fetch command, the URL
    # masking done in sh and the note check the task runs before the shim behave the same in each.
    from poncho_wq.deliver.fetch import note_check

    served = tmp_path / "served"
    served.mkdir()
    good = b"good" * 1000
    (served / "env-1.tar.gz").write_bytes(good)
    with serve(str(served)) as server:
        for shell, argv in shells.items():
            box = tmp_path / shell
            box.mkdir()
            for name, url, data in (("ok", server.url + "env-1.tar.gz?x=1", good),
                                    ("bad", server.url.replace("//", "//u:s3cr3t@") + "env-1.tar.gz?sig=abc",
                                     b"Good" * 1000)):
                fetch = Fetch("env-1.tar.gz", url, len(data), hashlib.sha256(data).hexdigest())
                cmd = fetch_command(fetch, 60).replace("%%", str(box / name))
                r = subprocess.run(argv + ["-c", cmd], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
                assert r.returncode == 0, (argv, r.stderr)
            assert (box / "ok").read_bytes() == good
            os.rename(str(box / "bad"), str(box / "env-1.tar.gz"))
            r = subprocess.run(argv + ["-c", note_check(["env-1.tar.gz"]) + "echo RAN"], cwd=str(box),
                               capture_output=True, text=True)
            assert r.returncode == 3 and "RAN" not in r.stdout, (argv, r.stdout, r.stderr)
            assert r.stderr.startswith("poncho_package_run: could not fetch env-1.tar.gz from http://***@"), r.stderr
            assert "s3cr3t" not in r.stderr and "abc" not in r.stderr and "?..." in r.stderr, r.stderr
            os.rename(str(box / "ok"), str(box / "env-1.tar.gz"))
            r = subprocess.run(argv + ["-c", note_check(["env-1.tar.gz"]) + "echo RAN"], cwd=str(box),
                               capture_output=True, text=True)
            assert r.returncode == 0 and r.stdout == "RAN\n", (argv, r.stderr)


def test_the_fetch_timeout_travels_from_the_delivery(tmp_path, monkeypatch):
    """PONCHO_WQ_FETCH_TIMEOUT is read once, by distribution() (the delivery's entry), and reaches the worker's
    command through the Delivery and its Fetch; a setting changed afterwards does not change that command."""
    monkeypatch.setenv("PONCHO_WQ_FETCH_TIMEOUT", "8")
    delivery = distribution("url", str(tmp_path / "pub"), "http://127.0.0.1:1/")
    monkeypatch.setenv("PONCHO_WQ_FETCH_TIMEOUT", "9")
    source = tmp_path / "env.tar.gz"
    source.write_bytes(b"bytes")
    fetch = fetch_for(str(source), delivery.publish_dir, delivery, "env-" + "0" * 32 + ".tar.gz")
    assert delivery.fetch_timeout == 8 and fetch.seconds == 8
    assert " T=8;" in fetch_command(fetch)
