"""Work Queue's own PythonTask + specify_environment(<poncho_wq tarball>), unchanged, on real workers.

Both bindings look the run shim up on PATH (Debian's CCTools 8 ``work_queue``: ``python_package_run``, with dill;
current ``ndcctools.work_queue``: ``poncho_package_run``, with cloudpickle), copy that very file to the worker and
run ``./<shim> -e ENV --unpack-to "$WORK_QUEUE_SANDBOX"/ENV-env python pytask_wrapper.py ...``.  Our shim links a
new --unpack-to path inside the announced sandbox to its per-worker cache (one unpack per worker).  Both workers
tested here set WORK_QUEUE_SANDBOX to the worker's workspace, shared by its tasks; the per-task case (a fresh
sandbox per task, as with VINE_SANDBOX) is covered with the shim alone below, with the paths left to upstream's
in-place semantics.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers.cli import run_cli, script
from helpers.parslutil import Workers, client_env, finish, pip_pin, run_until, stopping
from helpers.wqutil import cctools_bin
from helpers.shimutil import make_prefix, pack, run_shim, shim_env, unpack_count

N_TASKS = 6

DRIVER = '''\
import json
import os
import sys
import time

from poncho_wq import wq


def fmt(n):
    import os
    import sys

    import humanize

    link = os.path.join(os.environ["WORK_QUEUE_SANDBOX"], os.environ["ENV_NAME"] + "-env")
    return [humanize.intcomma(n), sys.executable, os.path.islink(link), os.path.realpath(link)]


def main(port_file, out, hold, tarball, n):
    binding = wq.load()
    q = binding.WorkQueue(port=0)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(q.port))
    os.replace(port_file + ".tmp", port_file)
    for i in range(n):
        t = binding.PythonTask(fmt, 1000 * 1000 + i)
        t.specify_environment(tarball)
        t.specify_environment_variable("ENV_NAME", os.path.basename(tarball))
        q.submit(t)
    results = {}
    while not q.empty():
        t = q.wait(5)
        if t:
            out_value = t.output
            if not isinstance(out_value, list):
                raise SystemExit("task failed: result={} output={!r} stdout={}".format(t.result, out_value,
                                                                                       t.output))
            results[out_value[0]] = out_value[1:]
    with open(out + ".tmp", "w") as f:
        json.dump({"binding": binding.__name__, "shim": t._pp_run, "results": results}, f)
    os.replace(out + ".tmp", out)
    deadline = time.time() + 120
    while not os.path.exists(hold) and time.time() < deadline:
        time.sleep(0.1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
'''


@pytest.fixture(scope="session")
def pythontask_env(tmp_path_factory):
    """A poncho_wq tarball with humanize, dill (Debian's PythonTask) and cloudpickle (ndcctools'), pinned to the
    manager's versions (the pickles must load on the worker)."""
    d = tmp_path_factory.mktemp("pythontask-env")
    spec = d / "spec.json"
    spec.write_text(json.dumps({"python": "{}.{}.{}".format(*sys.version_info[:3]),
                                "pip": [pip_pin("humanize"), pip_pin("dill"), pip_pin("cloudpickle")]}))
    out = d / "wqenv.tar.gz"
    r = run_cli("poncho_package_create", spec, out, env={"PONCHO_WQ_CACHE": str(d / "cache")})
    assert r.returncode == 0, r.stderr
    return str(out)


@pytest.mark.parametrize("binding", ["debian", "ndcctools.work_queue"])
def test_pythontask_specify_environment(tmp_path, pythontask_env, binding):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    port_file, out, hold, log = (str(tmp_path / n) for n in ("port", "out.json", "hold", "driver.log"))
    env = client_env(PONCHO_WQ_BINDING=binding)
    with open(log, "w") as logf:
        proc = subprocess.Popen([sys.executable, str(driver), port_file, out, hold, pythontask_env, str(N_TASKS)],
                                cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    workers = Workers(tmp_path / "workers")
    with stopping(workers, proc):
        while not os.path.exists(port_file):
            assert proc.poll() is None, open(log).read()
        with open(port_file) as f:
            port = int(f.read())
        worker = "/usr/bin/work_queue_worker" if binding == "debian" else cctools_bin("work_queue_worker")
        workers.start(worker, port, n=2)
        data = run_until(proc, out, 300, log, workers)
        counts = workers.unpack_counts()
        finish(proc, hold, log)
    # The binding copied our shim (the installed sh file), under the name it looks for.
    want = "python_package_run" if binding == "debian" else "poncho_package_run"
    assert data["shim"] == script(want)
    results = data["results"]
    assert sorted(results) == sorted("{:,}".format(1000 * 1000 + i) for i in range(N_TASKS))
    used = []
    for w in workers.procs:
        mine = [r for r in results.values() if r[0].startswith(w.workdir + os.sep)]
        used.append(bool(mine))
        for exe, is_link, target in mine:
            # $WORK_QUEUE_SANDBOX/wqenv.tar.gz-env was a symlink to the worker's cached environment.
            assert is_link and "/poncho-{}/wqenv.tar.gz-".format(os.getuid()) in target, (exe, target)
            assert exe == os.path.join(target, "bin", "python")
    assert any(used)
    assert counts == [1 if u else 0 for u in used], counts


# ----------------------------------------------------------------------------- the shim alone, no workers


@pytest.fixture(scope="module")
def small_tarball(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    return pack(make_prefix(d), d / "small.tar.gz")


def test_unpack_to_in_sandbox_links_to_the_worker_cache(small_tarball, tmp_path):
    """PythonTask's `--unpack-to $WORK_QUEUE_SANDBOX/ENV-env` in 4 fresh sandboxes: one extraction, 4 links."""
    root = tmp_path / "root"
    for i in range(4):
        sandbox = tmp_path / "t{}".format(i)
        sandbox.mkdir()
        target = sandbox / "small.tar.gz-env"
        r = run_shim(["-e", small_tarball, "--unpack-to", target, "hello"], cwd=sandbox,
                     env=shim_env(root, WORK_QUEUE_SANDBOX=sandbox))
        assert r.returncode == 0, r.stderr
        assert os.path.islink(target)
        cached = os.path.realpath(target)
        assert os.path.dirname(cached) == str(root)
        assert r.stdout.strip() == "prefix=" + cached  # relocated for the cache path, where it runs
    assert unpack_count(root / "unpack.log") == 1


@pytest.mark.parametrize("case", ["outside-sandbox", "no-sandbox", "private", "exists"])
def test_unpack_to_keeps_upstream_semantics_elsewhere(small_tarball, tmp_path, case):
    root, sandbox = tmp_path / "root", tmp_path / "sandbox"
    sandbox.mkdir()
    target = (tmp_path / "elsewhere" if case == "outside-sandbox" else sandbox) / "env"
    extra = {} if case == "no-sandbox" else {"WORK_QUEUE_SANDBOX": sandbox}
    if case == "private":
        extra["PONCHO_PRIVATE_UNPACK"] = 1
    if case == "exists":
        target.mkdir()  # an existing empty dir: unpacked into in place, as upstream
    r = run_shim(["-e", small_tarball, "--unpack-to", target, "hello"], cwd=sandbox, env=shim_env(root, **extra))
    assert r.returncode == 0, r.stderr
    assert target.is_dir() and not target.is_symlink()
    assert r.stdout.strip() == "prefix={}".format(target)
    assert unpack_count(target / ".poncho_unpack.log") == 1
    assert not root.exists()


def test_vine_sandbox_counts_too(small_tarball, tmp_path):
    root, sandbox = tmp_path / "root", tmp_path / "sandbox"
    sandbox.mkdir()
    r = run_shim(["-e", small_tarball, "--unpack-to", sandbox / "e", "hello"], cwd=sandbox,
                 env=shim_env(root, VINE_SANDBOX=sandbox))
    assert r.returncode == 0, r.stderr
    assert (sandbox / "e").is_symlink() and unpack_count(root / "unpack.log") == 1
