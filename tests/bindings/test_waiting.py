"""A manager that waits says why (issue 25): tasks waiting and no worker connected for PONCHO_WQ_NO_WORKER_NOTICE
seconds give one warning on the ``poncho_wq`` logger with the queue's real port and the worker command of the
binding in use; the usual logging configuration silences it. Real queues of Debian's work_queue,
ndcctools.work_queue and TaskVine, no worker (the cases with a worker are tests/bindings/test_waiting_e2e.py)."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers.shimutil import make_prefix, pack
from helpers.wqutil import cctools_bin, manager_env, worker_binary

from poncho_wq.config import Settings
from poncho_wq.errors import SpecError

#: The binding's queue as users write it, our task submitted, then the user's own ``wait`` loop.
MANAGER = r'''
import logging, os, sys, time
which, tarball, mode = sys.argv[1:4]
if mode == "silenced":
    logging.getLogger("poncho_wq").setLevel(logging.ERROR)
if which == "taskvine":
    from ndcctools.taskvine import Manager
    from poncho_wq.taskvine import PonchoVineTask
    q = Manager(port=0)
    q.submit(PonchoVineTask(q, "hello", environment=tarball))
else:
    from poncho_wq import PonchoTask, wq
    q = wq.load().WorkQueue(port=0)
    q.submit(PonchoTask("hello", environment=tarball))
print("PORT", q.port, flush=True)
start = time.monotonic()
while not q.empty() and time.monotonic() - start < 3:
    t = q.wait(1)
print("WAITED", int(round(time.monotonic() - start)), flush=True)
'''

BINDINGS = ("debian", "ndcctools.work_queue", "taskvine")


def worker_for(binding):
    return cctools_bin("vine_worker") if binding == "taskvine" else worker_binary(binding)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    where = tmp_path_factory.mktemp("env")
    return pack(make_prefix(where), where / "env.tar.gz")


def run_manager(tmp_path, binding, tarball, mode="plain", notice="1"):
    (tmp_path / "manager.py").write_text(MANAGER)
    env = manager_env("debian" if binding == "taskvine" else binding, str(tmp_path / "cache"),
                      {"PONCHO_WQ_NO_WORKER_NOTICE": notice})
    r = subprocess.run([sys.executable, "manager.py", binding, tarball, mode], cwd=tmp_path, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    port = int(re.search(r"^PORT (\d+)$", r.stdout, re.M).group(1))
    assert re.search(r"^WAITED 3$", r.stdout, re.M), r.stdout  # the user's timeouts still add up
    return port, [line for line in r.stderr.splitlines() if "no worker connected" in line]


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_waiting_manager_without_workers_says_its_port_and_worker_command_once(tmp_path, binding, tarball):
    port, notices = run_manager(tmp_path, binding, tarball)
    assert len(notices) == 1, notices
    line = notices[0]
    assert line.startswith("poncho_wq: 1 task waiting and no worker connected for 1 s")
    assert "port {}".format(port) in line
    # the command is the binding's own worker (Debian's for Debian's binding), and it runs as printed
    m = re.search(r"`(\S+) localhost (\d+)`", line)
    assert m and int(m.group(2)) == port, line
    program = m.group(1)
    assert os.path.realpath(shutil.which(program) or program) == os.path.realpath(worker_for(binding)), line
    assert os.path.basename(program) == ("vine_worker" if binding == "taskvine" else "work_queue_worker")


def test_the_usual_logging_config_silences_it(tmp_path, tarball):
    _port, notices = run_manager(tmp_path, "ndcctools.work_queue", tarball, mode="silenced")
    assert notices == []


def test_zero_turns_it_off(tmp_path, tarball):
    _port, notices = run_manager(tmp_path, "debian", tarball, notice="0")
    assert notices == []


def test_setting_values():
    assert Settings({}).no_worker_notice == 30.0
    assert Settings({"PONCHO_WQ_NO_WORKER_NOTICE": "0"}).no_worker_notice == 0.0
    assert Settings({"PONCHO_WQ_NO_WORKER_NOTICE": "2.5"}).no_worker_notice == 2.5
    with pytest.raises(SpecError, match="PONCHO_WQ_NO_WORKER_NOTICE"):
        Settings({"PONCHO_WQ_NO_WORKER_NOTICE": "soon"}).no_worker_notice
    assert Settings({}).progress == "auto"
    assert Settings({"PONCHO_WQ_PROGRESS": " On "}).progress == "on"
    with pytest.raises(SpecError, match="PONCHO_WQ_PROGRESS"):
        Settings({"PONCHO_WQ_PROGRESS": "yes"}).progress
