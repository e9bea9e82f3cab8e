"""Throughput of short tasks: PonchoTask vs plain Tasks on workers that already have the packages with bytecode.

    python3 bench/task_throughput.py [--tasks 200] [--workers 2] [--packages numpy,pandas]

Each task runs ``python3 -c 'import <packages>'``. Plain tasks run on workers whose PATH starts with a venv that
has the packages installed by ``uv pip install --compile-bytecode`` (kept under
``~/.cache/poncho_wq-bench/throughput``, ``PONCHO_WQ_BENCH_DIR`` overrides), its bytecode warmed by one import
before the run; PonchoTasks run the same command on scrubbed workers (PATH=/usr/bin:/bin) through the environment
of ``{"pip": packages}`` (built before the run). Both sets are measured in the same run; printed: warm throughput
(tasks/s after the first ``WARMUP`` results; issue 14's goal >= 0.9x) and the first-task latency (cold: transfer +
unpack for PonchoTask) of each. ``--packages humanize`` is the light variant this bench started with.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from localworkers import local_workers  # noqa: E402
from poncho_wq import PonchoTask, wq  # noqa: E402
from poncho_wq.tools import find_tool  # noqa: E402

WARMUP = 10
BENCH = os.environ.get("PONCHO_WQ_BENCH_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "poncho_wq-bench")


def venv_with(packages):
    """A venv with *packages* and compiled bytecode (made once), its bytecode read once (warm)."""
    venv = os.path.join(BENCH, "throughput", "venv-" + "-".join(packages))
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, ".done")):
        uv = find_tool("uv")
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, venv], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python", python] + packages, check=True)
        open(os.path.join(venv, ".done"), "w").close()
    subprocess.run([python, "-c", "import " + ", ".join(packages)], check=True)
    return venv


def run(binding, n, workers, command, spec, env):
    q = binding.WorkQueue(port=0)
    with local_workers(binding, q.port, workers, env=env):
        t0 = time.time()
        for _ in range(n):
            t = PonchoTask(command, environment=spec) if spec else binding.Task(command)
            q.submit(t)
        done = []
        while not q.empty():
            t = q.wait(5)
            if t is not None:
                if t.return_status != 0:
                    sys.exit("task failed: {}".format(t.std_output))
                done.append(time.time())
    first = done[0] - t0
    warm = (len(done) - WARMUP) / (done[-1] - done[WARMUP - 1])
    return first, warm


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--packages", default="numpy,pandas")
    args = ap.parse_args()
    packages = args.packages.split(",")
    binding = wq.load()
    command = "python3 -c 'import {}'".format(", ".join(packages))
    spec = {"python": "{}.{}.{}".format(*sys.version_info[:3]), "pip": packages}
    PonchoTask(command, environment=spec)  # build (or find in the cache) before timing
    venv = venv_with(packages)
    has_it = {"PATH": os.path.join(venv, "bin") + ":/usr/bin:/bin"}
    plain_first, plain_rate = run(binding, args.tasks, args.workers, command, None, has_it)
    poncho_first, poncho_rate = run(binding, args.tasks, args.workers, command, spec, None)
    print("binding {}, {} tasks `{}`, {} workers".format(binding.__name__, args.tasks, command, args.workers))
    print("plain tasks (venv with bytecode)  first result {:6.3f} s, warm {:7.1f} tasks/s".format(plain_first,
                                                                                                plain_rate))
    print("PonchoTask                        first result {:6.3f} s, warm {:7.1f} tasks/s".format(poncho_first,
                                                                                                poncho_rate))
    print("warm throughput ratio PonchoTask/plain: {:.2f}x (goal >= 0.9x)".format(poncho_rate / plain_rate))
    print("cold first-task latency: {:.3f} s (plain {:.3f} s)".format(poncho_first, plain_first))


if __name__ == "__main__":
    main()
