"""A real manager script for tests/deliver/test_delivery.py: submits PonchoTasks under the distribution the settings
(PONCHO_WQ_DISTRIBUTION, PONCHO_WQ_PUBLISH_DIR, PONCHO_WQ_PUBLISH_URL) choose and writes their results as JSON.

    python distribution_manager.py --port-file F --out R --tasks N --command 'python3 job.py {i}'
                                   [--retries K] [--resubmit] [--python-task]

With --resubmit, tasks that failed are reported in ``R.failed`` (JSON); the script then waits for the file ``R.go``
(the test has repaired the server) and submits them again once, as a user's retry would.
"""

import argparse
import json
import os
import sys
import time

import poncho_wq
from poncho_wq import wq


def square_with_humanize(x):
    import humanize

    return humanize.intcomma(x * x)


def collect(q, submitted, binding):
    out = []
    while not q.empty():
        t = q.wait(5)
        if t is None:
            continue
        err = t.shim_error
        out.append({"i": submitted[t.id], "return_status": t.return_status, "result": t.result,
                    "output": t.std_output, "shim_error": list(err) if err else None, "host": t.hostname,
                    "env": t.environment.remote_name, "mode": t.distribution_plan.mode,
                    "value": t.output if hasattr(t, "_python_function_command") and t.return_status == 0 else None})
    return sorted(out, key=lambda r: r["i"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--command", default="python3 job.py {i}")
    ap.add_argument("--retries", type=int, default=0)
    ap.add_argument("--resubmit", action="store_true")
    ap.add_argument("--python-task", action="store_true", help="submit PonchoPythonTasks")
    args = ap.parse_args()

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(q.port))
    os.replace(tmp, args.port_file)

    def submit(indices):
        submitted = {}
        for i in indices:
            if args.python_task:
                t = poncho_wq.PonchoPythonTask(square_with_humanize, i)
            else:
                t = poncho_wq.PonchoTask(args.command.format(i=i))
            t.specify_max_retries(args.retries)
            submitted[q.submit(t)] = i
        return submitted

    first = collect(q, submit(range(args.tasks)), binding)
    second = []
    failed = [r["i"] for r in first if r["return_status"] != 0 or r["result"] != 0]
    if args.resubmit and failed:
        with open(args.out + ".failed.tmp", "w") as f:
            json.dump(first, f)
        os.replace(args.out + ".failed.tmp", args.out + ".failed")
        deadline = time.time() + 300
        while not os.path.exists(args.out + ".go"):
            if time.time() > deadline:
                return 3
            time.sleep(0.2)
        second = collect(q, submit(failed), binding)
    stats = q.stats
    out = {"results": first, "retried": second, "binding": binding.__name__,
           "bytes_sent": getattr(stats, "bytes_sent", None)}
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
