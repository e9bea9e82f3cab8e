"""Manager egress, GETs, unpacks and time-until-all-ready per Work Queue distribution mode, in one run (issue 16).

    python3 bench/distribution_egress.py [--workers 8] [--modes direct,url,shared] [--binding ndcctools.work_queue]

The environment is ``{"pip": ["numpy", "pandas", "scipy"]}`` (>= 70 MB packed; built once, cached under
``~/.cache/poncho_wq-bench/distribution``, ``PONCHO_WQ_BENCH_DIR`` overrides). Per mode, N local workers
(``--cores 1``, scrubbed PATH) connect first, then N PonchoTasks ``python3 -c "import numpy, pandas, scipy"`` are
submitted at once, as a batch start does:
* ``direct``: the manager sends the tarball to each worker (the default);
* ``url``: published into a directory served by :func:`poncho_wq.deliver.publish.serve`; each worker fetches it (curl);
* ``shared``: published into a directory used as the shared file system; unpacked there once.
Printed per mode: manager egress (``stats.bytes_sent`` of the WorkQueue, in MB and in tarballs), GETs of the
tarball at the server (its access log), unpacks (the shim's unpack.log lines), seconds until the N-th task
finished (= all workers ready), and the ratio of each mode's egress to direct's. Also measured: one cold unpack
of the tarball by the shim (the per-worker unpack cost) and a warm task (the imports). The figures are written to
``calibration.json`` next to the cache, which bench/distribution_model.py reads. Goal (issue 16): url egress < 5% of
one tarball (vs N x in direct), one GET and one unpack per worker; shared: one unpack in total.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

from localworkers import count_unpacks, worker_binary  # noqa: E402

BENCH = os.environ.get("PONCHO_WQ_BENCH_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "poncho_wq-bench")
PACKAGES = ["numpy", "pandas", "scipy"]
COMMAND = 'python3 -c "import numpy, pandas, scipy; print(numpy.__version__)"'


def build():
    """The tarball of PACKAGES (poncho_wq's cache makes a second call instant)."""
    root = os.path.join(BENCH, "distribution")
    os.makedirs(root, exist_ok=True)
    spec = os.path.join(root, "nps.json")
    with open(spec, "w") as f:
        json.dump({"python": "{}.{}".format(*sys.version_info[:2]), "pip": PACKAGES}, f)
    tarball = os.path.join(root, "nps.tar.gz")
    env = dict(os.environ, PONCHO_WQ_CACHE=os.path.join(root, "cache"))
    subprocess.run([sys.executable, "-m", "poncho_wq", "create", "-q", spec, tarball], env=env, check=True)
    return root, tarball


def cold_unpack_seconds(tarball, remote_name, work):
    """One cold run of the shim on this machine (extract + relocate + activate, no command): the per-worker cost."""
    from poncho_wq.shim import shim_path

    d = tempfile.mkdtemp(dir=work)
    local = os.path.join(d, remote_name)
    os.symlink(tarball, local)
    env = {"PATH": "/usr/bin:/bin", "PONCHO_ENV_DIR": os.path.join(d, "envs")}
    t0 = time.time()
    subprocess.run(["/bin/sh", shim_path(), "-e", local, "--", "true"], check=True, cwd=d, env=env)
    t1 = time.time()
    subprocess.run(["/bin/sh", shim_path(), "-e", local, "--", "/bin/sh", "-c", COMMAND], check=True, cwd=d, env=env,
                   stdout=subprocess.DEVNULL)
    t2 = time.time()
    shutil.rmtree(d)
    return t1 - t0, t2 - t1


def start_workers(binding, port, n, work):
    procs = []
    for i in range(n):
        wdir = os.path.join(work, "w{}".format(i))
        os.makedirs(wdir)
        procs.append(subprocess.Popen(
            [worker_binary(binding), "localhost", str(port), "-s", wdir, "--cores", "1", "-t", "120",
             "--single-shot"],
            env={"PATH": "/usr/bin:/bin", "HOME": wdir, "LANG": "C.UTF-8",
                 "PONCHO_ENV_DIR": os.path.join(wdir, "envs")},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    return procs


def stop_workers(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def run_mode(binding, mode, environment, n, work):
    from poncho_wq import PonchoTask
    from poncho_wq.deliver.publish import Distribution, serve

    mdir = os.path.join(work, mode)
    os.makedirs(mdir)
    server = None
    if mode == "url":
        pub = os.path.join(mdir, "pub")
        os.makedirs(pub)
        server = serve(pub, log_path=os.path.join(mdir, "access.log"))
        dist = Distribution("url", pub, server.url)
    elif mode == "shared":
        dist = Distribution("shared", os.path.join(mdir, "shared"))
    else:
        dist = Distribution("direct")
    q = binding.WorkQueue(port=0)
    procs = start_workers(binding, q.port, n, os.path.join(mdir, "workers"))
    try:
        deadline = time.time() + 60
        while q.stats.workers_connected < n:
            q.wait(1)
            if time.time() > deadline:
                sys.exit("only {} of {} workers connected".format(q.stats.workers_connected, n))
        tasks = [PonchoTask(COMMAND, environment=environment, distribution=dist) for _ in range(n)]
        sent0 = q.stats.bytes_sent
        t0 = time.time()
        for t in tasks:
            q.submit(t)
        done = 0
        while not q.empty():
            t = q.wait(5)
            if t is None:
                continue
            if t.return_status != 0:
                sys.exit("{} task failed: {} {}".format(mode, t.shim_error, t.std_output))
            done += 1
        seconds = time.time() - t0
        egress = q.stats.bytes_sent - sent0
    finally:
        stop_workers(procs)
        if server is not None:
            server.stop()
    gets = 0
    if server is not None:
        with open(server.log_path) as f:
            gets = sum(1 for line in f if " GET /" + environment.remote_name + " " in line)
    unpacks = count_unpacks(mdir)
    return {"mode": mode, "egress": egress, "gets": gets, "unpacks": unpacks, "seconds": seconds, "tasks": done}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--modes", default="direct,url,shared")
    ap.add_argument("--binding", default="ndcctools.work_queue")
    args = ap.parse_args()
    os.environ["PONCHO_WQ_BINDING"] = args.binding
    from poncho_wq import Environment, wq

    binding = wq.load()
    root, tarball = build()
    environment = Environment.from_tarball(tarball)
    size = os.path.getsize(tarball)
    work = tempfile.mkdtemp(prefix="poncho-dist-bench-")
    try:
        # The one-worker costs are measured before each mode and their medians kept: on a shared machine they
        # vary with its load, and the medians reflect the load during the runs they calibrate.
        singles, rows = [], []
        for mode in args.modes.split(","):
            singles.append(cold_unpack_seconds(tarball, environment.remote_name, work))
            rows.append(run_mode(binding, mode, environment, args.workers, work))
        unpack = statistics.median(s[0] for s in singles)
        warm = statistics.median(s[1] for s in singles)
        print("environment: {} ({:.1f} MB packed); one cold unpack by the shim: {:.2f} s (median of {}: {}), a warm "
              "task: {:.2f} s; N = {} workers, {}".format(
                  "+".join(PACKAGES), size / 1e6, unpack, len(singles), ", ".join("%.2f" % s[0] for s in singles),
                  warm, args.workers, binding.__name__))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = next((r for r in rows if r["mode"] == "direct"), None)
    print("{:8} {:>12} {:>10} {:>6} {:>8} {:>10} {:>12}".format("mode", "egress MB", "tarballs", "GETs", "unpacks",
                                                                "ready s", "vs direct"))
    for r in rows:
        ratio = "{:.4f}x".format(r["egress"] / base["egress"]) if base and base["egress"] else "-"
        print("{:8} {:12.2f} {:10.3f} {:6d} {:8d} {:10.2f} {:>12}".format(
            r["mode"], r["egress"] / 1e6, r["egress"] / size, r["gets"], r["unpacks"], r["seconds"], ratio))
    calibration = {"tarball_bytes": size, "unpack_seconds": unpack, "warm_task_seconds": warm, "workers": args.workers,
                   "local_cores": os.cpu_count(), "runs": rows}
    with open(os.path.join(root, "calibration.json"), "w") as f:
        json.dump(calibration, f, indent=1)
    print("calibration written to " + os.path.join(root, "calibration.json"))


if __name__ == "__main__":
    main()
