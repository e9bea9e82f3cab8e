"""A manager that starts its own worker, so that both can run in one network namespace (``unshare -n``): builds
the ``source="auto"`` environment of a script, runs the script once as a PonchoTask on a real worker, and writes
what happened as JSON.

    python locked_manager.py --out R --worker BINARY --workdir W SCRIPT
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import poncho_wq
from poncho_wq import Environment, wq

# tests/ on the path for its helpers (pytest puts it there for the test modules; this script runs on its own)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers.wqutil import fixed_disk_args  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("script")
    args = ap.parse_args()

    env = Environment.from_script(args.script)  # source="auto": the lock
    tarball = env.build(progress=True)
    binding = wq.load()
    q = binding.WorkQueue(port=0)
    os.makedirs(args.workdir, exist_ok=True)
    worker = subprocess.Popen([args.worker, "localhost", str(q.port), "-s", args.workdir, "--single-shot",
                               "-t", "300"] + fixed_disk_args(args.workdir),  # as Cluster.start_worker's
                              env={"PATH": "/usr/bin:/bin", "HOME": args.workdir, "LANG": "C.UTF-8"},
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        q.submit(poncho_wq.PonchoTask("python3 {}".format(args.script), environment=env))
        deadline = time.time() + 600
        task = None
        while task is None and time.time() < deadline:
            task = q.wait(5)
        if task is None:
            raise SystemExit("the task did not finish in 600 s")
        out = {"env": env.remote_name, "tarball": tarball, "engine": env.engine, "source": env.source,
               "lock": list(env.spec.pip), "return_status": task.return_status, "output": task.std_output,
               "shim_error": list(task.shim_error) if task.shim_error else None}
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait()
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
