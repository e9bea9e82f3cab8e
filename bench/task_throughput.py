"""Throughput of short tasks: PonchoTask vs plain Tasks on workers that already have the packages.

    python3 bench/task_throughput.py [--tasks 200] [--workers 2]

Plain tasks run `python3 -c 'import humanize'` on workers whose PATH has this interpreter (which has humanize);
PonchoTasks run the same command on scrubbed workers (PATH=/usr/bin:/bin) through the environment. Both sets
are measured in the same run; printed: warm throughput ratio (target >= 0.8x) and the first-task latency
(cold: transfer + unpack) of each.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

from localworkers import local_workers  # noqa: E402
from poncho_wq import PonchoTask, wq  # noqa: E402

COMMAND = "python3 -c 'import humanize'"
WARMUP = 10


def run(binding, n, workers, poncho, env):
    q = binding.WorkQueue(port=0)
    spec = {"python": "{}.{}.{}".format(*sys.version_info[:3]), "pip": ["humanize"]}
    with local_workers(binding, q.port, workers, env=env):
        t0 = time.time()
        for _ in range(n):
            t = PonchoTask(COMMAND, environment=spec) if poncho else binding.Task(COMMAND)
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    binding = wq.load()
    has_it = {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    PonchoTask(COMMAND, environment={"python": "{}.{}.{}".format(*sys.version_info[:3]), "pip": ["humanize"]})
    plain_first, plain_rate = run(binding, args.tasks, args.workers, False, has_it)
    poncho_first, poncho_rate = run(binding, args.tasks, args.workers, True, None)
    print("binding {}, {} tasks, {} workers".format(binding.__name__, args.tasks, args.workers))
    print("plain tasks   first result {:6.3f} s, warm {:7.1f} tasks/s".format(plain_first, plain_rate))
    print("PonchoTask    first result {:6.3f} s, warm {:7.1f} tasks/s".format(poncho_first, poncho_rate))
    print("warm throughput ratio PonchoTask/plain: {:.2f}x (target >= 0.8x)".format(poncho_rate / plain_rate))
    print("cold first-task latency: {:.3f} s (plain {:.3f} s)".format(poncho_first, plain_first))


if __name__ == "__main__":
    main()
