"""A real manager for the layered-environment test: rounds of PonchoTasks in one session, code edited between rounds.

    python layers_manager.py --port-file F --out R --tasks N --command 'python3 job.py {i}' --edits edits.json

``edits.json`` is a list (one item per round after the first) of ``{"files": {path: text}, "run": [[argv], ...]}``:
the files are rewritten and the commands run (e.g. a reinstall of a local project) after the previous round has
finished, as a user would between two runs; then the next round is submitted by the same process.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import time

import poncho_wq
from poncho_wq import wq


def run_round(q, binding, n, command, rnd, function=None):
    t0 = time.perf_counter()
    submitted = {}
    for i in range(n):
        if function:
            t = poncho_wq.PonchoPythonTask(function, i)
        else:
            t = poncho_wq.PonchoTask(command.format(i=i))
        t.specify_max_retries(5)
        code = getattr(t, "code_layer", None)  # None before layers (to run this test on old code)
        submitted[q.submit(t)] = (i, t.environment.remote_name, code.remote_name if code else None)
    prep = time.perf_counter() - t0
    results = []
    while len(results) < n:
        t = q.wait(5)
        if t is None:
            continue
        i, env, code = submitted[t.id]
        results.append({"round": rnd, "i": i, "return_status": t.return_status, "output": t.std_output,
                        "value": t.output if function and t.return_status == 0 else None,
                        "env": env, "code": code, "shim_error": list(t.shim_error) if t.shim_error else None})
    return prep, sorted(results, key=lambda r: r["i"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--command", default="python3 job.py {i}")
    ap.add_argument("--edits", required=True)
    ap.add_argument("--function", help="MODULE:NAME of a local module in the current directory: submit "
                    "PonchoPythonTasks of it (the module is imported by a computed name, so no analysis reaches it)")
    args = ap.parse_args()
    function = None
    if args.function:
        sys.path.insert(0, os.getcwd())
        module, name = args.function.split(":")
        function = getattr(importlib.import_module(module), name)
    with open(args.edits) as f:
        edits = json.load(f)

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(q.port))
    os.replace(tmp, args.port_file)

    rounds = []
    for rnd in range(len(edits) + 1):
        if rnd:
            for path, text in edits[rnd - 1].get("files", {}).items():
                with open(path, "w") as f:
                    f.write(text)
            for argv in edits[rnd - 1].get("run", []):
                subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        prep, results = run_round(q, binding, args.tasks, args.command, rnd, function)
        rounds.append({"prep_seconds": prep, "results": results})
    with open(args.out, "w") as f:
        json.dump({"rounds": rounds, "binding": binding.__name__}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
