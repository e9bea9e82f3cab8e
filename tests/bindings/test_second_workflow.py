"""A second workflow on the same, still running workers finds its environment ready (issue 27).

Users run many short workflows a day against long-lived workers (batch pilots, ``work_queue_factory``,
``vine_factory``). Work Queue empties a worker's workspace at every manager disconnect, where the shim used to
unpack (``$WORKER_TMPDIR/poncho-envs``); TaskVine deletes workflow-level cache entries then. Here two manager
processes, one after the other on the same port, run tasks of one environment on the same real workers (not
``--single-shot``): the second must not unpack again, and TaskVine must not send the base again.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers.parslutil import Workers, client_env, free_port, tail
from helpers.shimutil import make_prefix, pack
from helpers.wqutil import BINDINGS, cctools_bin, manager_env, worker_binary
from poncho_wq.archive.cache import Cache

pytestmark = pytest.mark.e2e

DRIVER = r'''
import json, os, sys, tempfile
kind, out, port, tarball, phase = sys.argv[1:6]
port = int(port)
# Run 1 leaves a mark inside the unpacked environment; run 2 reads it: a re-unpacked environment has none.
command = ('hello; m="$CONDA_PREFIX/.second_workflow_mark"; if [ {} = 1 ]; then : >"$m"; fi; '
           'if [ -e "$m" ]; then echo MARK; fi').format(phase)
results = []
def port_file(port):
    with open(out + ".port.tmp", "w") as f:
        f.write(str(port))
    os.rename(out + ".port.tmp", out + ".port")
if kind == "vine":
    from ndcctools import taskvine as vine
    from poncho_wq.taskvine import PonchoVineTask
    m = vine.Manager(port=port, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
    port_file(m.port)
    for i in range(4):
        m.submit(PonchoVineTask(m, command, environment=tarball, cores=1))
    while not m.empty():
        t = m.wait(5)
        if t:
            results.append([t.exit_code, t.std_output])
    sent = m.stats.bytes_sent
else:
    import poncho_wq
    from poncho_wq import wq
    binding = wq.load()
    q = binding.WorkQueue(port=port)
    port_file(q.port)
    for i in range(4):
        t = poncho_wq.PonchoTask(command, environment=tarball)
        t.specify_cores(1)
        q.submit(t)
    while not q.empty():
        t = q.wait(5)
        if t:
            results.append([t.return_status, t.std_output])
    sent = q.stats.bytes_sent
with open(out, "w") as f:
    json.dump({"results": results, "bytes_sent": sent}, f)
'''


def _run_manager(tmp_path, kind, phase, port, tarball, env, workers=None, start_workers=None):
    out = tmp_path / "out{}.json".format(phase)
    log = tmp_path / "driver{}.log".format(phase)
    with open(str(log), "w") as logf:
        proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), kind, str(out), str(port), tarball,
                                 str(phase)], cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while not os.path.exists(str(out) + ".port"):
            assert proc.poll() is None, "manager exited early:\n" + tail(str(log))
            assert time.time() < deadline, "manager did not start:\n" + tail(str(log))
            time.sleep(0.1)
        port = int(open(str(out) + ".port").read())
        if start_workers:
            start_workers(port)
        proc.wait(timeout=max(1, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, tail(str(log))
    with open(str(out)) as f:
        return json.load(f), port


def _second_workflow(tmp_path, kind, binary, env, serve_logs=None, content_named=False, tarball=None, between=None):
    """Two managers, one after the other, on the same worker; *tarball* (default: a 2 MB packed prefix) is the
    environment; *between* is called after the first manager's process ended."""
    if tarball is None:
        tarball = pack(make_prefix(tmp_path, random_mb=2, run_in_env=True), tmp_path / "env.tar.gz")
    if content_named:
        # Named by its content, as the build cache names it (env-<hex>.tar.gz).
        with open(tarball, "rb") as f:
            named = str(tmp_path / "env-{}.tar.gz".format(hashlib.md5(f.read()).hexdigest()))
        os.rename(tarball, named)
        tarball = named
    size = os.path.getsize(tarball)
    (tmp_path / "driver.py").write_text(DRIVER)
    workers = Workers(tmp_path / "workers")
    try:
        # The second manager must listen where the workers look for one: the first one's port. A port of the
        # kernel's ephemeral range (Debian's binding scans up from 1024 for port 0, where other tests' managers
        # take the next free port between our two).
        if serve_logs:
            env = dict(env, PONCHO_WQ_SERVE_LOG=str(serve_logs[0]))
        first, port = _run_manager(tmp_path, kind, 1, free_port(), tarball, env,
                                   start_workers=lambda p: workers.start(binary, p, n=1, cores=2))
        assert [r[0] for r in first["results"]] == [0] * 4, first
        assert serve_logs or first["bytes_sent"] >= size, first  # (serve: the base is fetched, not sent)
        assert workers.procs[0].poll() is None, "the worker must outlive the first manager"
        if serve_logs:
            env = dict(env, PONCHO_WQ_SERVE_LOG=str(serve_logs[1]))
        if between:
            between()
        second, _ = _run_manager(tmp_path, kind, 2, port, tarball, env)
    finally:
        workers.close()
    assert [r[0] for r in second["results"]] == [0] * 4, second
    # Ready from the first workflow: the mark the first workflow's tasks left in it is there.
    assert all("MARK" in r[1] for r in second["results"]), second
    return first, second, size, workers


def test_taskvine_second_workflow_neither_sends_nor_unpacks_the_base(tmp_path):
    """A tarball named by its content, as the build cache's, is declared at the workflow level
    (poncho_wq.taskvine._tarball_cache: no md5 of it in each manager process): the second manager finds the
    unpacked output by the unpack mini task's name, which must then be the same in both manager processes."""
    first, second, size, workers = _second_workflow(tmp_path, "vine", cctools_bin("vine_worker"),
                                              client_env(PONCHO_WQ_CACHE=str(tmp_path / "cache")),
                                              content_named=True)
    # The base is not sent again: what the second manager sent is at most 1% of the tarball.
    assert second["bytes_sent"] <= size / 100, (second["bytes_sent"], size)
    # The first manager released the worker when its process ended (the driver keeps it in a global of a script
    # that defines functions: freed during the interpreter's shutdown, poncho_wq.wq.quiet_at_exit). A manager that
    # only drops the connection makes vine_worker sleep 5 s before it looks for the next one.
    assert _released_before_first_disconnect(workers.procs[0].workdir), "the first manager did not release its worker"


def test_taskvine_same_content_rebuild_is_the_same_worker_cache_entry(tmp_path):
    """A build cache entry removed (``poncho_wq cache rm`` / ``prune``) and built again with the same bytes between
    two workflows: its mtime is derived from its content (poncho_wq.identity.set_content_mtime), so TaskVine, which
    names a workflow-level file by path, size and mtime, sees the same file. The second manager neither sends it
    nor has it unpacked again: its tasks run in the first workflow's unpacked environment. (Before, the rebuild's
    new mtime made a new name: the whole tarball sent again, and a second unpacked copy on the worker.)"""
    packed = pack(make_prefix(tmp_path, random_mb=2, run_in_env=True), tmp_path / "packed.tar.gz")
    cache = Cache(str(tmp_path / "cache"))
    key = hashlib.sha256(b"same-content-rebuild").hexdigest()

    def build():
        return cache.build(key, lambda out: shutil.copyfile(packed, out), {"summary": "test"})

    tarball, hit = build()
    assert not hit

    def rebuild():
        cache.remove(key)
        assert not os.path.exists(tarball)
        again, hit = build()
        assert (again, hit) == (tarball, False)

    first, second, size, _ = _second_workflow(tmp_path, "vine", cctools_bin("vine_worker"),
                                              client_env(PONCHO_WQ_CACHE=str(tmp_path / "cache")),
                                              tarball=tarball, between=rebuild)
    assert first["bytes_sent"] >= size, first
    assert second["bytes_sent"] <= size / 100, (second["bytes_sent"], size)
    # The same unpacked environment (the same directory of the worker's cache) in both workflows.
    dirs = {r[1].split("prefix=", 1)[1].split()[0] for r in first["results"] + second["results"]}
    assert len(dirs) == 1, dirs


def _released_before_first_disconnect(workdir):
    """Whether a worker's debug log says ``released by manager`` before its first ``disconnecting from manager``
    (vine_worker.c's disconnect_manager skips its 5 s sleep only after a release)."""
    with open(os.path.join(workdir, "debug.log"), errors="replace") as f:
        for line in f:
            if "released by manager" in line:
                return True
            if "disconnecting from manager" in line:
                return False
    return False


@pytest.mark.parametrize("binding", BINDINGS)
def test_work_queue_second_workflow_does_not_unpack_again(tmp_path, binding):
    env = manager_env(binding, str(tmp_path / "cache"), client_env())
    first, second, size, workers = _second_workflow(tmp_path, "wq", worker_binary(binding), env)
    # One unpack in all, by the first workflow (the shim's unpack.log, beside the worker's workspace).
    assert workers.unpack_counts() == [1], workers.unpack_counts()


def _gets(log):
    """The GETs of the base in a cache server's access log (``<epoch> <client> GET /env-... 200``)."""
    try:
        with open(str(log)) as f:
            return [line.split()[3] for line in f if line.split()[2:3] == ["GET"]]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("binding", BINDINGS)
def test_work_queue_serve_mode_second_workflow_neither_fetches_nor_unpacks(tmp_path, binding):
    """PONCHO_WQ_DISTRIBUTION=serve: the base is no input; the first workflow's worker fetches it once from that
    manager's cache server, the second manager's tasks find it ready: 0 GETs at the second server, 0 unpacks, and
    the second manager sends only what the first sent besides the base (the shim)."""
    env = manager_env(binding, str(tmp_path / "cache"), client_env(PONCHO_WQ_DISTRIBUTION="serve"))
    logs = [tmp_path / "serve1.log", tmp_path / "serve2.log"]
    first, second, size, workers = _second_workflow(tmp_path, "wq", worker_binary(binding), env, logs)
    gets = _gets(logs[0])
    assert len(gets) == 1 and gets[0].startswith("/env-"), gets  # one worker, one fetch for 4 tasks
    assert _gets(logs[1]) == []  # the base is not fetched again ...
    assert workers.unpack_counts() == [1], workers.unpack_counts()  # ... nor unpacked
    # ... nor sent by the manager: neither workflow sent it (the shim only, the same bytes each time).
    assert first["bytes_sent"] < size / 10, (first["bytes_sent"], size)
    assert second["bytes_sent"] <= first["bytes_sent"], (first, second)
