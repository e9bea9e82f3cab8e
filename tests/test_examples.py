"""The examples users copy from: each runs for real (local workers, real builds) and prints what it claims."""

import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(scope="module")
def example_env(e2e_cache):
    """The environment the examples run in: the run's shared build cache (tests/conftest.py's ``e2e_cache``), as
    users share theirs: an environment another test or example built (the same pinned closure, the same key) is a hit
    here, and the DaskVine environment is built once per run, not once here and once in
    tests/bindings/test_taskvine_clients.py. The quickstart, which must see its own first build, has its own cache."""
    env = dict(os.environ)
    env["PONCHO_WQ_CACHE"] = e2e_cache
    env["PONCHO_WQ_SOURCE"] = "index"  # not a guess from a network check: a run must not flip builders
    return env


def run_example(name, env, *args):
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)] + list(args), env=env, cwd=EXAMPLES,
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_quickstart_builds_once_then_hits_the_cache(example_env, tmp_path):
    example_env = dict(example_env, PONCHO_WQ_CACHE=str(tmp_path / "cache"))  # a cold build, whatever ran before
    out = run_example("quickstart.py", example_env, "--tasks", "6")
    for i in range(6):
        assert "task {:2d}: {} bytes is".format(i, 2 ** (10 + i)) in out
    assert "tasks          6 done, 0 failed" in out
    assert "built in" in out
    unpacks = int(out.split("unpacks")[1].split()[0])
    assert 1 <= unpacks <= 2
    again = run_example("quickstart.py", example_env, "--tasks", "2")
    assert "cache hit" in again


def test_explicit_spec(example_env):
    out = run_example("explicit_spec.py", example_env)
    assert "1st" in out and "2nd" in out and "3rd" in out


def test_prebuilt_tarball(example_env):
    out = run_example("prebuilt_tarball.py", example_env)
    assert "an hour" in out


def test_python_task(example_env):
    out = run_example("python_task.py", example_env)
    assert "1000000 -> 1.0 million" in out and "3000000000000 -> 3.0 trillion" in out


def test_taskvine_example(example_env):
    out = run_example("taskvine_poncho.py", example_env)
    assert out.count("success 0 1,234,567") == 2, out


def left_in(tmpdir):
    """What an example left in its TMPDIR besides the run-info logs it keeps on purpose: the examples that start a
    vine_worker and kill it at the end remove its HOME and workspace, or every run would leave the environments it
    unpacked behind (a killed worker does not remove its workspace). uv's own lock files (``uv-<hash>.lock``, empty)
    are uv's to keep."""
    return sorted(n for n in os.listdir(tmpdir) if not n.startswith("vine-run-info-")
                  and not (n.startswith("uv-") and n.endswith(".lock")))


def test_taskvine_serverless_example(example_env, tmp_path):
    out = run_example("taskvine_serverless.py", dict(example_env, TMPDIR=str(tmp_path)))
    for words in ("success 1.0 million", "success 3.0 billion", "success 42.0 trillion"):
        assert words in out, out
    assert left_in(tmp_path) == []


def test_daskvine_example(example_env, tmp_path):
    out = run_example("daskvine.py", dict(example_env, TMPDIR=str(tmp_path)))
    assert "sum 999000" in out and "mean 499.5" in out, out
    assert left_in(tmp_path) == []


def test_plain_workqueue_pythontask_example(example_env):
    out = run_example("plain_workqueue_pythontask.py", example_env)
    assert "0 1,000,002" in out and "0 1.0 billion" in out, out


def test_parsl_workqueue_example(example_env):
    out = run_example("parsl_workqueue.py", example_env)
    assert "['1,000,000', '1,000,001', '1,000,002', '1,000,003'" in out, out
