"""Review of the distribution modes (poncho_wq/deliver/publish.py, issue 16): the cases an adversarial pass found broken,
each tested against real things (the real curl, a real local server, real processes), and a few guards on what
was found fine (quoting through the shell, path traversal, the bind address).

Found broken, fixed: a read-only publish directory raised a raw PermissionError; a query string in the publish URL
ended up before the file name; a #fragment was accepted; PONCHO_WQ_PUBLISH_URL without PONCHO_WQ_PUBLISH_DIR
silently meant direct; a file:// URL naming another directory than the publish dir was accepted; the failure probe
could hold the manager's wait loop (no bound on name resolution, one request per failed task) and turned a redirect
into a GET; a stalled download held the worker's curl for good; the local server outlived a killed manager; a bad
distribution was reported only after the analysis.
"""

import http.server
import os
import shlex
import socket
import subprocess
import sys
import threading
import time

import pytest

from poncho_wq.errors import BuildError, SpecError
import hashlib

from poncho_wq.deliver.fetch import Fetch, fetch_command, fetch_failure, probe_url
from poncho_wq.deliver.publish import Distribution, distribution, publish, serve
from poncho_wq.task import wrap_command


def _run_fetch(cmd, cache_path):
    # Work Queue's worker substitutes %% by the cache path and runs the command with sh.
    return subprocess.run(["/bin/sh", "-c", cmd.replace("%%", cache_path)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)


def _fetch(url, data, name="env-1.tar.gz"):
    """The Fetch of *data* published at *url*."""
    return Fetch(name, url, len(data), hashlib.sha256(data).hexdigest())


# -- publish() ------------------------------------------------------------------------------------------------
def test_publish_into_an_unwritable_dir_is_one_build_error(tmp_path):
    src = tmp_path / "env-1.tar.gz"
    src.write_bytes(b"x")
    # /sys/kernel exists and refuses new files even to root (the tests may run as root: chmod would not do).
    with pytest.raises(BuildError) as e:
        publish(str(src), "/sys/kernel")
    message = str(e.value)
    assert "\n" not in message and "/sys/kernel" in message and "PONCHO_WQ_PUBLISH_DIR" in message
    assert e.value.exit_code == 3


def test_republished_after_the_published_file_is_deleted(tmp_path):
    src = tmp_path / "env-2.tar.gz"
    src.write_bytes(b"y" * 1000)
    pub = tmp_path / "pub"
    dest = publish(str(src), str(pub))
    os.unlink(dest)  # someone cleaned the publish directory: the memo must not hide it (workers would get 404s)
    assert publish(str(src), str(pub)) == dest and open(dest, "rb").read() == b"y" * 1000
    assert os.stat(dest).st_mode & 0o777 == 0o444  # readable by a web server running as another user


# -- URLs and the fetch command ----------------------------------------------------------------------------------
def test_a_query_string_stays_after_the_file_name_and_the_shell_sees_no_command(tmp_path):
    d = Distribution("url", str(tmp_path / "pub"), "http://h:8000/envs?sig=a&b=1")
    assert d.url_for("env-1.tar.gz") == "http://h:8000/envs/env-1.tar.gz?sig=a&b=1"
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "env-1.tar.gz").write_bytes(b"payload")
    marker = tmp_path / "pwned"
    with serve(str(pub)) as server:
        hostile = server.url + "?a=1;touch${IFS}" + str(marker) + "&b=$(touch${IFS}" + str(marker) + ")`id`|x"
        url = Distribution("url", str(pub), hostile).url_for("env-1.tar.gz")
        r = _run_fetch(fetch_command(_fetch(url, b"payload")), str(tmp_path / "cached"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cached").read_bytes() == b"payload" and not marker.exists()


def test_a_non_ascii_base_url_reaches_the_file(tmp_path):
    root = tmp_path / "srv"
    pub = root / "déjà"
    pub.mkdir(parents=True)
    (pub / "env-3.tar.gz").write_bytes(b"accents")
    with serve(str(root)) as server:
        d = distribution("url", str(pub), server.url + "déjà", environ={})
        r = _run_fetch(fetch_command(_fetch(d.url_for("env-3.tar.gz"), b"accents")), str(tmp_path / "cached"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cached").read_bytes() == b"accents"
    assert Distribution("shared", str(pub), "file://" + str(pub)).worker_dir == str(pub)


class _StallHandler(http.server.BaseHTTPRequestHandler):
    """Sends the headers and a little of the body, then neither sends nor closes: a hung server."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"s" * 1000)
        self.wfile.flush()
        time.sleep(60)

    def log_message(self, *a):
        pass


@pytest.mark.e2e  # curl waits out its stall limit: 2 s
def test_a_stalled_download_fails_and_leaves_nothing(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = tmp_path / "cache"
    cache.mkdir()
    try:
        url = "http://127.0.0.1:{}/env-4.tar.gz".format(server.server_address[1])
        r = _run_fetch(fetch_command(_fetch(url, b"s" * (1 << 20)), 60, stall_seconds=2), str(cache / "e"))
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stderr  # a note for the task, not a failed command (see test_distribution.py)
    lines = (cache / "e").read_text().splitlines()
    assert lines[:2] == ["poncho-fetch-failed", "3"] and url in lines[2], lines
    assert os.listdir(cache) == ["e"]


# -- settings -----------------------------------------------------------------------------------------------
def test_a_publish_url_without_a_publish_dir_is_an_error_not_direct():
    with pytest.raises(SpecError) as e:
        distribution(environ={"PONCHO_WQ_PUBLISH_URL": "http://h:8000/"})
    assert "PONCHO_WQ_PUBLISH_DIR" in str(e.value) and "http://h:8000/" in str(e.value)
    # Asked for explicitly, direct mode ignores the URL.
    assert distribution(environ={"PONCHO_WQ_PUBLISH_URL": "http://h/", "PONCHO_WQ_DISTRIBUTION": "direct"}).mode \
        == "direct"
    assert distribution("direct", environ={"PONCHO_WQ_PUBLISH_URL": "http://h/"}).mode == "direct"


def test_a_fragment_in_the_publish_url_is_refused(tmp_path):
    with pytest.raises(SpecError) as e:
        Distribution("url", str(tmp_path), "http://h/envs#x")
    assert "fragment" in str(e.value) and "PONCHO_WQ_PUBLISH_URL" in str(e.value)


def test_a_file_url_naming_another_directory_is_refused(tmp_path):
    pub, other = tmp_path / "pub", tmp_path / "other"
    pub.mkdir()
    other.mkdir()
    with pytest.raises(SpecError) as e:
        distribution("url", str(pub), "file://" + str(other), environ={})
    assert "PONCHO_WQ_PUBLISH_URL" in str(e.value) and str(other) in str(e.value) and str(pub) in str(e.value)
    with pytest.raises(SpecError):
        distribution("shared", str(pub), "file://" + str(other) + "/", environ={})
    link = tmp_path / "link"
    link.symlink_to(pub)
    assert distribution("url", str(pub), "file://" + str(link), environ={}).publish_url == "file://{}/".format(link)
    # Not visible here (the workers' own mount point): accepted.
    assert distribution("shared", str(pub), "file:///no/such/mount/", environ={}).worker_dir == "/no/such/mount"


def test_a_bad_distribution_is_refused_before_the_environment_is_looked_at(tmp_path, monkeypatch):
    from poncho_wq import wq
    from poncho_wq.task import classes_for

    PonchoTask, PonchoPythonTask = classes_for(wq.load())
    missing = str(tmp_path / "no-such-env.tar.gz")  # an InputMissing if it were looked at first
    with pytest.raises(SpecError) as e:
        PonchoTask("true", environment=missing, distribution="torrent")
    assert "torrent" in str(e.value)
    monkeypatch.setenv("PONCHO_WQ_DISTRIBUTION", "url")
    monkeypatch.delenv("PONCHO_WQ_PUBLISH_DIR", raising=False)
    for make in (lambda: PonchoTask("true", environment=missing), lambda: PonchoPythonTask(len, environment=missing)):
        with pytest.raises(SpecError) as e:
            make()
        assert "PONCHO_WQ_PUBLISH_DIR" in str(e.value)


def test_shared_paths_with_blanks_and_quotes_reach_the_shim_as_one_word_each():
    root = "/shared/it's a \"dir\" $(x)"
    cmd = wrap_command("echo ok", root + "/env-1.tar.gz", root + "/code-2.tar.gz", root + "/envs")
    words = shlex.split(cmd)
    assert words[:3] == ["PONCHO_ENV_DIR=" + root + "/envs", "PONCHO_ENV_KEEP=", "PONCHO_ENV_BUDGET_MB="]
    assert words[words.index("-e") + 1] == root + "/env-1.tar.gz"
    assert words[words.index("--code") + 1] == root + "/code-2.tar.gz"


# -- the failure path ------------------------------------------------------------------------------------------
class _Task:
    """What fetch_failure reads from a finished task: its result code."""

    result = 7


def test_the_failure_probe_is_bounded_and_asks_a_hung_server_once(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def accept():  # accepts and never answers
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = "http://127.0.0.1:{}/env-5.tar.gz".format(listener.getsockname()[1])
    try:
        first = probe_url(url, timeout=1)
        assert "timed out" in first or "no answer" in first, first
        messages = [fetch_failure(_Task(), {"env-5.tar.gz": url}, {7}) for _ in range(20)]
    finally:
        listener.close()
        for c in accepted:
            c.close()
    assert len(accepted) == 1  # 21 failed tasks on one dead URL: one request
    assert all(first in m and url in m and "\n" not in m for m in messages)


def test_the_failure_probe_names_a_403_and_follows_a_redirect(tmp_path):
    class H(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            if self.path.startswith("/moved"):
                self.send_response(302)
                self.send_header("Location", "/forbidden")
            else:
                self.send_response(403)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = "http://127.0.0.1:{}/".format(server.server_address[1])
        assert probe_url(base + "forbidden/env-6.tar.gz") == "HTTP 403 Forbidden"
        assert probe_url(base + "moved/env-6.tar.gz") == "HTTP 403 Forbidden"
    finally:
        server.shutdown()
        server.server_close()


# -- the local server ----------------------------------------------------------------------------------------------
def _raw_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("GET {} HTTP/1.0\r\n\r\n".format(path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_serve_binds_localhost_and_stays_inside_its_directory(tmp_path):
    (tmp_path / "secret").write_text("SECRET")
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "env-7.tar.gz").write_bytes(b"ok")
    with serve(str(pub)) as server:
        assert server.bind == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
        assert _raw_get(server.port, "/env-7.tar.gz").endswith(b"\r\n\r\nok")
        for path in ("/../secret", "/%2e%2e/secret", "/..%2fsecret", "//" + str(tmp_path / "secret")):
            answer = _raw_get(server.port, path)
            assert b"SECRET" not in answer and answer.startswith(b"HTTP/1.0 404"), (path, answer[:200])


def _gone(pid):
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_the_local_server_dies_with_a_killed_manager(tmp_path):
    code = ("import os, signal, sys; from poncho_wq.deliver.publish import serve; s = serve(sys.argv[1]); "
            "print(s.process.pid, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    manager = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    pid = int(manager.stdout.split()[0])
    deadline = time.time() + 30
    while not _gone(pid) and time.time() < deadline:
        time.sleep(0.2)
    alive = not _gone(pid)
    if alive:
        os.kill(pid, 9)
    assert not alive, "the server outlived its manager"


def test_clients_hanging_up_mid_download_do_not_block_the_local_server(tmp_path):
    # Each hang-up makes http.server print a traceback on stderr; into an unread pipe, ~40 of them filled it and
    # every later one left a server thread blocked for good (measured: 39 threads stuck after 80 hang-ups).
    (tmp_path / "env-8.tar.gz").write_bytes(b"\0" * (16 << 20))
    with serve(str(tmp_path)) as server:
        for _ in range(80):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as c:
                c.sendall(b"GET /env-8.tar.gz HTTP/1.0\r\n\r\n")
                c.recv(1000)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # a reset, not a close
        tasks = "/proc/{}/task".format(server.process.pid)
        deadline = time.time() + 30
        while len(os.listdir(tasks)) > 3 and time.time() < deadline:
            time.sleep(0.2)
        assert len(os.listdir(tasks)) <= 3, "server threads left blocked"
        assert _raw_get(server.port, "/env-8.tar.gz").startswith(b"HTTP/1.0 200")


# -- end to end on real workers (both bindings): odd URLs and paths through Work Queue itself ----------------------
import test_distribution  # noqa: E402  (its project and expected results)

_expected = test_distribution._expected
project = test_distribution.project  # the fixture, under its own name


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["url", "shared"])
def test_a_query_string_and_an_odd_shared_path_work_on_real_workers(cluster, project, e2e_cache, tmp_path, mode):
    # url: the fetch command goes through the manager's protocol (url-encoded) and the worker's %% substitution
    # and sh, with a query holding & ; $( ). shared: a publish dir with a blank and a quote in the task command.
    pub = tmp_path / ("sh ared'q" if mode == "shared" else "pub")
    pub.mkdir()
    log = tmp_path / "access.log"
    with serve(str(pub), log_path=str(log)) as server:
        env = {"PONCHO_WQ_DISTRIBUTION": mode, "PONCHO_WQ_PUBLISH_DIR": str(pub)}
        if mode == "url":
            env["PONCHO_WQ_PUBLISH_URL"] = server.url + "?token=a&b=$(false);c=1"
        cluster.start_manager("distribution_manager.py", ["--tasks", "2", "--retries", "1"], project, e2e_cache, env)
        cluster.start_worker(cores=1, keep_envs=True)
        out = cluster.wait_results()
    results = out["results"]
    assert [(r["return_status"], r["shim_error"], r["mode"]) for r in results] == [(0, None, mode)] * 2, results
    for r in results:
        assert _expected(r["i"]) in r["output"]
    if mode == "url":
        paths = [line.split()[3] for line in log.read_text().splitlines()]
        assert "/{}?token=a&b=$(false);c=1".format(results[0]["env"]) in paths, paths
    else:
        assert (pub / "envs" / results[0]["env"][:-len(".tar.gz")]).is_dir()


def test_serve_does_not_follow_a_symlink_out_of_its_directory(tmp_path):
    (tmp_path / "secret").write_text("SECRET")
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "leak").symlink_to(tmp_path / "secret")
    (pub / "inside").symlink_to(pub / "env-9.tar.gz")
    (pub / "env-9.tar.gz").write_bytes(b"ok")
    with serve(str(pub)) as server:
        answer = _raw_get(server.port, "/leak")
        assert b"SECRET" not in answer and answer.startswith(b"HTTP/1.0 404"), answer[:200]
        assert _raw_get(server.port, "/inside").endswith(b"\r\n\r\nok")  # a link inside the directory still works


def test_a_publish_url_too_long_for_the_protocol_line_is_refused(tmp_path):
    token = "t" * 1000
    assert Distribution("url", str(tmp_path), "https://h/envs?sig=" + token).publish_url.endswith(token)
    with pytest.raises(SpecError) as e:
        Distribution("url", str(tmp_path), "https://h/envs?sig=" + "<" * 1300)  # url-encoded: 3 bytes each
    assert "too long" in str(e.value) and "PONCHO_WQ_PUBLISH_URL" in str(e.value) and "\n" not in str(e.value)
