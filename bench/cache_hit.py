"""Cold ``poncho_package_create`` vs a second call on the same spec (a cache hit); print times and the ratio.

Each run uses a fresh cache directory, so the cold build really builds (uv's own wheel cache stays warm, as on
any machine that has built before). Usage: python bench/cache_hit.py [--repeat 3] [pip requirements ...]
"""

import argparse
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time

CREATE = os.path.join(sysconfig.get_path("scripts"), "poncho_package_create")


def run(args):
    start = time.perf_counter()
    subprocess.run([CREATE, "-q"] + args, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("requirements", nargs="*", default=["numpy", "pandas"])
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    try:
        spec = os.path.join(work, "spec.json")
        with open(spec, "w") as f:
            json.dump({"pip": args.requirements}, f)
        colds, hits = [], []
        for i in range(args.repeat):
            cache = os.path.join(work, "cache{}".format(i))
            colds.append(run(["--cache-dir", cache, spec, os.path.join(work, "cold.tar.gz")]))
            hits.append(run(["--cache-dir", cache, spec, os.path.join(work, "hit.tar.gz")]))
        cold, hit = min(colds), min(hits)
        print("spec: pip {}".format(" ".join(args.requirements)))
        print("cold build  {:.2f} s (best of {})".format(cold, args.repeat))
        print("cache hit   {:.3f} s (best of {})".format(hit, args.repeat))
        print("hit / cold  {:.1%}  (target < 5%)".format(hit / cold))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
