"""Throughput of TaskVine FunctionCalls: a library built by poncho_wq vs the same library with a hand-made
``poncho_env`` (same contents).

    python3 bench/serverless_throughput.py [--calls 400] [--rounds 3] [--slots 2]

poncho_wq: ``create_library(m, "lib", describe)`` (analysis of this script + TaskVine's library runtime + the
manager's ndcctools, declared by poncho_wq). Hand-made: the very same files (the poncho_wq tarball extracted and
packed again with ``tar czf``, as a user packing a prepared prefix by hand would), given to TaskVine's own
``create_library_from_functions("lib", describe, poncho_env=path)``. Each round starts a new manager and one
scrubbed ``vine_worker`` (``PATH=/usr/bin:/bin``), installs the library, runs a warm-up batch (library start,
environment transfer and unpack), then times ``--calls`` FunctionCalls. The variants alternate; printed: the
median warm rate of each and their ratio (goal >= 0.95x). A third variant, ``create_library(...,
fail_fast=False)``, shows what TaskVine's ``watch-library-logfiles`` (set by the default ``fail_fast=True``, so
that a library's error reaches the manager) costs per call. Nothing is asserted.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

from ndcctools import taskvine as vine

from poncho_wq.taskvine import create_library

WARMUP = 20


def describe(n):
    import humanize

    return humanize.intword(n)


def hand_made_copy(tarball, workdir):
    """The poncho_wq environment's files, packed again by hand (tar czf): same contents, another route."""
    prefix = os.path.join(workdir, "prefix")
    os.makedirs(prefix)
    with tarfile.open(tarball) as tf:
        tf.extractall(prefix)
    out = os.path.join(workdir, "hand-made-env.tar.gz")
    subprocess.run(["tar", "czf", out, "-C", prefix, "."], check=True)
    shutil.rmtree(prefix)
    return out


def one_round(variant, calls, slots, hand_made):
    run_info = tempfile.mkdtemp(prefix="vine-bench-")
    m = vine.Manager(port=0, run_info_path=run_info)
    if variant == "poncho_wq":
        lib = create_library(m, "lib", describe)
    elif variant == "fail_fast=False":
        lib = create_library(m, "lib", describe, fail_fast=False)
    else:
        lib = m.create_library_from_functions("lib", describe, poncho_env=hand_made)
    lib.set_cores(slots)
    lib.set_function_slots(slots)
    m.install_library(lib)
    worker = subprocess.Popen([shutil.which("vine_worker"), "localhost", str(m.port), "--single-shot",
                               "--cores", str(slots)],
                              env={"PATH": "/usr/bin:/bin", "HOME": run_info}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def batch(n):
            for i in range(n):
                m.submit(vine.FunctionCall("lib", "describe", 10 ** 6 + i))
            while not m.empty():
                t = m.wait(5)
                if t and not t.successful():
                    sys.exit("{}: a FunctionCall failed: {} {}".format(variant, t.result, t.output))

        batch(WARMUP)
        t0 = time.perf_counter()
        batch(calls)
        return calls / (time.perf_counter() - t0)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        shutil.rmtree(run_info, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slots", type=int, default=2)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="serverless-bench-")
    try:
        probe = vine.Manager(port=0, run_info_path=os.path.join(workdir, "probe"))
        t0 = time.perf_counter()
        tarball = create_library(probe, "lib", describe).environment.build()
        print("poncho_wq environment {} ({:.1f} MB), ready in {:.2f} s".format(
            os.path.basename(tarball), os.path.getsize(tarball) / 1e6, time.perf_counter() - t0))
        del probe
        hand_made = hand_made_copy(tarball, workdir)
        rates = {"poncho_wq": [], "fail_fast=False": [], "hand-made": []}
        for _ in range(args.rounds):
            for variant in rates:
                rates[variant].append(one_round(variant, args.calls, args.slots, hand_made))
        for variant, values in rates.items():
            print("{:15s} median {:7.1f} calls/s  (rounds: {})".format(
                variant, statistics.median(values), ", ".join("{:.1f}".format(v) for v in values)))
        ratio = statistics.median(rates["poncho_wq"]) / statistics.median(rates["hand-made"])
        print("FunctionCall throughput ratio poncho_wq/hand-made: {:.2f}x (goal >= 0.95x)".format(ratio))
        print("  without fail_fast (no library log streaming): {:.2f}x".format(
            statistics.median(rates["fail_fast=False"]) / statistics.median(rates["hand-made"])))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
