"""The shim's --fetch (issue 27): the base tarball is fetched only when the per-worker cache does not hold its id
ready, once for concurrent tasks (under the id's lock), checked by size and sha256 before anything is unpacked. A
real HTTP server counts the GETs."""

import hashlib
import http.server
import os
import threading
import time

import pytest

from helpers.shimutil import SHELLS, leftovers, pack_plain, run_shim, shim_env, start_shim, unpack_count

ENV_ID = "env-" + "f37c" * 8
pytestmark = pytest.mark.usefixtures("shells")


class _Server:
    """A local HTTP server for one directory that counts the GETs per path and answers after *delay* seconds (an
    attribute: a test that needs two shims to overlap sets it)."""

    def __init__(self, directory, delay=0.0):
        self.gets = []
        self.delay = delay
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(directory), **kw)

            def do_GET(self):
                outer.gets.append(self.path)
                time.sleep(outer.delay)
                super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:{}/".format(self.httpd.server_address[1])

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    d = tmp_path / "srv"
    d.mkdir()
    tarball = pack_plain(tmp_path, d / (ENV_ID + ".tar.gz"), random_mb=2, files=4)
    with open(tarball, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    server = _Server(d)
    yield server, tarball, sha
    server.close()


def _args(server, tarball, sha, size=None):
    return ["--fetch", server.url + ENV_ID + ".tar.gz", "--sha256", sha, "--size",
            size if size is not None else os.path.getsize(tarball), "-e", ENV_ID + ".tar.gz", "hello"]


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_two_concurrent_shims_fetch_once_and_a_ready_id_fetches_nothing(served, tmp_path, shell):
    server, tarball, sha = served
    server.delay = 1.0  # the first GET is still answering when the second shim starts: it must wait, not fetch
    root = tmp_path / "root"
    cwd = tmp_path / "sandbox"  # the tarball is not in the task's directory: only the URL is
    cwd.mkdir()
    procs = [start_shim(_args(server, tarball, sha), shell=SHELLS[shell], env=shim_env(root), cwd=cwd)
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert (p.returncode, out) == (0, "prefix={}\n".format(root / ENV_ID)), err
    assert server.gets == ["/" + ENV_ID + ".tar.gz"]
    assert unpack_count(root / "unpack.log") == 1
    assert leftovers(root) == []
    run = run_shim(_args(server, tarball, sha), shell=SHELLS[shell], env=shim_env(root), cwd=cwd)
    assert (run.returncode, run.stdout, run.stderr) == (0, "prefix={}\n".format(root / ENV_ID), "")
    assert len(server.gets) == 1 and unpack_count(root / "unpack.log") == 1


def test_a_task_waiting_for_the_lock_outlasts_the_holders_fetch(served, tmp_path):
    """The lock wait (-w) counts after the fetch timeout: a waiter behind a fetch slower than -w (but within
    --fetch-timeout) gets the ready environment instead of a lock timeout (exit 4)."""
    server, tarball, sha = served
    server.delay = 2.5
    root = tmp_path / "root"
    args = ["-w", "1", "--fetch-timeout", "30"] + _args(server, tarball, sha)
    first = start_shim(args, env=shim_env(root), cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not server.gets and time.monotonic() < deadline:  # the first shim holds the lock and is fetching
        time.sleep(0.05)
    second = run_shim(args, env=shim_env(root), cwd=tmp_path)
    out, err = first.communicate(timeout=60)
    assert (first.returncode, out) == (0, "prefix={}\n".format(root / ENV_ID)), err
    assert (second.returncode, second.stdout) == (0, "prefix={}\n".format(root / ENV_ID)), second.stderr
    assert server.gets == ["/" + ENV_ID + ".tar.gz"] and unpack_count(root / "unpack.log") == 1


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_other_bytes_exit_3_and_nothing_is_ready(served, tmp_path, shell):
    server, tarball, sha = served
    root = tmp_path / "root"
    wrong = "0" * 64
    run = run_shim(_args(server, tarball, wrong), shell=SHELLS[shell], env=shim_env(root), cwd=tmp_path)
    assert run.returncode == 3, run.stderr
    assert run.stderr.startswith("poncho_package_run: could not fetch {}.tar.gz from {}".format(ENV_ID, server.url))
    assert "not the published " + wrong in run.stderr and run.stdout == ""
    assert not (root / ENV_ID).exists() and leftovers(root) == [] and unpack_count(root / "unpack.log") == 0
    # a short size, then a missing file (HTTP 404: exit 2); then the right arguments work
    run = run_shim(_args(server, tarball, sha, size=10), shell=SHELLS[shell], env=shim_env(root), cwd=tmp_path)
    assert run.returncode == 3 and ("over the 10 bytes published" in run.stderr or
                                    "not the 10 published" in run.stderr), run.stderr
    args = _args(server, tarball, sha)
    args[1] = server.url + "env-" + "0" * 32 + ".tar.gz"
    run = run_shim(args, shell=SHELLS[shell], env=shim_env(root), cwd=tmp_path)
    assert run.returncode == 2 and "404" in run.stderr, run.stderr
    assert not (root / ENV_ID).exists() and leftovers(root) == []
    run = run_shim(_args(server, tarball, sha), shell=SHELLS[shell], env=shim_env(root), cwd=tmp_path)
    assert (run.returncode, run.stdout) == (0, "prefix={}\n".format(root / ENV_ID)), run.stderr


def test_a_local_file_wins_and_bad_fetch_arguments_exit_1(served, tmp_path):
    server, tarball, sha = served
    root = tmp_path / "root"
    run = run_shim(_args(server, tarball, sha)[:-3] + ["-e", tarball, "hello"], env=shim_env(root))
    assert run.returncode == 0 and server.gets == [], run.stderr
    for bad, word in ((["--sha256", "xyz"], "--sha256"), (["--size", "1e9"], "--size"),
                      (["--fetch-timeout", "soon"], "--fetch-timeout"), (["-e", "other.tar.gz"], "env-<hex>"),
                      (["--fetch", "gopher://h/x"], "http://")):
        args = _args(server, tarball, sha)
        if bad[0] in args:
            args[args.index(bad[0]) + 1] = bad[1]
        else:
            args = bad + args
        run = run_shim(args, env=shim_env(tmp_path / "r2"), cwd=tmp_path)
        assert run.returncode == 1 and word in run.stderr, (bad, run.stderr)
    assert server.gets == []


def _busybox_path(tmp_path, without):
    """A PATH directory where every command is busybox (each applet a link named after it, and ``busybox``
    itself), but for the names in *without*: a worker whose only tools are busybox's (no curl, no GNU wget, no
    coreutils' sha256sum, no flock: the shim locks with mkdir directories there)."""
    import shutil
    import subprocess

    real = shutil.which("busybox")
    d = tmp_path / ("busybox-bin-without-" + "-".join(without))
    d.mkdir()
    applets = subprocess.run([real, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets + ["busybox"]:
        if name not in without:
            os.symlink(real, d / name)
    return d


@pytest.mark.parametrize("without, status, missing", [
    (("wget", "sha256sum"), 0, None),
    (("wget", "busybox"), 4, "no curl, wget or busybox wget here to download it"),
    (("sha256sum", "busybox"), 4, "no sha256sum, shasum, openssl or busybox here to check it"),
], ids=["busybox-wget-and-sha256sum", "no-downloader", "no-hash-tool"])
def test_fetch_on_a_worker_with_only_busybox(served, tmp_path, without, status, missing):
    """A worker whose PATH holds busybox and nothing else: the tarball is fetched by `busybox wget` and checked by
    `busybox sha256sum` (neither is on PATH under its own name), once, and the environment runs.  With no
    downloader at all, or no hash tool, the run ends with exit 4 and one line naming the file, the URL and what the
    worker lacks, before any GET; nothing is marked ready, nothing is left."""
    server, tarball, sha = served
    bb = _busybox_path(tmp_path, without)
    root = tmp_path / "root"
    r = run_shim(_args(server, tarball, sha), shell=[str(bb / "sh")], env=shim_env(root, PATH=str(bb)), cwd=tmp_path)
    if status == 0:
        assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(root / ENV_ID)), r.stderr
        assert server.gets == ["/" + ENV_ID + ".tar.gz"] and unpack_count(root / "unpack.log") == 1
    else:
        assert (r.returncode, r.stdout) == (status, ""), r.stderr
        assert r.stderr == "poncho_package_run: could not fetch {0}.tar.gz from {1}{0}.tar.gz: {2}\n".format(
            ENV_ID, server.url, missing), r.stderr
        assert server.gets == [] and not (root / ENV_ID).exists() and unpack_count(root / "unpack.log") == 0
    assert leftovers(root) == []
