"""How one environment reaches N TaskVine workers that start together: manager egress, origin GETs and peer
transfers per distribution mode, in one run (issue 16).

    python3 bench/taskvine_spread.py [--workers 4,8] [--size medium] [--modes direct,seed,url,url+seed]

The environment is bench/cold_start.py's (``--size``: small, medium, large; built once, cached). Per mode and N:
N local ``vine_worker --cores 1`` connect first, then 2N tasks (``python3 -c "import numpy"`` or ``import six``)
with the environment are submitted at once, as a batch start does.
* ``direct``: ``declare_file`` + ``declare_poncho`` (before this change, the only mode);
* ``seed``: ``declare_environment(seed=...)``: one seed task puts the tarball in a temp on one worker, the others
  get it from peers;
* ``url``: published into a directory served by :func:`poncho_wq.deliver.publish.serve` (a local ``http.server``), each
  worker fetches it (``curl -f`` mini task);
* ``url+seed``: url, seeded: one GET.
Printed: manager egress (``stats.bytes_sent``) in tarballs, GETs of the tarball at the server (its access log),
peer transfers (tarball-sized ``CACHE_UPDATE`` of the transaction log minus manager sends and GETs), unpacks,
time until the last task finished. Goal: egress and GETs of ~1 tarball, not N.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

from cold_start import SIZES, build  # noqa: E402
from localworkers import worker_binary  # noqa: E402


def start_workers(vine, port, n, work):
    procs = []
    for i in range(n):
        wdir = os.path.join(work, "w{}".format(i))
        os.makedirs(wdir)
        procs.append(subprocess.Popen(
            [worker_binary(vine, "vine_worker"), "localhost", str(port), "-s", wdir, "--cores", "1", "-t", "120"],
            env={"PATH": "/usr/bin:/bin", "HOME": wdir, "LANG": "C.UTF-8"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    return procs


def count_gets(log, name):
    if not os.path.exists(log):
        return 0
    with open(log) as f:
        return sum(1 for line in f if line.split()[2:5] == ["GET", "/" + name, "200"])


def run(vine, mode, n, tarball, code, work):
    from poncho_wq.deliver.publish import Distribution, serve
    from poncho_wq.taskvine import declare_environment

    size = os.path.getsize(tarball)
    m = vine.Manager(port=0, run_info_path=os.path.join(work, "runinfo"), run_info_template="{}-{}".format(mode, n))
    txn = os.path.join(m.logging_directory, "transactions")
    procs = start_workers(vine, m.port, n, os.path.join(work, "{}-{}".format(mode, n)))
    server = None
    try:
        while m.stats.workers_connected < n:
            m.wait(1)
        dist, seed = "direct", 0
        if mode.startswith("url"):
            pub = os.path.join(work, "pub")
            os.makedirs(pub, exist_ok=True)
            server = serve(pub, log_path=os.path.join(work, "access-{}-{}.log".format(mode, n)))
            dist = Distribution("url", pub, server.url)
        if mode.endswith("seed"):
            seed = 120
        start = time.perf_counter()
        env = declare_environment(m, tarball, distribution=dist, seed=seed)
        for _ in range(2 * n):
            t = vine.Task("python3 -c '{}'".format(code))
            t.add_environment(env)
            t.set_cores(1)
            m.submit(t)
        while not m.empty():
            t = m.wait(5)
            if t is not None and not t.successful():
                sys.exit("{} task failed: {} {}".format(mode, t.result, t.std_output))
        elapsed = time.perf_counter() - start
        egress = m.stats.bytes_sent
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if server is not None:
            server.stop()
    gets = count_gets(server.log_path, os.path.basename(tarball)) if server is not None else 0
    # The transaction log's sizes are in bytes (its header says MB). Tarball-sized CACHE_UPDATEs are copies of the
    # tarball arriving in a worker cache (sent, fetched, from a peer, or the seed's own temp); larger ones unpacks.
    copies = sends = unpacks = 0
    with open(txn) as f:
        for line in f:
            parts = line.split()
            if len(parts) > 6 and parts[4] == "CACHE_UPDATE":
                if abs(int(parts[6]) - size) < 0.02 * size:
                    copies += 1
                elif int(parts[6]) > size:
                    unpacks += 1
            elif len(parts) > 7 and parts[4:6] == ["TRANSFER", "INPUT"] and abs(int(parts[7]) - size) < 0.02 * size:
                sends += 1
    seeded = 1 if mode.endswith("seed") else 0
    del m
    return egress / size, gets, copies - sends - gets - seeded, unpacks, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="4,8")
    ap.add_argument("--size", default="medium", choices=sorted(SIZES))
    ap.add_argument("--modes", default="direct,seed,url,url+seed")
    args = ap.parse_args()
    from ndcctools import taskvine as vine

    tarball, _venv = build(args.size, False)
    code = "import numpy" if args.size != "small" else "import six"
    work = tempfile.mkdtemp(prefix="vine-spread-")
    # The published name must be the content-addressed one (publish() keeps names as given).
    named = os.path.join(work, "env-bench{}.tar.gz".format(args.size))
    shutil.copyfile(tarball, named)
    try:
        print("{}: {:.1f} MB tarball".format(args.size, os.path.getsize(named) / 1e6))
        for n in (int(x) for x in args.workers.split(",")):
            for mode in args.modes.split(","):
                egress, gets, peers, unpacks, elapsed = run(vine, mode, n, named, code, work)
                print("N={:2d} {:9s} manager egress {:5.2f} tarballs | GETs {:2d} | peer transfers {:2d} | "
                      "unpacks {:2d} | all done {:6.1f} s".format(n, mode, egress, gets, peers, unpacks, elapsed))
                sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
