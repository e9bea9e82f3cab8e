"""The TaskVine clients people run, on real ``vine_worker``s with the workers' scrubbed environment
(``PATH=/usr/bin:/bin``: Debian's python3, which has none of cloudpickle, threadpoolctl, humanize, numpy, dask or
ndcctools), so only the shipped environment can make the work succeed:

* serverless: ``create_library`` (analyzed environment + TaskVine's library runtime + the manager's ndcctools)
  runs FunctionCalls that import humanize and a local module;
* the same library with a plain tarball (humanize only, as the issue's user first tried): the library cannot start
  and its FunctionCalls come back failed, with the library's own error, instead of hanging;
* DaskVine with a dask.array graph (dask pinned to a version DaskVine 7.17 supports), in task and function-call
  modes, its environment declared once and unpacked once per worker across several ``get()`` calls;
* ``PonchoVineTask`` shipping the command's script and the local package it imports.

Each manager runs as its own script (as users run them: the analysis reads ``__main__``); the test starts the
workers when the manager has written its port.
"""

import json
import subprocess
import sys
import time

import pytest

from helpers.cli import run_cli
from helpers import drivers
from helpers.parslutil import client_env, pip_pin


DRIVER_HEAD = '''
import json, os, sys, tempfile
from ndcctools import taskvine as vine
out, port_file = sys.argv[1], sys.argv[2]

def start(m):
    with open(port_file + ".tmp", "w") as f:
        f.write(str(m.port))
    os.rename(port_file + ".tmp", port_file)

def finish(data):
    with open(out, "w") as f:
        json.dump(data, f)
'''

SERVERLESS = DRIVER_HEAD + '''
from poncho_wq.taskvine import FunctionCall, create_library
import units  # a local module next to this script: the library must get it too
from mathfuncs import square  # a function of a local module: cloudpickle pickles it by reference

def describe(n):
    import humanize
    return units.label(humanize.intword(n))

m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
environment = sys.argv[3] if len(sys.argv) > 3 else None
if environment:
    m.tune("transient-error-interval", 1)  # TaskVine waits 15 s between library retries by default
lib = create_library(m, "lib", describe, square, environment=environment)
m.install_library(lib)
start(m)
for i in range(8):
    m.submit(FunctionCall("lib", "describe", (i + 1) * 10 ** 9))
if not environment:
    m.submit(FunctionCall("lib", "square", 7))
results = []
while not m.empty():
    t = m.wait(5)
    if t:
        results.append([t.successful(), t.result, str(t.output), t.library_error])
finish({"results": results, "environment": lib.environment.build()})
'''

UNITS = "def label(text):\n    return '<' + text + '>'\n"
MATHFUNCS = "def square(x):\n    return x * x\n"

DASK_DRIVER = DRIVER_HEAD + '''
import dask.array as da
from ndcctools.taskvine import DaskVine
from poncho_wq.taskvine import dask_environment

m = DaskVine(port=0, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
env = dask_environment(m)  # declared once: every get() below reuses it
start(m)
x = da.arange(1000, chunks=100)
results = [
    int((x * 2).sum().compute(scheduler=m.get, environment=env, progress_disable=True)),
    float(x.mean().compute(scheduler=m.get, environment=env, progress_disable=True)),
    int(x.max().compute(scheduler=m.get, environment=env, progress_disable=True, task_mode="function-calls")),
]
finish({"results": results, "same": dask_environment(m) is env})
'''

VINE_TASK = DRIVER_HEAD + '''
from poncho_wq.taskvine import PonchoVineTask

m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
start(m)
for arg in ["1", "2", "3", "fail"]:
    m.submit(PonchoVineTask(m, "python3 job.py " + arg, cores=1, tag=arg))
results = {}
while not m.empty():
    t = m.wait(5)
    if t:
        results[t.tag] = [t.result, t.exit_code, t.std_output, t.shim_error]
finish(results)
'''

JOB = '''import sys
import humanize
from helpers.fmt import shout
if sys.argv[1] == "fail":
    sys.exit(3)
print("RESULT", shout(humanize.intcomma(int(sys.argv[1]) * 1000000)), sys.executable)
'''


@pytest.fixture(scope="module")
def manager_side(tmp_path_factory):
    """The manager's packages (PyPI) and one build cache for the module's runs; the workers' python3 must lack
    what the tasks import, or these tests would prove nothing."""
    for module in ("humanize", "cloudpickle", "threadpoolctl", "numpy", "dask", "ndcctools"):
        r = subprocess.run(["/usr/bin/python3", "-c", "import " + module], capture_output=True,
                           env={"PATH": "/usr/bin:/bin"})
        assert r.returncode != 0, "the workers' python3 has {}: these tests would prove nothing".format(module)
    return str(tmp_path_factory.mktemp("vine-cache"))


def run_driver(tmp_path, source, cache, args=(), n_workers=2, files=None, timeout=600):
    """Run a manager script in *tmp_path* and *n_workers* scrubbed vine_workers; return (results, Workers)."""
    return drivers.run_driver(tmp_path, source, client_env(PONCHO_WQ_CACHE=cache, PONCHO_WQ_SOURCE="index"),
                              args=args, n_workers=n_workers, worker_args=["--keep-workspace"], files=files,
                              timeout=timeout)


def test_serverless_library_with_an_analyzed_environment(tmp_path, manager_side):
    results, workers = run_driver(tmp_path, SERVERLESS, manager_side,
                                  files={"units.py": UNITS, "mathfuncs.py": MATHFUNCS})
    assert len(results["results"]) == 9
    got = sorted(r[2] for r in results["results"])
    assert all(r[0] and r[1] == "success" for r in results["results"]), results
    assert got == sorted(["49"] + ["<{}.0 billion>".format(i) for i in range(1, 9)]), got
    # The library ran in the environment TaskVine unpacked from our tarball: one mini task per worker that ran it.
    used = workers.debug_lines("via mini task")
    assert sum(used) >= 1 and max(used) == 1, used


def test_a_library_that_cannot_start_fails_its_calls_with_its_error(tmp_path, manager_side):
    """A tarball with humanize only (no cloudpickle, threadpoolctl, ndcctools): TaskVine's library_code.py cannot
    import its runtime on the worker. The FunctionCalls come back failed ('missing library') once TaskVine gives the
    library up, and say why, instead of waiting forever."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"python": "{}.{}.{}".format(*sys.version_info[:3]), "pip": [pip_pin("humanize")]}))
    plain = tmp_path / "plain.tar.gz"
    r = run_cli("poncho_package_create", spec, plain, env={"PONCHO_WQ_CACHE": manager_side})
    assert r.returncode == 0, r.stderr
    start = time.time()
    results, _ = run_driver(tmp_path, SERVERLESS, manager_side, args=[str(plain)], n_workers=1,
                            files={"units.py": UNITS, "mathfuncs.py": MATHFUNCS})
    assert len(results["results"]) == 8
    for ok, result, output, why in results["results"]:
        assert not ok and result == "missing library", (result, output)
        assert "No module named 'cloudpickle'" in why and "library_code.py" in why, why
        assert output.startswith("library lib could not run describe (missing library): ModuleNotFoundError")
    assert time.time() - start < 240  # TaskVine's defaults alone: 16 attempts 15 s apart


def test_daskvine_array_graph_with_an_environment_declared_once(tmp_path, manager_side, e2e_cache):
    # The run's shared build cache: examples/daskvine.py (tests/test_examples.py) analyzes to the same environment,
    # built once per run for both (about 30 s on a loaded machine).
    results, workers = run_driver(tmp_path, DASK_DRIVER, e2e_cache)
    assert results["results"] == [999000, 499.5, 999], results
    assert results["same"] is True
    # Three get() calls (tasks and function-call modes), one environment: each worker unpacked it at most once.
    used = workers.debug_lines("via mini task")
    assert sum(used) >= 1 and max(used) == 1, used


def test_poncho_vine_task_ships_the_script_and_its_local_package(tmp_path, manager_side):
    files = {"job.py": JOB, "helpers/__init__.py": "", "helpers/fmt.py": "def shout(s):\n    return s + '!'\n"}
    results, workers = run_driver(tmp_path, VINE_TASK, manager_side, files=files)
    for i in (1, 2, 3):
        result, code, output, shim_error = results[str(i)]
        assert (result, code, shim_error) == ("success", 0, None), results[str(i)]
        line = [x for x in output.splitlines() if x.startswith("RESULT")][0].split()
        assert line[1] == "{:,}!".format(i * 1000000) and "/cache/" in line[2], output
    # The command's own failure is not mistaken for a broken environment.
    assert results["fail"][:2] == ["success", 3] and results["fail"][3] is None, results["fail"]
    # Two environments per worker at most, each unpacked once: the base and the code layer (helpers/, issue 13).
    assert max(workers.debug_lines("via mini task")) == 2
