"""A real manager script for tests/bindings/test_parts_e2e.py: PonchoTasks of several environments, one round each.

    python parts_manager.py --port-file F --out R --tasks N --environment A.tar.gz --environment B.tar.gz ...

Each round submits N tasks of one environment and waits for them before the next round, so that the parts the
environments share reach a worker before the next environment asks for them.
"""

import argparse
import json
import os
import sys
import time

import poncho_wq
from poncho_wq import wq

COMMAND = ('cat "$CONDA_PREFIX/lib/python3.11/site-packages/small/__init__.py"; '
           'cat "$CONDA_PREFIX/lib/python3.11/site-packages/bigpkg/where.txt"; echo "prefix=$CONDA_PREFIX"')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--environment", action="append", required=True)
    args = ap.parse_args()

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(q.port))
    os.replace(tmp, args.port_file)

    started = time.time()
    results = []
    for round_no, environment in enumerate(args.environment):
        submitted = {}
        for i in range(args.tasks):
            t = poncho_wq.PonchoTask(COMMAND, environment=environment)
            t.specify_max_retries(3)
            submitted[q.submit(t)] = (t, i)
        while not q.empty():
            t = q.wait(5)
            if t is None:
                continue
            results.append({"round": round_no, "i": submitted[t.id][1], "return_status": t.return_status,
                            "result": t.result, "output": t.std_output, "host": t.hostname,
                            "shim_error": list(t.shim_error) if t.shim_error else None,
                            "parts": list(t.distribution_plan.parts), "env": t.environment.remote_name,
                            "command": t.command})
    results.sort(key=lambda r: (r["round"], r["i"]))
    with open(args.out, "w") as f:
        json.dump({"results": results, "seconds": time.time() - started, "binding": binding.__name__}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
