"""Pack a ~100 MB prefix with poncho_wq vs ``tar -c | gzip`` and ``tar -c | pigz -p 2``; print times and ratios.

The prefix is a portable environment with numpy and pandas (built once, kept under ~/.cache/poncho_wq-bench).
Usage: python bench/pack_vs_tar.py [--threads 2] [--repeat 3]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from poncho_wq.engines import build_prefix
from poncho_wq.archive.pack import DEFAULT_COMPRESS_LEVEL, pack_prefix

BENCH = os.path.join(os.path.expanduser("~"), ".cache", "poncho_wq-bench")


def prefix_dir():
    prefix = os.path.join(BENCH, "prefix-numpy-pandas-py{}{}".format(*sys.version_info[:2]))
    if not os.path.isdir(prefix):
        os.makedirs(BENCH, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=BENCH)
        build_prefix({"pip": ["numpy", "pandas"]}, os.path.join(tmp, "p"), progress=True)
        os.rename(os.path.join(tmp, "p"), prefix)  # conda-unpack records point at the build path: fine for timing
        shutil.rmtree(tmp)
    return prefix


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total


def tar_pipe(prefix, out, compressor):
    with open(out, "wb") as f:
        tar = subprocess.Popen(["tar", "-c", "-C", prefix, "."], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        comp = subprocess.Popen(compressor, stdin=tar.stdout, stdout=f)
        tar.stdout.close()
        assert comp.wait() == 0 and tar.wait() == 0


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    prefix = prefix_dir()
    print("prefix {}: {:.0f} MB".format(prefix, du(prefix) / 1e6))
    work = tempfile.mkdtemp()
    try:
        out = os.path.join(work, "x.tar.gz")
        rows = []
        for name, fn in [
            ("tar | gzip", lambda: tar_pipe(prefix, out, ["gzip", "-c"])),
            ("tar | pigz -p {}".format(args.threads), lambda: tar_pipe(prefix, out, ["pigz", "-c", "-p",
                                                                                      str(args.threads)])),
        ] + [("poncho_wq level {}{}".format(lvl, " (default)" if lvl == DEFAULT_COMPRESS_LEVEL else ""),
              (lambda lvl=lvl: pack_prefix(prefix, out, n_threads=args.threads, compress_level=lvl)))
             for lvl in (1, 2, 3, 4, 6)] + [
            ("poncho_wq level {} no pigz".format(DEFAULT_COMPRESS_LEVEL),
             lambda: pack_prefix(prefix, out, n_threads=args.threads, use_pigz=False)),
        ]:
            t = best(fn, args.repeat)
            rows.append((name, t, os.path.getsize(out)))
        pigz_t = rows[1][1]
        gzip_t = rows[0][1]
        print("{:<34} {:>8} {:>9} {:>9} {:>9}".format("method", "seconds", "MB", "/pigz", "/gzip"))
        for name, t, size in rows:
            print("{:<34} {:>8.2f} {:>9.1f} {:>8.2f}x {:>8.2f}x".format(name, t, size / 1e6, t / pigz_t, t / gzip_t))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
