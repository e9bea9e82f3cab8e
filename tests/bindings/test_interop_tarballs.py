"""Tarballs cross over, on real workers: upstream's -> our shim; ours -> Debian's python_package_run; ours ->
TaskVine through poncho_wq.taskvine (its own unpack mini task; TaskVine's declare_poncho of our tarballs is
tests/bindings/test_taskvine_upstream.py's).

The managers run in this process with the source-built ``ndcctools`` bindings (dev/test.sh puts them on
PYTHONPATH); workers run with PATH=/usr/bin:/bin (Debian's python3, without humanize).
"""

import json
import os
import shutil
import sys

import pytest

from helpers.cli import run_cli, script
from helpers.parslutil import Workers, pip_pin
from helpers.wqutil import cctools_bin
from helpers.shimutil import make_prefix, pack

UPSTREAM_RUN_IN_ENV = (  # what upstream's poncho_package_create writes as bin/run_in_env (CCTools 7.17.1)
    "#! /bin/sh\n"
    'env_dir=$(dirname $( cd -- "$( dirname -- "$0" )" > /dev/null 2>&1 && pwd ))\n'
    'export PONCHO_PREFIX="${env_dir}"\n'
    'exec "${env_dir}"/bin/poncho_package_run -e ${env_dir} "$@"\n'
)
PROBE = "import humanize, sys; print('RESULT', humanize.intcomma(1234567), sys.executable)"


@pytest.fixture(scope="module")
def humanize_env(tmp_path_factory):
    """A poncho_wq tarball (poncho_package_create, portable engine) with humanize."""
    d = tmp_path_factory.mktemp("humanize-env")
    spec = d / "spec.json"
    spec.write_text(json.dumps({"python": "{}.{}.{}".format(*sys.version_info[:3]), "pip": [pip_pin("humanize")]}))
    out = d / "env.tar.gz"
    r = run_cli("poncho_package_create", spec, out, env={"PONCHO_WQ_CACHE": str(d / "cache")})
    assert r.returncode == 0, r.stderr
    return str(out)


def run_wq(tmp_path, tasks, n_workers=1, worker_env=None):
    """Run Work Queue tasks (command, [input files]) on local source-built workers; return per task
    (exit code, stdout) in order, and the Workers."""
    from ndcctools import work_queue as wq

    q = wq.WorkQueue(port=0)
    workers = Workers(tmp_path / "workers").start(cctools_bin("work_queue_worker"), q.port, n=n_workers,
                                                  env=worker_env)
    try:
        ids = {}
        for i, (command, inputs) in enumerate(tasks):
            t = wq.Task(command)
            for path in inputs:
                t.specify_input_file(path, os.path.basename(path), cache=True)
            ids[q.submit(t)] = i
        out = [None] * len(tasks)
        while not q.empty():
            t = q.wait(5)
            if t:
                out[ids[t.id]] = (t.return_status, t.output or "")
            assert all(p.poll() is None for p in workers.procs), "a worker died"
        return out, workers
    finally:
        workers.close()


@pytest.mark.parametrize("with_run_in_env", [False, True])
def test_upstream_tarball_runs_under_our_shim(tmp_path, with_run_in_env):
    """A tarball made by upstream's recipe (plain conda_pack.pack of a prefix; optionally with upstream's
    bin/run_in_env and upstream's own poncho_package_run inside) runs under our shim on a worker."""
    prefix = make_prefix(tmp_path / "build")
    if with_run_in_env:
        with open(os.path.join(prefix, "bin", "run_in_env"), "w") as f:
            f.write(UPSTREAM_RUN_IN_ENV)
        os.chmod(os.path.join(prefix, "bin", "run_in_env"), 0o755)
        shutil.copy(cctools_bin("poncho_package_run"), os.path.join(prefix, "bin", "poncho_package_run"))
    tarball = pack(prefix, tmp_path / "upstream-env.tar.gz")
    shim = script("poncho_package_run")
    cmd = './poncho_package_run -e upstream-env.tar.gz sh -c \'hello; echo "activated=$PONCHO_TEST_ACTIVATED"\''
    results, workers = run_wq(tmp_path, [(cmd, [shim, tarball])] * 3)
    for status, output in results:
        assert status == 0, output
        lines = output.split()
        env_dir = lines[0][len("prefix="):]
        # Relocated by our shim for the per-worker cache dir it runs from, and activated (activate.d ran).
        assert "/poncho-{}/upstream-env.tar.gz-".format(os.getuid()) in env_dir  # beside the workspace (issue 27)
        assert lines[1] == "activated=" + env_dir
    assert workers.unpack_counts() == [1]


def test_our_tarball_runs_under_debian_python_package_run(tmp_path, humanize_env):
    """Debian's /usr/bin/python_package_run (bash) sources bin/activate and executes bin/conda-unpack directly.
    conda-pack's own conda-unpack starts with `#!/usr/bin/env python`, which fails on a worker that has only
    python3 (Debian without python-is-python3); ours starts with an sh/Python header that runs the
    environment's own bin/python, so the scrubbed worker (PATH=/usr/bin:/bin, no `python`) runs it."""
    debian_run = "/usr/bin/python_package_run"
    assert os.path.exists(debian_run), "Debian's coop-computing-tools is needed (dev/setup.sh installs it)"
    assert not os.path.exists("/usr/bin/python") and not os.path.exists("/bin/python"), \
        "this test proves the worker needs no `python` on PATH"
    cmd = "./python_package_run -e env.tar.gz python3 -c \"{}\"".format(PROBE)
    results, _ = run_wq(tmp_path / "no-python", [(cmd, [debian_run, humanize_env])] * 2)
    for status, output in results:
        assert status == 0, output
        line = [x for x in output.splitlines() if x.startswith("RESULT")][0].split()
        assert line[1] == "1,234,567"
        assert line[2] != "/usr/bin/python3" and line[2].endswith("/bin/python3")


def test_our_tarball_under_taskvine_declare_environment(tmp_path, humanize_env):
    """poncho_wq.taskvine.declare_environment: TaskVine unpacks it with our mini task (the shim's --extract-to)
    once per worker and runs each task through the tarball's bin/run_in_env (relocated lazily)."""
    from ndcctools import taskvine as vine

    from poncho_wq.taskvine import PonchoVineTask, declare_environment

    m = vine.Manager(port=0, run_info_path=str(tmp_path / "vine-run-info"))  # not in the cwd
    workers = Workers(tmp_path / "workers").start(cctools_bin("vine_worker"), m.port, n=2,
                                                  extra=["--keep-workspace"])
    try:
        env = declare_environment(m, humanize_env)
        assert declare_environment(m, humanize_env) is env  # declared once per manager
        for i in range(6):
            if i % 2:
                t = PonchoVineTask(m, "python3 -c \"{}\"".format(PROBE), environment=humanize_env)
            else:
                t = vine.Task("python3 -c \"{}\"".format(PROBE))
                t.add_environment(env)
            m.submit(t)
        outputs = []
        while not m.empty():
            t = m.wait(5)
            if t:
                assert t.successful() and t.exit_code == 0, (t.result, t.output)
                outputs.append(t.output)
            assert all(p.poll() is None for p in workers.procs), "a worker died"
    finally:
        workers.close()
    used = []
    for w in workers.procs:
        mine = [o for o in outputs if (w.workdir + os.sep) in o]
        used.append(bool(mine))
    for o in outputs:
        line = [x for x in o.splitlines() if x.startswith("RESULT")][0].split()
        assert line[1] == "1,234,567" and "/ws/cache/" in line[2], o
    assert len(outputs) == 6 and any(used)
    assert workers.debug_lines("via mini task") == [1 if u else 0 for u in used]
