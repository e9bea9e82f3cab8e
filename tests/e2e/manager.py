"""A real manager script for the end-to-end tests: submits PonchoTasks and writes their results as JSON.

    python manager.py --port-file F --out R --tasks N --command 'python3 job.py {i}' [--environment ENV]
                      [--plain] [--python-task]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--command", default="python3 job.py {i}")
    ap.add_argument("--environment", default=None)
    ap.add_argument("--plain", action="store_true", help="submit plain Tasks (no environment)")
    ap.add_argument("--python-task", action="store_true", help="submit PonchoPythonTasks")
    ap.add_argument("--retries", type=int, default=5)
    args = ap.parse_args()

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(q.port))
    os.replace(tmp, args.port_file)

    started = time.time()
    submitted = {}
    for i in range(args.tasks):
        if args.plain:
            t = binding.Task(args.command.format(i=i))
            t.specify_input_file("job.py", "job.py", cache=True)
        elif args.python_task:
            t = poncho_wq.PonchoPythonTask(square_with_humanize, i, environment=args.environment)
        else:
            t = poncho_wq.PonchoTask(args.command.format(i=i), environment=args.environment)
        t.specify_max_retries(args.retries)
        submitted[q.submit(t)] = i

    results = []
    while not q.empty():
        t = q.wait(5)
        if t is None:
            continue
        rec = {"i": submitted[t.id], "return_status": t.return_status, "result": t.result,
               "output": t.std_output, "shim_error": None, "host": t.hostname}
        if args.python_task and t.return_status == 0:
            rec["value"] = t.output
        if hasattr(t, "shim_error") and t.shim_error:
            rec["shim_error"] = list(t.shim_error)
        if hasattr(t, "environment"):
            rec["env"] = t.environment.remote_name
        results.append(rec)
    results.sort(key=lambda r: r["i"])
    out = {"results": results, "seconds": time.time() - started, "binding": binding.__name__}
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
