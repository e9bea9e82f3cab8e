"""PonchoTask end to end: a real manager script, real work_queue_worker processes on localhost, no mocks.

Run for both bindings: Debian's ``work_queue`` (CCTools 8) with Debian's worker, and ``ndcctools.work_queue``
(built from ../shared/vendor by dev/test.sh) with its own worker.
"""

import time

import pytest

from helpers.projects import job_project


JOB = '''\
import sys

import humanize
from mylib import fmt

print("RESULT", fmt.describe(int(sys.argv[1])), "ARGS", repr(sys.argv[2:]))
'''
MYLIB_FMT = '''\
import humanize


def describe(n):
    return "{}:{}".format(n, humanize.intword(n * 1000000))
'''


@pytest.fixture
def project(tmp_path, humanize_installed):
    return job_project(tmp_path / "project", JOB, MYLIB_FMT)


def test_plain_task_fails_on_these_workers(cluster, project, e2e_cache):
    cluster.start_manager("manager.py", ["--tasks", "1", "--plain", "--retries", "0"], project, e2e_cache)
    cluster.start_worker()
    out = cluster.wait_results()
    (r,) = out["results"]
    assert r["return_status"] != 0
    assert "No module named 'humanize'" in r["output"]


def test_ponchotask_ships_env_local_modules_and_keeps_argv(cluster, project, e2e_cache):
    cmd = "python3 job.py {i} 'two words' \"it's\" '' '*.py'"
    cluster.start_manager("manager.py", ["--tasks", "3", "--command", cmd], project, e2e_cache)
    cluster.start_worker()
    out = cluster.wait_results()
    assert [r["return_status"] for r in out["results"]] == [0, 0, 0], out
    for r in out["results"]:
        i = r["i"]
        import humanize

        assert "RESULT {}:{}".format(i, humanize.intword(i * 1000000)) in r["output"], r["output"]
        assert "ARGS ['two words', \"it's\", '', '*.py']" in r["output"], r["output"]
        assert r["shim_error"] is None
        assert r["env"].startswith("env-") and r["env"].endswith(".tar.gz")


def test_forty_tasks_two_workers_one_transfer_and_one_unpack_per_worker(cluster, project, e2e_cache):
    cluster.start_manager("manager.py", ["--tasks", "40", "--command", "python3 job.py {i}"], project, e2e_cache)
    cluster.start_worker(cores=4, keep_envs=True)
    cluster.start_worker(cores=4, keep_envs=True)
    out = cluster.wait_results()
    assert all(r["return_status"] == 0 for r in out["results"]), out
    ran = cluster.tasks_run()
    assert sum(ran) == 40, ran
    expected = [1 if n else 0 for n in ran]
    # Every worker that ran tasks got the tarball once and unpacked it once; a worker that ran none, never. The
    # same for the code layer (job.py's local package mylib): one layer, one transfer, one unpack per worker.
    env = out["results"][0]["env"]
    unpacked = cluster.unpacked_ids()
    assert [ids.count(env[: -len(".tar.gz")]) for ids in unpacked] == expected, (unpacked, ran)
    assert [len([i for i in ids if i.startswith("code-")]) for ids in unpacked] == expected, (unpacked, ran)
    assert cluster.unpack_counts() == [2 * n for n in expected], (cluster.unpack_counts(), ran)
    assert cluster.env_transfers(env) == expected, ran


def test_worker_killed_midrun_tasks_retry_elsewhere(cluster, project, e2e_cache):
    cmd = "python3 -c 'import time; time.sleep(0.5)' && python3 job.py {i}"
    cluster.start_manager("manager.py", ["--tasks", "12", "--command", cmd], project, e2e_cache)
    w0 = cluster.start_worker(cores=2)
    cluster.start_worker(cores=2)
    time.sleep(4)
    cluster.kill_worker(w0)
    out = cluster.wait_results()
    assert [r["return_status"] for r in out["results"]] == [0] * 12, out


def test_broken_environment_surfaces_shim_error(cluster, project, e2e_cache, tmp_path):
    bad = tmp_path / ("env-" + "0" * 32 + ".tar.gz")
    bad.write_bytes(b"\x1f\x8b\x08\x00this is not a gzip stream" * 10)
    cluster.start_manager("manager.py", ["--tasks", "2", "--retries", "0", "--environment", str(bad)],
                          project, e2e_cache)
    cluster.start_worker()
    out = cluster.wait_results()
    for r in out["results"]:
        assert r["return_status"] == 3, r
        assert r["shim_error"] and r["shim_error"][0] == 3
        assert "extract" in r["shim_error"][1].lower() or "tar" in r["shim_error"][1].lower()


def test_python_task_in_environment(cluster, project, e2e_cache):
    cluster.start_manager("manager.py", ["--tasks", "3", "--python-task"], project, e2e_cache)
    cluster.start_worker()
    out = cluster.wait_results()
    assert [r["return_status"] for r in out["results"]] == [0, 0, 0], out
    assert [r["value"] for r in out["results"]] == ["0", "1", "4"]
