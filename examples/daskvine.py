"""DaskVine with a poncho_wq environment: a dask.array graph on a worker that has no Python packages.

    python3 daskvine.py                     # starts one local vine_worker itself

dask_environment(m) analyzes this script (dask; dask.array adds numpy), adds dask pinned to the manager's
version, cloudpickle, threadpoolctl, packaging and the manager's own ndcctools, builds once (cached) and declares
the environment once: every compute() below reuses it, so each worker unpacks it once. (A path passed as
environment= would be declared again on every call.) DaskVine of CCTools 7.17.1 needs dask < 2025.4
(2025.3.0 and older work; the tests pin 2024.12.1).
"""

import os
import shutil
import signal
import subprocess
import tempfile

import dask.array as da
from ndcctools.taskvine import DaskVine

from poncho_wq.taskvine import dask_environment


def main():
    m = DaskVine(port=0, run_info_path=tempfile.mkdtemp(prefix="vine-run-info-"))
    env = dask_environment(m)
    # Its HOME and workspace: removed at the end (a killed worker leaves its workspace, environments unpacked).
    home = tempfile.mkdtemp(prefix="vine-worker-")
    worker = subprocess.Popen([shutil.which("vine_worker"), "localhost", str(m.port), "--single-shot",
                               "--workspace", home],
                              env={"PATH": "/usr/bin:/bin", "HOME": home}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        x = da.arange(1000, chunks=100)
        total = (x * 2).sum().compute(scheduler=m.get, environment=env, progress_disable=True)
        mean = x.mean().compute(scheduler=m.get, environment=env, progress_disable=True,
                                task_mode="function-calls")   # the same environment for DaskVine's library
        print("sum", int(total))
        print("mean", float(mean))
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
