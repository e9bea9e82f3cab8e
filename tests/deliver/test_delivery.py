"""Distribution modes (poncho_wq/deliver/publish.py): direct, url and shared.

Fast tests: the settings and their errors, publishing (atomic, idempotent, never replacing different bytes, never
taking a planted link or another user's file, no temporary copy left by a killed publisher). The worker-side fetch
itself: tests/deliver/test_fetch.py. End-to-end tests (marked e2e) on real workers of both bindings: url mode (one GET of
the environment per worker, the manager sends none), shared mode (one unpack in total), a 404 / a server dying
mid-download, a lying, a cutting and a stalling server and workers without curl (the task ends with its exit code
and a message naming the URL, nothing is kept on the worker, a later attempt succeeds once the server is back).
Regressions of an adversarial review (issue 16, last section), each tested against real things (the real curl, a
real local server, real processes), plus guards on what was found fine (quoting through the shell, path traversal,
the bind address). Found broken, fixed: a read-only publish directory raised a raw PermissionError; a query string
in the publish URL ended up before the file name; a #fragment was accepted; PONCHO_WQ_PUBLISH_URL without
PONCHO_WQ_PUBLISH_DIR silently meant direct; a file:// URL naming another directory than the publish dir was
accepted; the failure probe could hold the manager's wait loop (no bound on name resolution, one request per failed
task) and turned a redirect into a GET; a stalled download held the worker's curl for good; the local server
outlived a killed manager; a bad distribution was reported only after the analysis.
"""

import hashlib
import http.server
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time

import pytest

from helpers.paths import HELPERS, path_without
from helpers.projects import job_project
from helpers.wqutil import fixed_disk_args, start_worker_process, worker_binary
from poncho_wq.errors import BuildError, PonchoError, SpecError
from poncho_wq.deliver.fetch import Fetch, fetch_command, fetch_failure, probe_url
from poncho_wq.deliver.publish import Distribution, distribution, publish, serve
from poncho_wq.task import wrap_command


# -- names ----------------------------------------------------------------------------------------------------
def test_the_delivery_mode_is_a_delivery_and_its_old_name_still_imports():
    import poncho_wq
    from poncho_wq.analysis.installation import Distribution as InstalledDistribution
    from poncho_wq.deliver.publish import Delivery

    assert poncho_wq.Delivery is Delivery is Distribution is poncho_wq.Distribution  # user API kept (issue 26)
    assert isinstance(poncho_wq.distribution("direct"), poncho_wq.Delivery)
    assert InstalledDistribution is not Delivery  # "Distribution" in the analysis is an installed package


# -- settings -------------------------------------------------------------------------------------------------
def test_default_is_direct_and_publish_dir_means_url(tmp_path):
    assert distribution(environ={}).mode == "direct"
    d = distribution(environ={"PONCHO_WQ_PUBLISH_DIR": str(tmp_path), "PONCHO_WQ_PUBLISH_URL": "http://h:8000/x"})
    assert (d.mode, d.publish_url) == ("url", "http://h:8000/x/")
    assert d.url_for("env-ab.tar.gz") == "http://h:8000/x/env-ab.tar.gz"
    s = distribution(environ={"PONCHO_WQ_DISTRIBUTION": "shared", "PONCHO_WQ_PUBLISH_DIR": str(tmp_path),
                              "PONCHO_WQ_PUBLISH_URL": "file:///mnt/shared/poncho/"})
    assert (s.worker_dir, s.shared_env_dir) == ("/mnt/shared/poncho", "/mnt/shared/poncho/envs")
    assert distribution("shared", publish_dir=str(tmp_path), environ={}).worker_dir == str(tmp_path)


@pytest.mark.parametrize("environ, needle", [
    ({"PONCHO_WQ_DISTRIBUTION": "torrent"}, "PONCHO_WQ_DISTRIBUTION='torrent'"),
    ({"PONCHO_WQ_DISTRIBUTION": "url"}, "PONCHO_WQ_PUBLISH_DIR"),
    ({"PONCHO_WQ_PUBLISH_DIR": "/x"}, "PONCHO_WQ_PUBLISH_URL"),
    ({"PONCHO_WQ_PUBLISH_DIR": "/x", "PONCHO_WQ_PUBLISH_URL": "host:8000"}, "not valid"),
    ({"PONCHO_WQ_PUBLISH_DIR": "/x", "PONCHO_WQ_PUBLISH_URL": "http://h/a b"}, "blank"),
    ({"PONCHO_WQ_DISTRIBUTION": "shared", "PONCHO_WQ_PUBLISH_DIR": "/x", "PONCHO_WQ_PUBLISH_URL": "http://h/"},
     "file://"),
])
def test_bad_settings_name_the_variable(environ, needle):
    with pytest.raises(SpecError) as e:
        distribution(environ=environ)
    assert needle in str(e.value)


def test_wrap_command_in_shared_mode_sets_the_shared_root():
    cmd = wrap_command("python3 job.py 'a b'", "/sh/env-1.tar.gz", "/sh/code-2.tar.gz", "/sh/envs")
    assert cmd.startswith("PONCHO_ENV_DIR=/sh/envs PONCHO_ENV_KEEP= PONCHO_ENV_BUDGET_MB= ./poncho_package_run "
                          "-e /sh/env-1.tar.gz --code /sh/code-2.tar.gz")
    assert shlex.split(cmd)[-1] == "python3 job.py 'a b'"


# -- publishing -----------------------------------------------------------------------------------------------
def test_publish_is_atomic_idempotent_and_never_replaces_other_bytes(tmp_path):
    src = tmp_path / "env-0123.tar.gz"
    src.write_bytes(b"x" * 100000)
    pub = tmp_path / "pub"
    dest = publish(str(src), str(pub))
    assert open(dest, "rb").read() == src.read_bytes()
    assert os.stat(dest).st_mode & 0o777 == 0o444
    ino = os.stat(dest).st_ino
    assert publish(str(src), str(pub)) == dest and os.stat(dest).st_ino == ino  # kept, not rewritten
    assert [n for n in os.listdir(pub)] == ["env-0123.tar.gz"]  # no temp file left
    other = tmp_path / "other" / "env-0123.tar.gz"
    other.parent.mkdir()
    other.write_bytes(b"y" * 100000)
    with pytest.raises(PonchoError) as e:
        publish(str(other), str(pub))
    assert "different content" in str(e.value) and str(dest) in str(e.value)
    assert open(dest, "rb").read() == src.read_bytes()


def test_concurrent_publishers_all_succeed(tmp_path):
    src = tmp_path / "code-77.tar.gz"
    src.write_bytes(os.urandom(1 << 20))
    pub = str(tmp_path / "pub")
    code = "import sys; from poncho_wq.deliver.publish import publish; publish(sys.argv[1], sys.argv[2])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(src), pub]) for _ in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert os.listdir(pub) == ["code-77.tar.gz"]


def test_publish_refuses_a_planted_link_or_foreign_file_even_with_the_same_bytes(tmp_path):
    # What sits under a published name is what the directory serves: a symlink (its target can change at any
    # time), a hard link or another user's file is refused even when it holds the very bytes being published.
    src = tmp_path / "env-5.tar.gz"
    src.write_bytes(b"same bytes")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"same bytes")
    cases = {
        "symbolic link": lambda dest: dest.symlink_to(elsewhere),
        "hard link": lambda dest: os.link(str(elsewhere), str(dest)),
        "another user": lambda dest: (dest.write_bytes(b"same bytes"), os.chmod(str(dest), 0o444),
                                      os.chown(str(dest), 65534, 65534)),
        "writable by other users": lambda dest: (dest.write_bytes(b"same bytes"), os.chmod(str(dest), 0o666)),
    }
    for what, plant in cases.items():
        if what == "another user" and os.geteuid() != 0:
            continue  # chown to another user needs root (the tests run as root: dev/test.sh)
        pub = tmp_path / ("pub-" + what.replace(" ", "-"))
        pub.mkdir()
        plant(pub / "env-5.tar.gz")
        with pytest.raises(BuildError) as e:
            publish(str(src), str(pub))
        assert str(pub / "env-5.tar.gz") in str(e.value) and what.split()[0] in str(e.value), (what, e.value)


def test_publish_refuses_a_directory_others_may_write_without_the_sticky_bit(tmp_path):
    src = tmp_path / "env-6.tar.gz"
    src.write_bytes(b"x")
    pub = tmp_path / "pub"
    pub.mkdir()
    os.chmod(str(pub), 0o777)
    with pytest.raises(BuildError) as e:
        publish(str(src), str(pub))
    assert "777" in str(e.value) and "PONCHO_WQ_PUBLISH_DIR" in str(e.value) and os.listdir(pub) == []
    os.chmod(str(pub), 0o1777)  # sticky: others cannot replace our files (the checks above catch their own names)
    assert publish(str(src), str(pub)) == str(pub / "env-6.tar.gz")


def test_a_publisher_killed_mid_copy_leaves_nothing_for_long(tmp_path):
    # SIGKILL after the copy, before the link: the full-size temporary copy stayed for ever (and a plain server
    # listed it). The next publish() removes it once its process is gone; serve() never lists or serves dot names.
    src = tmp_path / "env-7.tar.gz"
    src.write_bytes(os.urandom(1 << 20))
    pub = tmp_path / "pub"
    code = ("import os, signal, sys\nimport poncho_wq.deliver.publish as p\ncopy = p.copy_contents\n"
            "def copy_then_die(a, b):\n    copy(a, b)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            "p.copy_contents = copy_then_die\np.publish(sys.argv[1], sys.argv[2])\n")
    r = subprocess.run([sys.executable, "-c", code, str(src), str(pub)], stdin=subprocess.DEVNULL)
    assert r.returncode == -9
    (left,) = os.listdir(pub)
    assert left.startswith(".tmp-") and os.path.getsize(pub / left) == 1 << 20
    with serve(str(pub)) as server:
        listing = subprocess.run(["curl", "-s", server.url], capture_output=True, text=True).stdout
        direct = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", server.url + left],
                                capture_output=True, text=True).stdout
    assert ".tmp-" not in listing and direct == "404", (listing, direct)
    other = tmp_path / "code-8.tar.gz"
    other.write_bytes(b"y")
    publish(str(other), str(pub))
    assert os.listdir(pub) == ["code-8.tar.gz"]


def test_distribution_object_is_validated():
    with pytest.raises(SpecError):
        Distribution("url", "/x", None)
    assert Distribution().mode == "direct"


# -- end to end on real workers --------------------------------------------------------------------------------
JOB = '''\
import sys

import humanize
from mylib import fmt

print("RESULT", fmt.describe(int(sys.argv[1])))
'''
MYLIB_FMT = '''\
import humanize


def describe(n):
    return "{}:{}".format(n, humanize.intcomma(n * 1000))
'''


@pytest.fixture
def project(tmp_path, humanize_installed):
    return job_project(tmp_path / "project", JOB, MYLIB_FMT)


def _expected(i):
    import humanize

    return "RESULT {}:{}".format(i, humanize.intcomma(i * 1000))


def _gets(log_path, prefix):
    with open(log_path) as f:
        return [ln.split() for ln in f if ln.split()[2:4] and ln.split()[3].startswith("/" + prefix)]


def _part_files(root):
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n.endswith(".part")]


@pytest.mark.e2e
def test_url_mode_one_get_per_worker_and_nothing_from_the_manager(cluster, project, e2e_cache, tmp_path):
    pub = tmp_path / "pub"
    pub.mkdir()
    log = tmp_path / "access.log"
    with serve(str(pub), log_path=str(log)) as server:
        env = {"PONCHO_WQ_PUBLISH_DIR": str(pub), "PONCHO_WQ_PUBLISH_URL": server.url}
        cluster.start_manager("distribution_manager.py", ["--tasks", "6", "--retries", "2"], project, e2e_cache, env)
        cluster.start_worker(cores=2, keep_envs=True)  # two tasks at once there: still one GET
        cluster.start_worker(cores=1, keep_envs=True)
        out = cluster.wait_results()
    results = out["results"]
    assert [(r["return_status"], r["shim_error"], r["mode"]) for r in results] == [(0, None, "url")] * 6, results
    for r in results:
        assert _expected(r["i"]) in r["output"]
    env_name = results[0]["env"]
    assert sorted(os.listdir(pub)) == sorted([env_name] + [n for n in os.listdir(pub) if n.startswith("code-")])
    ran = [n for n in cluster.tasks_run() if n]
    env_gets = _gets(str(log), "env-")
    assert len(env_gets) == len(ran), (env_gets, cluster.tasks_run())  # one GET per worker that ran a task
    assert all(g[4] == "200" for g in env_gets)
    assert len(_gets(str(log), "code-")) == len(ran)
    assert cluster.env_transfers(env_name) == [0, 0]  # the manager sent no tarball
    for ids, n in zip(cluster.unpacked_ids(), cluster.tasks_run()):
        assert sorted(i.split("-")[0] for i in ids) == (["code", "env"] if n else [])


@pytest.mark.e2e
def test_shared_mode_unpacks_once_in_total(cluster, project, e2e_cache, tmp_path):
    shared = tmp_path / "shared"
    env = {"PONCHO_WQ_DISTRIBUTION": "shared", "PONCHO_WQ_PUBLISH_DIR": str(shared)}
    cluster.start_manager("distribution_manager.py", ["--tasks", "6", "--retries", "2"], project, e2e_cache, env)
    for _ in range(3):
        cluster.start_worker(cores=1)
    out = cluster.wait_results()
    results = out["results"]
    assert [(r["return_status"], r["mode"]) for r in results] == [(0, "shared")] * 6, results
    for r in results:
        assert _expected(r["i"]) in r["output"]
    with open(shared / "envs" / "unpack.log") as f:
        ids = sorted(line.split()[2].split("-")[0] for line in f)
    assert ids == ["code", "env"]  # one unpack of each, in total, for all workers
    assert sum(cluster.unpack_counts()) == 0  # nothing unpacked in the workers' own dirs
    assert cluster.env_transfers(results[0]["env"]) == [0, 0, 0]
    assert sum(1 for r in cluster.tasks_run() if r) >= 1


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["url", "shared"])
def test_python_tasks_follow_the_mode(cluster, project, e2e_cache, tmp_path, mode):
    pub = tmp_path / "pub"
    pub.mkdir()
    with serve(str(pub)) as server:
        env = {"PONCHO_WQ_DISTRIBUTION": mode, "PONCHO_WQ_PUBLISH_DIR": str(pub)}
        if mode == "url":
            env["PONCHO_WQ_PUBLISH_URL"] = server.url
        cluster.start_manager("distribution_manager.py", ["--tasks", "3", "--python-task", "--retries", "2"],
                              project, e2e_cache, env)
        cluster.start_worker(cores=1, keep_envs=True)
        out = cluster.wait_results()
    import humanize

    assert [(r["return_status"], r["mode"], r["value"]) for r in out["results"]] == [
        (0, mode, humanize.intcomma(i * i)) for i in range(3)], out["results"]
    assert cluster.env_transfers(out["results"][0]["env"]) == [0]
    if mode == "shared":
        assert cluster.unpack_counts() == [0] and os.path.exists(pub / "envs" / out["results"][0]["env"][:-7])


def _cut_server(port, ready):
    """A server on *port* that dies mid-download (a separate process: it exits after cutting one transfer)."""
    code = '''
import http.server, os, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 22))
        self.end_headers()
        self.wfile.write(b"z" * (1 << 20))
        self.wfile.flush()
        os._exit(0)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
open(sys.argv[2], "w").close()
s.serve_forever()
'''
    p = subprocess.Popen([sys.executable, "-c", code, str(port), ready], stdin=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not os.path.exists(ready):
        assert p.poll() is None and time.time() < deadline, "the cutting server did not start"
        time.sleep(0.05)
    return p


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.e2e
@pytest.mark.parametrize("failure", ["404", "cut"])
def test_url_failure_is_named_on_the_manager_and_a_later_attempt_succeeds(cluster, project, e2e_cache, tmp_path,
                                                                         failure):
    pub = tmp_path / "pub"
    pub.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    port = _free_port()
    url = "http://127.0.0.1:{}/".format(port)
    if failure == "404":
        bad = serve(str(empty), port=port)  # serves nothing: every GET is a 404
        stop_bad = bad.stop
    else:
        bad = _cut_server(port, str(tmp_path / "cut-ready"))
        stop_bad = bad.kill
    # Both bindings end the task (a failing fetch command made Debian's CCTools requeue it without end and 7.17.1
    # end it INPUT_MISSING): the fetch writes a note, the task exits 2 (an HTTP error) or 3 (a cut transfer) naming
    # the URL, and the user's retry (here: --resubmit) succeeds once the server is back: nothing was kept.
    try:
        env = {"PONCHO_WQ_PUBLISH_DIR": str(pub), "PONCHO_WQ_PUBLISH_URL": url}
        cluster.start_manager("distribution_manager.py", ["--tasks", "1", "--retries", "0", "--resubmit"], project,
                              e2e_cache, env)
        workdir = os.path.join(cluster.tmp, "worker0")
        worker = start_worker_process(worker_binary(cluster.binding), cluster.port, workdir, 1,
                                      fixed_disk_args(cluster.tmp),  # as Cluster.start_worker's
                                      env={"PONCHO_ENV_DIR": os.path.join(workdir, "envs")})
        cluster.workers.append(worker)
        failed_file = cluster.out_file + ".failed"
        deadline = time.time() + 120
        while not os.path.exists(failed_file):
            assert cluster.manager.poll() is None, cluster.log()
            assert time.time() < deadline, cluster.log()
            time.sleep(0.2)
    finally:
        stop_bad()
        if failure == "cut":
            bad.wait()
    with open(failed_file) as f:
        (r,) = json.load(f)
    expected = 2 if failure == "404" else 3
    assert r["return_status"] == expected and r["shim_error"] and r["shim_error"][0] == expected, r
    message = r["shim_error"][1]
    assert "\n" not in message and url + r["env"] in message, message
    assert ("error: 404" in message) if failure == "404" else ("not kept" in message), message
    assert _part_files(cluster.tmp) == []  # no partial download on the worker
    assert cluster.unpack_counts() == [0]  # and no environment (half or whole) unpacked
    with serve(str(pub), port=port) as good:  # the server is back
        assert good.url == url and worker.poll() is None
        open(cluster.out_file + ".go", "w").close()
        out = cluster.wait_results()
    (again,) = out["retried"]
    assert again["return_status"] == 0 and again["shim_error"] is None, again
    assert _expected(0) in again["output"]
    assert sorted(i.split("-")[0] for ids in cluster.unpacked_ids() for i in ids) == ["code", "env"]


def test_plan_publishes_and_names_per_mode(tmp_path):
    from poncho_wq.assemble.environment import Environment
    from poncho_wq.task import plan_distribution

    tarball = tmp_path / "env-0123456789abcdef0123456789abcdef.tar.gz"
    tarball.write_bytes(b"not really a tarball")
    env = Environment.from_tarball(str(tarball))
    direct = plan_distribution(env, None, "direct")
    name = "env-0123456789abcdef0123456789abcdef.tar.gz"
    assert (direct.env, direct.urls, direct.files) == (name, {}, {name: str(tarball)})
    pub = tmp_path / "pub"
    url = plan_distribution(env, None, Distribution("url", str(pub), "http://h:1/p"))
    assert url.urls == {name: "http://h:1/p/" + name} and url.files == {}
    assert (pub / name).read_bytes() == tarball.read_bytes()
    env.distribution = Distribution("shared", str(pub), "file:///mnt/s")  # per environment, over the settings
    shared = plan_distribution(env)
    assert (shared.env, shared.env_dir, shared.urls, shared.files) == ("/mnt/s/" + name, "/mnt/s/envs", {}, {})


# -- integrity of fetched environments, on real workers of both bindings (issue 29) ------------------------------
HOSTILE = os.path.join(HELPERS, "hostile_server.py")


def _hostile_server(tmp_path, pub, mode):
    """A real server process serving *pub* that lies about env-* files (tests/helpers/hostile_server.py)."""
    port_file, log = tmp_path / "hostile.port", tmp_path / "hostile.log"
    p = subprocess.Popen([sys.executable, HOSTILE, str(pub), str(port_file), str(log), mode],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not port_file.exists():
        assert p.poll() is None and time.time() < deadline, "the hostile server did not start"
        time.sleep(0.05)
    p.url = "http://127.0.0.1:{}/".format(port_file.read_text())
    p.log = log
    return p


def _stop(p):
    p.kill()
    p.wait()


def _env_gets(p):
    return [ln for ln in p.log.read_text().splitlines() if ln.startswith("GET /env-")] if p.log.exists() else []


@pytest.mark.e2e
def test_url_mode_a_lying_server_fails_the_task_with_exit_3_and_runs_nothing_of_it(cluster, project, e2e_cache,
                                                                                  tmp_path):
    # The server returns a valid poncho tarball with an extra activation script under the published name: the
    # worker must check the bytes against the published size and sha256 before anything is unpacked.
    pub = tmp_path / "pub"
    pub.mkdir()
    server = _hostile_server(tmp_path, pub, "lie")
    try:
        env = {"PONCHO_WQ_PUBLISH_DIR": str(pub), "PONCHO_WQ_PUBLISH_URL": server.url}
        cluster.start_manager("distribution_manager.py", ["--tasks", "2", "--retries", "0"], project, e2e_cache, env)
        cluster.start_worker(cores=1, keep_envs=True)
        out = cluster.wait_results(timeout=300)
    finally:
        _stop(server)
    assert _env_gets(server), "the lie was never served"
    for r in out["results"]:
        assert "INJECTED-ACTIVATION" not in r["output"], r
        assert r["return_status"] == 3 and r["shim_error"], r
        code, message = r["shim_error"]
        # (Its size differs from the published one here; same-size other bytes fail on the sha256: fast tests.)
        assert code == 3 and server.url + r["env"] in message and "published" in message, message
    assert cluster.unpack_counts() == [0]  # nothing of it unpacked
    assert _part_files(cluster.tmp) == []


@pytest.mark.e2e
def test_url_mode_a_close_delimited_cut_is_not_cached_and_the_next_task_fetches_again(cluster, project, e2e_cache,
                                                                                     tmp_path):
    # HTTP/1.0 without Content-Length, cut at half: curl exits 0 with a short file. It must fail that task (exit 3,
    # the URL named) and leave nothing behind: the next task on the same worker fetches again and succeeds.
    pub = tmp_path / "pub"
    pub.mkdir()
    server = _hostile_server(tmp_path, pub, "cut-once")
    try:
        env = {"PONCHO_WQ_PUBLISH_DIR": str(pub), "PONCHO_WQ_PUBLISH_URL": server.url}
        cluster.start_manager("distribution_manager.py", ["--tasks", "1", "--retries", "0", "--resubmit"], project,
                              e2e_cache, env)
        workdir = os.path.join(cluster.tmp, "worker0")
        worker = start_worker_process(worker_binary(cluster.binding), cluster.port, workdir, 1,
                                      fixed_disk_args(cluster.tmp),  # as Cluster.start_worker's
                                      env={"PONCHO_ENV_DIR": os.path.join(workdir, "envs")})
        cluster.workers.append(worker)
        failed_file = cluster.out_file + ".failed"
        deadline = time.time() + 240
        while not os.path.exists(failed_file):
            assert cluster.manager.poll() is None, cluster.log()
            assert time.time() < deadline, "the cut download did not fail the task:\n" + cluster.log()
            time.sleep(0.2)
        with open(failed_file) as f:
            (r,) = json.load(f)
        assert r["return_status"] == 3 and r["shim_error"] and r["shim_error"][0] == 3, r
        assert server.url + r["env"] in r["shim_error"][1], r["shim_error"]
        open(cluster.out_file + ".go", "w").close()
        out = cluster.wait_results(timeout=300)
    finally:
        _stop(server)
    (again,) = out["retried"]
    assert again["return_status"] == 0 and again["shim_error"] is None, again
    assert _expected(0) in again["output"]
    assert len(_env_gets(server)) >= 2  # fetched again, not served from a cached short file


@pytest.mark.e2e
def test_url_mode_a_stalled_server_fails_the_task_within_the_fetch_timeout(cluster, project, e2e_cache, tmp_path):
    # The server sends the headers and 1,000 bytes, then holds the connection. The whole fetch is bounded
    # (PONCHO_WQ_FETCH_TIMEOUT): the task fails, naming the URL and the timeout, once; the manager does not drop
    # the worker and send the task again and again.
    pub = tmp_path / "pub"
    pub.mkdir()
    server = _hostile_server(tmp_path, pub, "stall")
    try:
        env = {"PONCHO_WQ_PUBLISH_DIR": str(pub), "PONCHO_WQ_PUBLISH_URL": server.url,
               "PONCHO_WQ_FETCH_TIMEOUT": "4"}
        cluster.start_manager("distribution_manager.py", ["--tasks", "1", "--retries", "0"], project, e2e_cache, env)
        # A fixed disk (start_worker's default): with the measured free space, Debian's worker often "forsook" the
        # task after the stalled fetch (other work had written to the disk meanwhile) and fetched again when it was
        # sent again (20-41 s).
        cluster.start_worker(cores=1, keep_envs=True)
        out = cluster.wait_results(timeout=240)
    finally:
        _stop(server)
    (r,) = out["results"]
    assert r["return_status"] == 3 and r["shim_error"] and r["shim_error"][0] == 3, r
    message = r["shim_error"][1]
    assert server.url + r["env"] in message and "reachable" not in message and "4 s" in message, message
    assert len(_env_gets(server)) == 1, _env_gets(server)  # once: not sent again


@pytest.mark.e2e
@pytest.mark.parametrize("missing", [("curl",), ("curl", "wget", "busybox")])
def test_url_mode_on_a_worker_without_curl(cluster, project, e2e_cache, tmp_path, missing):
    # Issue 25: a worker without curl logged "curl: not found" and the manager waited for ever (Debian's binding
    # requeued the task without end). wget (GNU or busybox) is used when present; with no downloader at all the
    # task ends with exit 4 and a message saying what the worker lacks.
    pub = tmp_path / "pub"
    pub.mkdir()
    with serve(str(pub)) as server:
        env = {"PONCHO_WQ_PUBLISH_DIR": str(pub), "PONCHO_WQ_PUBLISH_URL": server.url}
        cluster.start_manager("distribution_manager.py", ["--tasks", "1", "--retries", "0"], project, e2e_cache, env)
        workdir = os.path.join(cluster.tmp, "worker0")
        worker = start_worker_process(worker_binary(cluster.binding), cluster.port, workdir, 1,
                                      ["--single-shot"] + fixed_disk_args(cluster.tmp),
                                      env={"PATH": path_without(tmp_path, *missing),
                                           "PONCHO_ENV_DIR": os.path.join(workdir, "envs")})
        cluster.workers.append(worker)
        out = cluster.wait_results(timeout=300)
    (r,) = out["results"]
    if missing == ("curl",):
        assert r["return_status"] == 0 and r["shim_error"] is None, r
        assert _expected(0) in r["output"]
    else:
        assert r["return_status"] == 4 and r["shim_error"] and r["shim_error"][0] == 4, r
        message = r["shim_error"][1]
        assert server.url + r["env"] in message and "curl" in message and "wget" in message, message
    # The manager says so itself, once, on the poncho_wq logger (stderr here): the worker, the URL and the cause.
    said = [line for line in cluster.log().splitlines() if "could not get its environment" in line]
    if missing == ("curl",):
        assert said == [], said
    else:
        assert len(said) == 1 and "on worker " in said[0] and server.url + r["env"] in said[0], said
        assert "no curl, wget or busybox wget" in said[0] and "(exit 4)" in said[0], said


# == the adversarial review (issue 16) ==========================================================================
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
