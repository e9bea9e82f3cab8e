"""A second workflow on the same, still running workers vs a warm rerun within one manager process (issue 27).

    python3 bench/second_workflow.py [--spec '{"pip": ["humanize"]}'] [--runs 3] [--bindings wq,wq-serve,vine]

One local worker (not ``--single-shot``) serves two manager processes in turn on one port. Manager 1 runs a first
task on the fresh worker (the cold start), then, in the same process, a second task (the *warm rerun*: the
baseline). Manager 2, a new process, runs one task on the same worker (the *second workflow*). Printed per
binding (each timed after a plain task without environment came back: worker attach latency excluded): first result of the second workflow / warm rerun (best of ``--runs``, same run of this script), what
manager 2 sent (manager stats ``bytes_sent``) as a fraction of the tarball, and the unpacks it caused (Work Queue:
lines of the shim's unpack.log; TaskVine: whether the environment still holds a mark the first workflow left).
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
timings = []
def port_file(port):
    with open(out + ".port.tmp", "w") as f:
        f.write(str(port))
    os.rename(out + ".port.tmp", out + ".port")
if kind == "vine":
    from ndcctools import taskvine as vine
    from poncho_wq.taskvine import PonchoVineTask
    m = vine.Manager(port=int(port), run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
    port_file(m.port)
    def one():
        start = time.time()
        m.submit(PonchoVineTask(m, command, environment=tarball, cores=1))
        while True:
            t = m.wait(5)
            if t:
                assert t.exit_code == 0, t.std_output
                return time.time() - start, t.std_output
    stats = lambda: m.stats.bytes_sent
else:
    import poncho_wq
    from poncho_wq import wq
    b = wq.load()
    q = b.WorkQueue(port=int(port))
    port_file(q.port)
    def one():
        start = time.time()
        task = poncho_wq.PonchoTask(command, environment=tarball)
        made = time.time() - start
        q.submit(task)
        while True:
            t = q.wait(5)
            if t:
                assert t.return_status == 0, t.std_output
                return time.time() - start, t.std_output, made
    stats = lambda: q.stats.bytes_sent
# Timed after a plain task (no environment) came back: a worker re-attaches to a new manager after a back-off of
# its own and reports its resources before it gets tasks (about a second), which is not what this measures.
plain = vine.Task("true") if kind == "vine" else b.Task("true")
(m if kind == "vine" else q).submit(plain)
while not (m if kind == "vine" else q).wait(5):
    pass
first = one()
rerun = one() if phase == "1" else None
json.dump({"first": first, "rerun": rerun, "bytes_sent": stats()}, open(out, "w"))
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
        unpacks = count_unpacks(workdir) - unpacks if kind != "vine" else (0 if "MARK" in two["first"][1] else 1)
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
        if kind != "vine":
            # The manager's side of the first result: making the task in a fresh process (memos, the cache entry's
            # check, the serve mode's server) vs in the warm one.
            made2 = min(r[1]["first"][2] for r in rows)
            made_rerun = min(r[0]["rerun"][2] for r in rows)
            print("{:8} of which making the PonchoTask: second workflow {:.3f} s, warm rerun {:.3f} s; without it "
                  "{:.2f}x".format(kind, made2, made_rerun, (second - made2) / (rerun - made_rerun)))
        print("{:8} cold first {:.2f} s | warm rerun {:.2f} s | second workflow {:.2f} s = {:.2f}x the warm rerun | "
              "worker got from manager 2: {:.1%} of the tarball (sent {:.1%}, served {:.1%}) | unpacks by "
              "manager 2: {}".format(kind, cold, rerun, second, second / rerun, (sent + served) / size, sent / size,
                                     served / size, unpacks))


if __name__ == "__main__":
    main()
