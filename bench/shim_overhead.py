"""Run-shim overhead, measured in one run so the ratios compare like with like.

    python3 bench/shim_overhead.py [--runs 200] [--random-mb 40] [--text-mb 24]

Warm path: median wall time of `true` alone, under poncho_package_run (dash) with the per-worker cache, with
--unpack-to, and under Debian's python_package_run -u DIR (coop-computing-tools, bash; needs `python` on PATH
for conda-unpack, so a directory with a `python` symlink to /usr/bin/python3 is put first).
Cold path: the shim's extraction phase (PONCHO_DEBUG timings) vs plain `tar -xzf` of the same tarball, and the
whole cold run vs Debian's cold run on the same tarball (fresh directories each time, 3 runs, medians).
The tarball is a real conda-pack archive of a test prefix (tests/helpers/shimutil.py).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # tests/helpers

from helpers.shimutil import make_prefix, pack  # noqa: E402

from poncho_wq.shim import shim_path  # noqa: E402

DEBIAN = "/usr/bin/python_package_run"


def shim_time(argv, env, runs):
    """Median seconds of running argv to completion (stdin closed, output discarded)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def shim_cold(argv_for, env, runs=3):
    """Median of cold runs; argv_for(i) gives a command using fresh directories."""
    times = []
    for i in range(runs):
        argv = argv_for(i)
        t = time.perf_counter()
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--random-mb", type=int, default=40)
    ap.add_argument("--text-mb", type=int, default=24)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="shim-bench-")
    try:
        tarball = pack(make_prefix(work, random_mb=args.random_mb, prefix_text_mb=args.text_mb),
                       os.path.join(work, "env-" + "ab" * 32 + ".tar.gz"))
        pybin = os.path.join(work, "pybin")
        os.mkdir(pybin)
        os.symlink("/usr/bin/python3", os.path.join(pybin, "python"))
        env = dict(os.environ, PATH=pybin + ":/usr/bin:/bin", PONCHO_ENV_DIR=os.path.join(work, "root"))
        for k in ("PONCHO_DEBUG", "PONCHO_ENV_KEEP", "PONCHO_LOCK", "WORKER_TMPDIR"):
            env.pop(k, None)
        ours = ["dash", shim_path(), "-e", tarball, "true"]
        ours_to = ["dash", shim_path(), "-d", os.path.join(work, "to"), "-e", tarball, "true"]
        debian_to = [DEBIAN, "-u", os.path.join(work, "deb"), "-e", tarball, "true"]
        for argv in (ours, ours_to, debian_to):  # warm up (unpack once)
            subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
        bare = shim_time(["true"], env, args.runs)
        t_ours = shim_time(ours, env, args.runs)
        t_to = shim_time(ours_to, env, args.runs)
        t_deb = shim_time(debian_to, env, max(20, args.runs // 5))
        print("warm path, median of {} runs (command: true)".format(args.runs))
        print("  bare true                        {:7.2f} ms".format(bare * 1e3))
        print("  poncho_package_run (cache)       {:7.2f} ms  added {:6.2f} ms".format(t_ours * 1e3, (t_ours - bare) * 1e3))
        print("  poncho_package_run --unpack-to   {:7.2f} ms  added {:6.2f} ms".format(t_to * 1e3, (t_to - bare) * 1e3))
        print("  debian python_package_run -u     {:7.2f} ms  added {:6.2f} ms".format(t_deb * 1e3, (t_deb - bare) * 1e3))
        print("  overhead ratio ours/debian       {:7.3f}x".format((t_ours - bare) / (t_deb - bare)))

        # Cold: extraction phase vs tar -xzf; whole run vs Debian's.
        size = os.path.getsize(tarball)
        tars, phases = [], []
        for i in range(3):
            dest = os.path.join(work, "tar{}".format(i))
            os.mkdir(dest)
            t = time.perf_counter()
            subprocess.run(["tar", "-xzf", tarball, "-C", dest], check=True)
            tars.append(time.perf_counter() - t)
            r = subprocess.run(["dash", shim_path(), "-e", tarball, "true"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL,
                               env=dict(env, PONCHO_ENV_DIR=os.path.join(work, "cold{}".format(i)), PONCHO_DEBUG="1"))
            r.check_returncode()
            ms = dict(line.split(": ")[1:3] for line in r.stderr.splitlines())
            phases.append({k: float(v.split()[0]) for k, v in ms.items()})
        t_tar = statistics.median(tars)
        t_extract = statistics.median(p["extract"] for p in phases) / 1e3
        c_ours = shim_cold(lambda i: ["dash", shim_path(), "-d", os.path.join(work, "co{}".format(i)), "-e", tarball,
                                      "true"], env)
        c_cache = shim_cold(lambda i: ["env", "PONCHO_ENV_DIR=" + os.path.join(work, "cc{}".format(i)), "dash",
                                       shim_path(), "-e", tarball, "true"], env)
        c_deb = shim_cold(lambda i: [DEBIAN, "-u", os.path.join(work, "cd{}".format(i)), "-e", tarball, "true"], env)
        print("cold path, tarball {:.1f} MB, medians of 3".format(size / 1e6))
        print("  tar -xzf                         {:7.1f} ms".format(t_tar * 1e3))
        print("  shim extract phase               {:7.1f} ms  ratio {:5.2f}x".format(t_extract * 1e3, t_extract / t_tar))
        print("  shim phases (ms)                 {}".format(phases[len(phases) // 2]))
        print("  poncho_package_run cold (cache)  {:7.1f} ms".format(c_cache * 1e3))
        print("  poncho_package_run cold -d DIR   {:7.1f} ms".format(c_ours * 1e3))
        print("  debian python_package_run cold   {:7.1f} ms  ratio ours(cache)/debian {:5.2f}x".format(
            c_deb * 1e3, c_cache / c_deb))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
