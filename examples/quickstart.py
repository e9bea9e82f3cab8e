"""poncho_wq quickstart: a Work Queue manager that runs 20 PonchoTasks on two local workers.

    python3 examples/quickstart.py [--tasks 20] [--workers 2]

The job script imports ``humanize``, which the workers' own python3 lacks: PonchoTask analyzes the command's
script, builds the environment once (cached for later runs), ships it once per worker, and the shim unpacks it
once per worker. The script starts and stops its workers itself.
"""

import argparse
import os
import sys
import time

from localworkers import count_unpacks, local_workers
from poncho_wq import PonchoTask, wq

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    print("manager: {} on port {}".format(binding.__name__, q.port))
    os.chdir(HERE)  # the command names quickstart_job.py relative to here

    with local_workers(binding, q.port, args.workers) as scratch:
        t0 = time.time()
        tasks = [PonchoTask("python3 quickstart_job.py {}".format(i)) for i in range(args.tasks)]
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
        unpacks = count_unpacks(scratch)

    env = tasks[0].environment
    built = env.build_result
    print()
    print("environment    {}  ({:.1f} MB)".format(env.remote_name, built.size / 1e6))
    print("build          {}".format("cache hit ({:.2f} s)".format(built.seconds) if built.cache_hit
                                     else "built in {:.1f} s".format(built.seconds)))
    print("analysis+build {:.1f} s for {} tasks".format(prepare, args.tasks))
    print("tasks          {} done, {} failed".format(done, failed))
    print("unpacks        {} (once per worker that ran tasks)".format(unpacks))
    print("bytes sent     {:.1f} MB to {} workers".format(q.stats.total_bytes_sent / 1e6, args.workers))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
