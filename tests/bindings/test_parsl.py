"""Parsl drives poncho_wq unchanged: real Parsl (installed from PyPI here), real managers, real local workers.

Parsl's WorkQueueExecutor(pack=True) and TaskVineExecutor(app_pack=True) run ``python_package_analyze`` /
``poncho_package_analyze exec_parsl_function.py - spec.yaml`` (app source on stdin), then ``*_package_create
spec.yaml tmp.tar.gz``; Work Queue tasks run ``./python_package_run -e pack-<hash>.tar.gz python3
exec_parsl_function.py ...`` (our shim, copied from PATH), TaskVine tasks run the tarball's ``bin/run_in_env``
through ``declare_poncho``.  The app imports humanize, which the workers' python3 (Debian's) lacks, and the
worker-side ``exec_parsl_function.py`` imports parsl, so the app's results prove the shipped environment is used.
"""

import os
import subprocess
import sys

import pytest

from helpers.cli import run_cli
from helpers.parslutil import PARSL_DRIVER, Workers, client_env, finish, free_port, pip_pin, run_until, stopping
from helpers.wqutil import cctools_bin

N_TASKS = 6


@pytest.fixture(scope="session")
def parsl_version():
    """parsl and humanize are declared test dependencies; the workers' python3 must lack humanize."""
    r = subprocess.run(["/usr/bin/python3", "-c", "import humanize"], capture_output=True)
    assert r.returncode != 0, "the workers' python3 must lack humanize for these tests to prove anything"
    from importlib.metadata import version

    return version("parsl")


@pytest.fixture(scope="session")
def parsl_cache(tmp_path_factory):
    """One PONCHO_WQ_CACHE for the session's Parsl runs (the second run's build is a cache hit)."""
    return str(tmp_path_factory.mktemp("parsl-poncho-cache"))


def _run_driver(tmp_path, kind, port, cache, extra=()):
    driver = tmp_path / "parsl_driver.py"
    driver.write_text(PARSL_DRIVER)
    out, hold, log = tmp_path / "out.json", tmp_path / "hold", tmp_path / "driver.log"
    (tmp_path / "tmpdir").mkdir()
    # TMPDIR: Parsl keeps its built tarballs in $TMPDIR/python_package-<uid>; per test, so each test builds.
    env = client_env(TMPDIR=tmp_path / "tmpdir", PONCHO_WQ_CACHE=cache)
    with open(log, "w") as logf:
        proc = subprocess.Popen([sys.executable, str(driver), kind, "--port", str(port), "--tasks", str(N_TASKS),
                                 "--run-dir", str(tmp_path / "runinfo"), "--out", str(out), "--hold", str(hold)]
                                + list(extra), cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT)
    return proc, str(out), str(hold), str(log)


def _check_results(data, parsl_version):
    assert data["parsl"] == parsl_version
    got = [r[0] for r in data["results"]]
    assert got == ["{:,}".format(1000 * 1000 + i) for i in range(N_TASKS)]
    return [r[1] for r in data["results"]]  # the python3 each app ran with


def test_parsl_workqueue_pack(tmp_path, parsl_version, parsl_cache):
    port = free_port()
    proc, out, hold, log = _run_driver(tmp_path, "wq", port, parsl_cache)
    workers = Workers(tmp_path / "workers").start(cctools_bin("work_queue_worker"), port, n=2)
    with stopping(workers, proc):
        data = run_until(proc, out, 400, log, workers)
        pythons = _check_results(data, parsl_version)
        counts = workers.unpack_counts()
        finish(proc, hold, log)
    # Every app ran with the env's python3 from the per-worker cache of our shim (poncho-<uid> beside the worker's
    # workspace), never with the workers' own /usr/bin/python3.
    for exe in pythons:
        assert "/poncho-{}/pack-".format(os.getuid()) in exe and exe.endswith("/bin/python3"), exe
    used = [any(exe.startswith(w.workdir + os.sep) for exe in pythons) for w in workers.procs]
    assert any(used)
    # Unpacked exactly once on each worker that ran apps (N_TASKS tasks in all), never on the others.
    assert counts == [1 if u else 0 for u in used], (counts, pythons)
    with open(log) as f:
        text = f.read()
    assert "_package_create: " in text and "poncho: pack" in text  # ours built it (Parsl drops only stdout)


@pytest.mark.parametrize("pack", ["app", "env"])
def test_parsl_taskvine(tmp_path, parsl_version, parsl_cache, pack):
    """app_pack=True (Parsl runs our analyze/create per app) and env_pack=<poncho_wq tarball> (prebuilt with
    poncho_package_create; Parsl declares it with declare_poncho as is)."""
    extra = []
    if pack == "env":
        spec = tmp_path / "spec.json"
        spec.write_text('{"python": "%d.%d.%d", "pip": ["%s", "%s"]}' % (sys.version_info[:3]
                                                                           + (pip_pin("humanize"), pip_pin("parsl"))))
        tarball = tmp_path / "parsl-env.tar.gz"
        r = run_cli("poncho_package_create", spec, tarball, env={"PONCHO_WQ_CACHE": parsl_cache})
        assert r.returncode == 0, r.stderr
        extra = ["--pack", str(tarball)]
    port = free_port()
    proc, out, hold, log = _run_driver(tmp_path, "vine", port, parsl_cache, extra)
    workers = Workers(tmp_path / "workers").start(cctools_bin("vine_worker"), port, n=2, extra=["--keep-workspace"])
    with stopping(workers, proc):
        data = run_until(proc, out, 400, log, workers)
        pythons = _check_results(data, parsl_version)
        finish(proc, hold, log)
    # TaskVine unpacks the poncho package with one mini task per worker into its cache; every app ran there.
    for exe in pythons:
        assert "/ws/cache/" in exe and exe.endswith("/bin/python3"), exe
    used = [any(exe.startswith(w.workdir + os.sep) for exe in pythons) for w in workers.procs]
    assert any(used)
    assert workers.debug_lines("via mini task") == [1 if u else 0 for u in used]
