"""A second workflow on the same, still running workers vs a warm rerun within one manager process (issue 27).

    python3 bench/second_workflow.py [--spec '{"pip": ["humanize"]}'] [--runs 3] [--bindings wq,wq-serve,vine]

One local worker (not ``--single-shot``) serves two manager processes in turn on one port. Manager 1 runs a first
task on the fresh worker (the cold start), then, in the same process, a second task (the *warm rerun*: the
baseline). Manager 2, a new process, runs one task on the same worker (the *second workflow*), then a warm rerun of
its own. Each driver imports the task class at its top, before its queue exists, as a user's script does (the
import is printed apart), and times its tasks after a plain task without environment came back: the worker's
re-attach is excluded (work_queue_worker and vine_worker sleep ``--min-backoff``, 1 s by default, after a manager
disconnects, doubling up to ``--max-backoff``, 60 s, while no manager answers; printed as "attach").

Printed per binding: first result of the second workflow / warm rerun (best of ``--runs`` each, same run of this
script); per run, manager 2's first result / its own warm rerun (paired: same process, same load; the median);
where the second workflow's first result went (making the task, the worker's run of the command as Work Queue
reports it, the rest: dispatch, transfers, the result's return); what manager 2 sent (manager stats
``bytes_sent``) as a fraction of the tarball, and the unpacks it caused (Work Queue: lines of the shim's
unpack.log; TaskVine: whether the environment still holds a mark the first workflow left).
Work Queue ``direct`` mode sends the tarball again (the worker forgot its inputs with its workspace) but does not
unpack it; TaskVine sends nothing. ``wq-serve`` is Work Queue with ``PONCHO_WQ_DISTRIBUTION=serve``: the base is no
input, the shim fetches it from the manager's cache server on a miss only; what the worker got for manager 2 is
the manager's ``bytes_sent`` (the shim, a code layer) plus the bytes its cache server sent (GETs in its access log).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

from localworkers import count_unpacks, worker_binary  # noqa: E402

DRIVER = r'''
import json, os, sys, tempfile, time
kind, out, port, tarball, phase = sys.argv[1:6]
command = ('python3 -c "import humanize"; m="$CONDA_PREFIX/.bench_mark"; [ {} = 1 ] && : >"$m"; '
           '[ -e "$m" ] && echo MARK; true').format(phase)
def port_file(port):
    with open(out + ".port.tmp", "w") as f:
        f.write(str(port))
    os.rename(out + ".port.tmp", out + ".port")
# As a user's script: the task class is imported at the top, before the queue exists (timed apart: "import").
t0 = time.time()
if kind == "vine":
    from ndcctools import taskvine as vine
    from poncho_wq.taskvine import PonchoVineTask
else:
    from poncho_wq import wq, PonchoTask
    b = wq.load()
imported = time.time() - t0
if kind == "vine":
    m = vine.Manager(port=int(port), run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
    port_file(m.port)
    make = lambda: PonchoVineTask(m, command, environment=tarball, cores=1)
    q, plain, ok = m, vine.Task("true"), lambda t: t.exit_code == 0
    execution = lambda t: None
    stats = lambda: m.stats.bytes_sent
else:
    q = b.WorkQueue(port=int(port))
    port_file(q.port)
    make = lambda: PonchoTask(command, environment=tarball)
    plain, ok = b.Task("true"), lambda t: t.return_status == 0
    # The command's run time on the worker (shim and python3), as the worker measured it.
    execution = lambda t: getattr(t, "cmd_execution_time", 0) / 1e6 or None
    stats = lambda: q.stats.bytes_sent
def one():
    # [first result, of which making the task, of which the worker's run of the command, output]
    start = time.time()
    task = make()
    made = time.time() - start
    q.submit(task)
    while True:
        t = q.wait(5)
        if t:
            assert ok(t), t.std_output
            return [time.time() - start, made, execution(t), t.std_output]
# Timed after a plain task (no environment) came back: a worker re-attaches to a new manager after a back-off of
# its own (work_queue_worker and vine_worker sleep --min-backoff, 1 s, after a manager disconnects, doubling up
# to --max-backoff, 60 s, while no manager answers) and reports its resources before it gets tasks: not what this
# measures, but printed ("attach": the new queue's creation to the plain task's result).
t1 = time.time()
q.submit(plain)
while not q.wait(5):
    pass
attach = time.time() - t1
first = one()
rerun = one()
json.dump({"first": first, "rerun": rerun, "bytes_sent": stats(), "import": imported, "attach": attach},
          open(out, "w"))
# Free the manager before exit, so that it releases its workers: a manager freed only in the interpreter's shutdown
# needs poncho_wq.wq.quiet_at_exit's copies of the CCTools modules to release them (else vine_worker sleeps 5 s after
# the dropped connection, vine_worker.c's disconnect_manager, before it looks for the next one); freeing it here
# does not depend on that.
import gc
del q, plain, make, stats
if kind == "vine":
    del m
gc.collect()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def manager(tmp, kind, phase, port, tarball, start_worker=None):
    out = os.path.join(tmp, "out{}.json".format(phase))
    for f in (out, out + ".port"):
        if os.path.exists(f):
            os.unlink(f)
    log = open(os.path.join(tmp, "driver{}.log".format(phase)), "w")
    env = dict(os.environ)
    if kind == "wq-serve":
        env.update(PONCHO_WQ_DISTRIBUTION="serve", PONCHO_WQ_SERVE_LOG=os.path.join(tmp, "serve{}.log".format(phase)))
    proc = subprocess.Popen([sys.executable, os.path.join(tmp, "driver.py"), kind, out, str(port), tarball,
                             str(phase)], cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)
    while not os.path.exists(out + ".port"):
        if proc.poll() is not None:
            sys.exit("manager failed: " + open(log.name).read()[-2000:])
        time.sleep(0.05)
    if start_worker:
        start_worker()
    if proc.wait(600) != 0:
        sys.exit("manager failed: " + open(log.name).read()[-2000:])
    with open(out) as f:
        result = json.load(f)
    result["served_gets"] = _served_gets(os.path.join(tmp, "serve{}.log".format(phase)))
    return result


def _served_gets(log):
    """GETs the cache server answered with the whole file (status 200), from its access log."""
    try:
        with open(log) as f:
            return sum(1 for line in f if line.split()[2:3] == ["GET"] and line.split()[-1] == "200")
    except FileNotFoundError:
        return 0


def once(kind, tarball):
    tmp = tempfile.mkdtemp(prefix="poncho-bench-second-")
    with open(os.path.join(tmp, "driver.py"), "w") as f:
        f.write(DRIVER)
    port = free_port()
    if kind == "vine":
        from ndcctools import taskvine as module
        binary = worker_binary(module, "vine_worker")
    else:
        from poncho_wq import wq
        binary = worker_binary(wq.load())
    workdir = os.path.join(tmp, "worker")
    os.makedirs(workdir)
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"}
    procs = []

    def start():
        procs.append(subprocess.Popen([binary, "localhost", str(port), "-s", workdir, "--cores", "2", "-t", "120"],
                                      env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
    try:
        one = manager(tmp, kind, 1, port, tarball, start)
        unpacks = count_unpacks(workdir)
        two = manager(tmp, kind, 2, port, tarball)
        unpacks = count_unpacks(workdir) - unpacks if kind != "vine" else (0 if "MARK" in two["first"][3] else 1)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return one, two, unpacks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default='{"pip": ["humanize"]}')
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bindings", default="wq,wq-serve,vine", help="wq (direct), wq-serve, vine")
    args = ap.parse_args()
    from poncho_wq.assemble.environment import as_environment

    tarball = as_environment(json.loads(args.spec)).build()
    size = os.path.getsize(tarball)
    print("environment {} ({:.1f} MB)".format(os.path.basename(tarball), size / 1e6))
    for kind in args.bindings.split(","):
        rows = [once(kind, tarball) for _ in range(args.runs)]
        cold = min(r[0]["first"][0] for r in rows)
        rerun = min(r[0]["rerun"][0] for r in rows)
        second = min(r[1]["first"][0] for r in rows)
        sent = max(r[1]["bytes_sent"] for r in rows)
        served = max(r[1]["served_gets"] for r in rows) * size
        unpacks = max(r[2] for r in rows)
        # Per worker (one worker here): what manager 2 sent (all inputs: the shim, a code layer; in direct mode
        # the base too) plus what its cache server sent (serve mode), as a fraction of the tarball.
        print("{:8} cold first {:.2f} s | warm rerun {:.3f} s | second workflow {:.3f} s = {:.2f}x the warm rerun | "
              "worker got from manager 2: {:.1%} of the tarball (sent {:.1%}, served {:.1%}) | unpacks by "
              "manager 2: {}".format(kind, cold, rerun, second, second / rerun, (sent + served) / size, sent / size,
                                     served / size, unpacks))
        # Paired, per run: manager 2's first result vs manager 2's own warm rerun (same process, same moment of
        # the machine's load): the median of the runs' ratios, less sensitive to load than two separate minima.
        paired = sorted(r[1]["first"][0] / r[1]["rerun"][0] for r in rows)
        print("{:8} per run, manager 2's first result / its own warm rerun: median {:.2f}x (runs: {})".format(
            kind, paired[len(paired) // 2], ", ".join("{:.2f}".format(x) for x in paired)))
        # Where the first result's time went (best of the runs each): making the task in the new process (the
        # import of the task class is before the queue, as in a user's script, printed apart), the worker's run of
        # the command (Work Queue reports it), the rest (dispatch, transfers, the result's return).
        made2 = min(r[1]["first"][1] for r in rows)
        line = "{:8} second workflow: making the task {:.3f} s".format(kind, made2)
        if kind != "vine":
            ex2 = min(r[1]["first"][2] for r in rows)
            ex1 = min(r[0]["rerun"][2] for r in rows)
            rest2 = min(r[1]["first"][0] - r[1]["first"][1] - r[1]["first"][2] for r in rows)
            rest1 = min(r[0]["rerun"][0] - r[0]["rerun"][1] - r[0]["rerun"][2] for r in rows)
            line += (", the worker's run of the command {:.3f} s (warm rerun {:.3f} s), dispatch and return "
                     "{:.3f} s (warm rerun {:.3f} s)".format(ex2, ex1, rest2, rest1))
        print(line + "; before it, importing the task class {:.3f} s, the worker's attach {:.2f} s".format(
            min(r[1]["import"] for r in rows), min(r[1]["attach"] for r in rows)))

if __name__ == "__main__":
    main()
