"""Cold start of the shim alone: an environment from its parts vs the same environment's single tarball.

    python3 bench/parts_cold_start.py --cache DIR [--env env-<hex>] [--runs 6] [--shim NAME=PATH ...]
                                      [--budget-mb 10240] [--execve]

Why: issue 28 asks a fresh worker's cold start with an environment assembled from content-addressed parts to be
at most 1.05x the single-tarball one.  The manager, the transfer and the worker are left out: each run is one
`poncho_package_run` into a fresh root (PONCHO_ENV_DIR), `-e env-<hex>.tar.gz` or `-e env-<hex> --part ...`,
running `python -c pass` inside the environment, so what is measured is the unpack (and, for parts, the
unpacks of every part and the assembly), the relocation and one interpreter start.  Runs are interleaved
(tarball, parts, for each shim given, then again) so that the machine's load hits all alike; best and median
of --runs wall time, and the median CPU time (user + system of the shim and everything it ran: what a loaded
machine's wall time swings with least).
PONCHO_ENV_BUDGET_MB is set (default 10240, the shim's default on a root of its own), so the budget's size
records are made as on a real worker.  --shim NAME=PATH compares shims (e.g. the one of HEAD with the working
tree's); --execve counts process starts of one extra run each under `strace -f -c -e trace=execve`.

DIR is a poncho_wq cache holding envs/env-<hex>.tar.gz and parts/env-<hex>.parts.json with its parts (made by
bench/delta_update.py, or by any job with parts on).
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="poncho_wq cache with envs/ and parts/")
    ap.add_argument("--env", help="env-<hex> (default: the first parts index in the cache)")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--shim", action="append", default=[], help="NAME=PATH (default: the installed shim)")
    ap.add_argument("--budget-mb", default="10240", help="PONCHO_ENV_BUDGET_MB for every run ('' to unset)")
    ap.add_argument("--execve", action="store_true", help="count execve per run with strace")
    return ap.parse_args()


def main():
    a = parse()
    parts_dir = os.path.join(a.cache, "parts")
    env_id = a.env
    if not env_id:
        idx = sorted(f for f in os.listdir(parts_dir) if f.endswith(".parts.json"))
        if not idx:
            sys.exit(f"no parts index in {parts_dir}: make one with bench/delta_update.py")
        env_id = idx[0][: -len(".parts.json")]
    with open(os.path.join(parts_dir, env_id + ".parts.json")) as f:
        index = json.load(f)
    parts = [os.path.join(parts_dir, p["name"]) for p in index["parts"]]
    tarball = os.path.join(a.cache, "envs", env_id + ".tar.gz")
    shims = []
    for s in a.shim or []:
        name, _, path = s.partition("=")
        shims.append((name, os.path.abspath(path)))
    if not shims:
        from poncho_wq.shim import shim_path

        shims = [("installed", shim_path())]
    argv_of = {
        "tarball": ["-e", tarball],
        "parts": ["-e", env_id] + [x for p in parts for x in ("--part", p)],
    }
    env = dict(os.environ)
    env.pop("PONCHO_DEBUG", None)
    if a.budget_mb:
        env["PONCHO_ENV_BUDGET_MB"] = a.budget_mb
    else:
        env.pop("PONCHO_ENV_BUDGET_MB", None)
    tmp = tempfile.mkdtemp(prefix="parts-cold-", dir=os.path.dirname(os.path.abspath(a.cache)))

    def fresh_root():
        """The shim's environment with an empty per-worker root (a fresh worker)."""
        root = os.path.join(tmp, "root")
        shutil.rmtree(root, ignore_errors=True)
        os.mkdir(root)
        return dict(env, PONCHO_ENV_DIR=root)

    best, walls, cpus = {}, {}, {}
    try:
        for run in range(a.runs):
            for name, shim in shims:
                for mode in ("tarball", "parts"):
                    e = fresh_root()
                    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    t = time.perf_counter()
                    subprocess.run(["sh", shim] + argv_of[mode] + ["--", "python", "-c", "pass"], env=e,
                                   stdin=subprocess.DEVNULL, check=True)
                    dt = time.perf_counter() - t
                    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                    key = (name, mode)
                    best[key] = min(best.get(key, dt), dt)
                    walls.setdefault(key, []).append(dt)
                    cpus.setdefault(key, []).append(cpu)
                    print(f"run {run + 1} {name:>10} {mode:>7}: {dt:.2f} s (cpu {cpu:.2f} s)", flush=True)
        if a.execve:
            for name, shim in shims:
                for mode in ("tarball", "parts"):
                    e = fresh_root()
                    out = subprocess.run(["strace", "-f", "-c", "-e", "trace=execve", "sh", shim] + argv_of[mode]
                                         + ["--", "python", "-c", "pass"], env=e, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
                    m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)(?:\s+\d+)?\s+execve", out, re.M)
                    best[(name, mode, "execve")] = int(m.group(1)) if m else -1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{env_id}: {len(parts)} parts, tarball {os.path.getsize(tarball) / 1e6:.1f} MB; best of {a.runs}, "
          f"interleaved, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, _ in shims:
        tb, pt = best[(name, "tarball")], best[(name, "parts")]
        mt, mp = statistics.median(walls[(name, "tarball")]), statistics.median(walls[(name, "parts")])
        ct, cp = statistics.median(cpus[(name, "tarball")]), statistics.median(cpus[(name, "parts")])
        line = (f"{name:>10}: best tarball {tb:.2f} s, parts {pt:.2f} s, {pt / tb:.2f}x; median {mt:.2f} s, "
                f"{mp:.2f} s, {mp / mt:.2f}x; median cpu {ct:.2f} s, {cp:.2f} s, {cp / ct:.2f}x")
        if a.execve:
            line += f"; execve tarball {best[(name, 'tarball', 'execve')]}, parts {best[(name, 'parts', 'execve')]}"
        print(line)


if __name__ == "__main__":
    main()
