"""poncho_wq quickstart: a Work Queue manager that runs 20 PonchoTasks on two local workers.

    python3 examples/quickstart.py [--tasks 20] [--workers 2]

The job script imports ``humanize``. The workers run with a scrubbed environment (PATH=/usr/bin:/bin), so their
own python3 lacks it: PonchoTask builds the environment once (cached for later runs), ships it once per worker,
and the shim unpacks it once per worker. The script starts and stops its workers itself.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from poncho_wq import PonchoTask, wq

HERE = os.path.dirname(os.path.abspath(__file__))


def worker_command(binding):
    """The work_queue_worker that speaks the binding's protocol (a source build keeps it in its own bin/)."""
    root = os.path.dirname(binding.__file__)
    for _ in range(5):
        cand = os.path.join(root, "bin", "work_queue_worker")
        if os.access(cand, os.X_OK):
            return cand
        root = os.path.dirname(root)
    found = shutil.which("work_queue_worker")
    if not found:
        sys.exit("quickstart: work_queue_worker not found: run `bash dev/demo.sh`, which installs it")
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    print("manager: {} on port {}".format(binding.__name__, q.port))

    workdir = tempfile.mkdtemp(prefix="poncho-quickstart-")
    workers = []
    try:
        for i in range(args.workers):
            wdir = os.path.join(workdir, "worker{}".format(i))
            os.makedirs(wdir)
            workers.append(subprocess.Popen(
                [worker_command(binding), "localhost", str(q.port), "-s", wdir, "--single-shot", "-t", "60"],
                env={"PATH": "/usr/bin:/bin", "HOME": wdir, "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))

        os.chdir(HERE)
        t0 = time.time()
        tasks = [PonchoTask("python3 quickstart_job.py {}".format(i)) for i in range(args.tasks)]
        env = tasks[0].environment
        built = env.build_result
        prepare = time.time() - t0
        for t in tasks:
            q.submit(t)

        done = failed = 0
        while not q.empty():
            t = q.wait(5)
            if t is None:
                continue
            if t.return_status == 0:
                done += 1
                print(t.std_output.strip())
            else:
                failed += 1
                reason = t.shim_error.message if t.shim_error else t.std_output.strip()[-300:]
                print("task {} failed ({}): {}".format(t.id, t.return_status, reason))
        unpacks = 0
        for root, _dirs, files in os.walk(workdir):
            if "unpack.log" in files:
                with open(os.path.join(root, "unpack.log")) as f:
                    unpacks += sum(1 for line in f if line.strip())
        stats = q.stats
        print()
        print("environment   {}  ({:.1f} MB)".format(env.remote_name, os.path.getsize(env.tarball) / 1e6))
        print("build         {}".format("cache hit ({:.2f} s)".format(built.seconds) if built.cache_hit
                                        else "built in {:.1f} s".format(built.seconds)))
        print("analysis+build {:.1f} s for {} tasks".format(prepare, args.tasks))
        print("tasks done    {} ok, {} failed".format(done, failed))
        print("unpacks       {} (once per worker that ran tasks)".format(unpacks))
        print("bytes sent    {:.1f} MB to {} workers".format(stats.total_bytes_sent / 1e6, args.workers))
        return 0 if failed == 0 else 1
    finally:
        for p in workers:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in workers:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
