#!/usr/bin/env python3
"""Bench: poncho_package_analyze (cold and warm cache) against ``pipreqs --use-local`` on the sympy sources.

Creates (or reuses) a venv under ``~/.cache/poncho_wq-bench/analyze`` (``PONCHO_WQ_BENCH_DIR`` overrides) with
``sympy`` and ``pipreqs`` from PyPI, copies the sympy package (~1,500 files, 26 MB) into a temporary project
directory (in place inside site-packages, its siblings such as mpmath would count as local code), then times:

* poncho_wq cold: the analyze cache emptied before each run;
* poncho_wq warm: the same files again (cache keyed on (path, size, mtime_ns));
* pipreqs --use-local on the same tree.

Both tools resolve packages against the bench venv (poncho_wq through ``--prefix``) and run as fresh processes,
so interpreter start-up is included on both sides. Each figure is the best of several runs; the ratios printed
are measured in this run. The result checks: warm output == cold output == an uncached, serial full AST pass
(``--no-cache`` with ``PONCHO_WQ_ANALYZE_SERIAL=1``), and every cached per-file scan equals a fresh parse.

Usage: python3 bench/analyze_vs_pipreqs.py [--runs N]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from poncho_wq.analysis.analyzer import ScanCache, scan_file  # noqa: E402


def bench_dir():
    return os.environ.get("PONCHO_WQ_BENCH_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                 "poncho_wq-bench", "analyze")


def ensure_venv():
    venv = os.path.join(bench_dir(), "venv")
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".bench-ready")
    if not os.path.exists(stamp):
        shutil.rmtree(venv, ignore_errors=True)
        os.makedirs(bench_dir(), exist_ok=True)
        print("creating bench venv {} (sympy, pipreqs) ...".format(venv), file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, stdin=subprocess.DEVNULL)
        subprocess.run([py, "-m", "pip", "install", "-q", "sympy", "pipreqs"], check=True, stdin=subprocess.DEVNULL)
        open(stamp, "w").close()
    site = subprocess.run([py, "-c", "import sympy, os; print(os.path.dirname(sympy.__file__))"], check=True,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout.strip()
    return venv, py, site


def timed(cmd, env=None):
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("command failed ({}): {}\n{}".format(proc.returncode, " ".join(cmd), proc.stderr[-3000:]))
    return elapsed, proc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (best is kept)")
    args = ap.parse_args()
    venv, vpy, sympy_dir = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="poncho-bench-") as tmp:
        tree = os.path.join(tmp, "project", "sympy")
        shutil.copytree(sympy_dir, tree, ignore=shutil.ignore_patterns("__pycache__"))  # copy2 keeps mtimes
        files = [os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs if f.endswith(".py")]
        size = sum(os.path.getsize(f) for f in files)
        cache = os.path.join(tmp, "cache")
        env = dict(os.environ, PONCHO_WQ_CACHE=cache)
        analyze = [sys.executable, "-m", "poncho_wq", "analyze", "--quiet", "--prefix", venv, tree]

        def out(name):
            return os.path.join(tmp, name + ".json")

        cold, warm = [], []
        for i in range(args.runs):
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(timed(analyze + [out("cold%d" % i)], env)[0])
            for j in range(args.runs):
                warm.append(timed(analyze + [out("warm%d_%d" % (i, j))], env)[0])
        serial_env = dict(env, PONCHO_WQ_ANALYZE_SERIAL="1")
        full = timed(analyze[:4] + ["--no-cache"] + analyze[4:] + [out("full")], serial_env)[0]
        pipreqs = []
        for i in range(args.runs):
            pipreqs.append(timed([os.path.join(venv, "bin", "pipreqs"), "--use-local", "--force", "--savepath",
                                  out("pipreqs%d" % i)[:-5] + ".txt", tree])[0])

        # Checks: identical specs, and every cached scan equal to a fresh parse.
        texts = {name: open(out(name)).read() for name in ["full"] + ["cold%d" % i for i in range(args.runs)]
                 + ["warm%d_%d" % (i, j) for i in range(args.runs) for j in range(args.runs)]}
        reference = texts["full"]
        bad = [n for n, t in texts.items() if t != reference]
        os.environ["PONCHO_WQ_CACHE"] = cache
        sc = ScanCache()
        mismatched = [f for f in files if sc.get(os.path.abspath(f), os.stat(f)) != scan_file(os.path.abspath(f))]
        spec = json.loads(reference)
        pip_out = open(out("pipreqs0")[:-5] + ".txt").read().split()

    best_cold, best_warm, best_pipreqs = min(cold), min(warm), min(pipreqs)
    print("tree: sympy sources, {} files, {:.1f} MB".format(len(files), size / 1e6))
    print("poncho_wq cold (cache emptied): {:.3f} s   (runs: {})".format(best_cold, _fmt(cold)))
    print("poncho_wq warm (unchanged):     {:.3f} s   (runs: {})".format(best_warm, _fmt(warm)))
    print("poncho_wq full uncached serial: {:.3f} s".format(full))
    print("pipreqs --use-local:            {:.3f} s   (runs: {})".format(best_pipreqs, _fmt(pipreqs)))
    print("ratio pipreqs / poncho_wq cold: {:.1f}x (target >= 2x)".format(best_pipreqs / best_cold))
    print("ratio cold / warm:              {:.1f}x (target >= 20x)".format(best_cold / best_warm))
    print("spec: {} pinned pip entries ({}), pipreqs: {}".format(
        sum("==" in p for p in spec.get("pip", [])), ", ".join(p for p in spec.get("pip", []) if "==" in p),
        ", ".join(pip_out)))
    print("results identical (cold, warm, full AST pass): {}".format("yes" if not bad else "NO: " + ", ".join(bad)))
    print("cached per-file scans equal to fresh parses:    {}".format(
        "yes ({} files)".format(len(files)) if not mismatched else "NO: {} files".format(len(mismatched))))
    ok = not bad and not mismatched and best_pipreqs / best_cold >= 2 and best_cold / best_warm >= 20
    return 0 if ok else 1


def _fmt(xs):
    return " ".join("{:.3f}".format(x) for x in xs)


if __name__ == "__main__":
    sys.exit(main())
