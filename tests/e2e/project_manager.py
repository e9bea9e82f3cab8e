"""A manager script for the project / requirements / files= end-to-end tests (issue 18): submits PonchoTasks with
an environment made by one of the three entry points and writes their results as JSON.

    python project_manager.py --port-file F --out R (--command 'python3 -m run {i}' | --python-task PATH)
        [--tasks N] [--project DIR [--extra NAME] | --requirements FILE] [--files JSON]
"""

import argparse
import json
import os
import sys

import poncho_wq
from poncho_wq import wq


def read_text(path, i):
    with open(path) as f:
        return "{} {}".format(i, f.read().strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--command", default="")
    ap.add_argument("--project")
    ap.add_argument("--extra", action="append", default=[])
    ap.add_argument("--requirements")
    ap.add_argument("--files", default="[]", help="files= as JSON (lists become (source, name) pairs)")
    ap.add_argument("--python-task", metavar="PATH", help="submit PonchoPythonTasks returning the text of PATH")
    args = ap.parse_args()

    if args.project:
        env = poncho_wq.Environment.from_project(args.project, extras=args.extra)
    elif args.requirements:
        env = poncho_wq.Environment.from_requirements(args.requirements)
    else:
        env = None  # analyze the command's scripts
    files = [tuple(f) if isinstance(f, list) else f for f in json.loads(args.files)]

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(q.port))
    os.replace(tmp, args.port_file)

    submitted = {}
    for i in range(args.tasks):
        if args.python_task:
            t = poncho_wq.PonchoPythonTask(read_text, args.python_task, i, environment=env, files=files)
        else:
            t = poncho_wq.PonchoTask(args.command.format(i=i), environment=env, files=files)
        t.specify_max_retries(3)
        submitted[q.submit(t)] = i
    results = []
    while not q.empty():
        t = q.wait(5)
        if t is None:
            continue
        rec = {"i": submitted[t.id], "return_status": t.return_status, "result": t.result,
               "output": t.std_output, "shim_error": list(t.shim_error) if t.shim_error else None}
        if args.python_task and t.return_status == 0:
            rec["value"] = t.output
        results.append(rec)
    results.sort(key=lambda r: r["i"])
    with open(args.out, "w") as f:
        json.dump({"results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
