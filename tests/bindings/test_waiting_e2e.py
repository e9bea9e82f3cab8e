"""A manager that waits says why, with real workers (issue 25; the cases without a worker are
tests/bindings/test_waiting.py):

* an endless ``q.wait()`` with no worker gives the notice (the wait is cut into slices: the bindings hold the GIL
  in ``wait``), and the worker command it prints, run as printed (plus a fixed ``--disk``), completes the task;
* with a worker connected, a wait longer than the notice delay says nothing.
"""

import re
import shutil
import subprocess
import sys
import threading

import pytest

from helpers.shimutil import make_prefix, pack
from helpers.wqutil import fixed_disk_args, manager_env, start_worker_process, stop_worker_process
from test_waiting import BINDINGS, worker_for

MANAGER = r'''
import os, sys, time
which, tarball, mode = sys.argv[1:4]
if which == "taskvine":
    from ndcctools.taskvine import Manager
    from poncho_wq.taskvine import PonchoVineTask
    q = Manager(port=0)
    make = lambda cmd: PonchoVineTask(q, cmd, environment=tarball)
    status = lambda t: t.exit_code
else:
    from poncho_wq import PonchoTask, wq
    q = wq.load().WorkQueue(port=0)
    make = lambda cmd: PonchoTask(cmd, environment=tarball)
    status = lambda t: t.return_status
print("PORT", q.port, flush=True)
if mode == "forever":
    q.submit(make("hello"))
    t = q.wait()
else:
    while not q.stats.workers_connected:  # the notice is about waiting tasks: submit once the worker is here
        q.wait(1)
    q.submit(make("sh -c 'sleep 4; hello'"))  # TaskVine wraps the command as it is
    t = None
    while t is None:
        t = q.wait(1)
print("DONE", status(t), t.std_output.strip().splitlines()[-1:], flush=True)
'''


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    where = tmp_path_factory.mktemp("env")
    return pack(make_prefix(where, run_in_env=True), where / "env.tar.gz")


def start_manager(tmp_path, binding, tarball, mode):
    (tmp_path / "manager.py").write_text(MANAGER)
    env = manager_env("debian" if binding == "taskvine" else binding, str(tmp_path / "cache"),
                      {"PONCHO_WQ_NO_WORKER_NOTICE": "1"})
    proc = subprocess.Popen([sys.executable, "manager.py", binding, tarball, mode], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.match(r"PORT (\d+)$", line.strip())
    if not m:
        proc.kill()
        raise AssertionError(line + proc.stdout.read() + proc.stderr.read())
    return proc, int(m.group(1))


def finish(proc, worker):
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_worker_process(worker)
    assert proc.returncode == 0, out + err
    assert "DONE 0 ['prefix=" in out, out + err
    return err


@pytest.mark.parametrize("binding", BINDINGS)
def test_an_endless_wait_says_it_and_the_printed_command_starts_a_worker(tmp_path, binding, tarball):
    proc, port = start_manager(tmp_path, binding, tarball, "forever")
    worker = None
    seen, noticed = [], threading.Event()

    def read():  # the notice comes while q.wait() blocks; a manager that never says it must fail, not hang
        for line in proc.stderr:
            seen.append(line)
            if "no worker connected" in line:
                noticed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert noticed.wait(120), "".join(seen)
        notice = next(line for line in seen if "no worker connected" in line)
        assert "no worker connected for 1 s" in notice and "port {}".format(port) in notice, notice
        command = re.search(r"on this machine: `([^`]+)`", notice).group(1).split()
        assert command[1:] == ["localhost", str(port)]
        program = shutil.which(command[0])  # as found from the manager's shell (the workers' PATH is scrubbed)
        # The printed command plus a fixed disk (as Cluster.start_worker's): the option changes what the worker
        # reports, not whether the command connects.
        worker = start_worker_process(program, command[2], str(tmp_path / "worker"), extra=fixed_disk_args(tmp_path))
        out = proc.stdout.read()
        assert proc.wait(300) == 0, out + "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
        if worker is not None:
            stop_worker_process(worker)
    reader.join(30)
    assert "DONE 0 ['prefix=" in out, out + "".join(seen)
    assert len([line for line in seen if "no worker" in line]) == 1, seen  # said once


@pytest.mark.parametrize("binding", BINDINGS)
def test_no_notice_while_a_worker_is_connected(tmp_path, binding, tarball):
    proc, port = start_manager(tmp_path, binding, tarball, "connected")
    try:
        worker = start_worker_process(worker_for(binding), port, str(tmp_path / "worker"),
                                      extra=fixed_disk_args(tmp_path))
    except BaseException:
        proc.kill()
        raise
    err = finish(proc, worker)
    assert "no worker" not in err, err
