"""The edit-run loop (issue 13): after a one-line edit of an editable package, how soon do new results arrive?

    python3 bench/edit_run_loop.py [--packages "numpy pandas scipy scikit-learn matplotlib"] [--modules 200]
                                   [--workers 4] [--tasks 8] [--binding ndcctools.work_queue] [--keep DIR]

Set-up (not measured): a venv over this interpreter with the packages (from PyPI) and an editable package of
``--modules`` generated modules (``pip install -e``), a job script importing all of them; local workers with the
scrubbed environment of the tests (PATH=/usr/bin:/bin); round 0 warms them (base sent and unpacked).
Then one line of one module is edited and the same tasks are submitted again, two ways, in one run:

* layered (what PonchoTask does): the base is reused, only the new code layer ``code-<hash>.tar.gz`` travels;
* whole rebuild (today's alternative when the editable is inside the environment, e.g. upstream poncho or a
  single tarball with ``--from-current-env``): a new single tarball with the edited package built without the
  cache (``poncho_wq.create(..., use_cache=False)``, spec + ``pkg @ file://dir``) and attached to the tasks.

Measured per way: (a) seconds from the edit to all tasks submitted (manager prep) and to the first new result,
(b) bytes the manager sent per worker after the edit (``put`` lines of the workers' debug logs), (c) unpacks per
worker after the edit (the shim's unpack.log). Printed with the ratios; nothing is asserted (tests do that).
"""

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

JOB = '''\
import sys
{imports}
import benchpkg

print("RESULT", sys.argv[1], benchpkg.version())
'''
IMPORT_NAMES = {"scikit-learn": "sklearn", "matplotlib": "matplotlib.pyplot"}


def _run(argv, **kw):
    r = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    if r.returncode:
        raise SystemExit("failed: {}\n{}".format(" ".join(map(str, argv)), (r.stdout + r.stderr)[-3000:]))
    return r


def make_project(work, n_modules, packages):
    pkg = os.path.join(work, "benchpkg")
    src = os.path.join(pkg, "benchpkg")
    os.makedirs(src)
    with open(os.path.join(pkg, "pyproject.toml"), "w") as f:
        f.write('[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
                '[project]\nname = "benchpkg"\nversion = "0.1"\n\n[tool.setuptools]\npackages = ["benchpkg"]\n')
    lines = []
    for i in range(n_modules):
        with open(os.path.join(src, "mod_{:03d}.py".format(i)), "w") as f:
            f.write('"""Generated module {i}."""\n\nVALUE = {i}\n\n\ndef f{i}(x):\n    return x + VALUE\n'
                    .format(i=i))
        lines.append("from . import mod_{:03d}".format(i))
    with open(os.path.join(src, "__init__.py"), "w") as f:
        f.write("\n".join(lines) + "\n\n\ndef version():\n    return mod_{:03d}.VERSION\n".format(n_modules // 2))
    with open(os.path.join(src, "mod_{:03d}.py".format(n_modules // 2)), "a") as f:
        f.write("\nVERSION = 'v0'\n")
    proj = os.path.join(work, "project")
    os.makedirs(proj)
    imports = "\n".join("import " + IMPORT_NAMES.get(p, p.replace("-", "_")) for p in packages)
    with open(os.path.join(proj, "job.py"), "w") as f:
        f.write(JOB.format(imports=imports))
    return pkg, proj


def edit(pkg, n_modules, version):
    path = os.path.join(pkg, "benchpkg", "mod_{:03d}.py".format(n_modules // 2))
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(re.sub(r"VERSION = '[^']*'", "VERSION = {!r}".format(version), text))


def worker_stats(workdirs):
    """Per worker: (bytes put by the manager, list of unpacked ids) so far."""
    out = []
    for w in workdirs:
        sent = 0
        with open(os.path.join(w, "debug.log"), errors="replace") as f:
            for line in f:
                m = re.search(r"rx(?: from manager)?: put \S+ (\d+) ", line)
                if m:
                    sent += int(m.group(1))
        ids = []
        log = os.path.join(w, "envs", "unpack.log")
        if os.path.exists(log):
            with open(log) as f:
                ids = [line.split()[2] for line in f if line.strip()]
        out.append((sent, ids))
    return out


def inner(args):
    """The manager (run with the venv's python): round 0, then the edit measured both ways."""
    import poncho_wq
    from poncho_wq import wq
    from poncho_wq.spec import parse_spec

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(q.port))
    os.replace(args.port_file + ".tmp", args.port_file)
    cmd = "python3 job.py {i}"

    def round_(make_task, expect):
        t0 = time.perf_counter()
        for i in range(args.tasks):
            q.submit(make_task(cmd.format(i=i)))
        submitted = time.perf_counter() - t0
        first, done = None, 0
        while done < args.tasks:
            t = q.wait(5)
            if t is None:
                continue
            if t.return_status != 0 or expect not in t.std_output:
                raise SystemExit("task failed or ran old code: {} {}".format(t.return_status, t.std_output[-2000:]))
            first = first or time.perf_counter() - t0
            done += 1
        return submitted, first, time.perf_counter() - t0

    report = {}
    t0 = time.perf_counter()
    round_(lambda c: poncho_wq.PonchoTask(c), "v0")
    report["round0_seconds"] = time.perf_counter() - t0
    base = poncho_wq.PonchoTask(cmd.format(i=0)).environment
    report["base_bytes"] = os.path.getsize(base.build())
    # The floor: the same tasks again with nothing changed (warm workers; the job's own imports dominate).
    sub, first, total = round_(lambda c: poncho_wq.PonchoTask(c), "v0")
    report["unchanged"] = {"prep": sub, "first": first, "all": total}
    before = worker_stats(args.workdirs)

    # layered: the edit, then the same tasks (prep includes analysis, code layer hashing and packing)
    edit(args.pkg, args.modules, "v1")
    sub, first, total = round_(lambda c: poncho_wq.PonchoTask(c), "v1")
    after = worker_stats(args.workdirs)
    layer = poncho_wq.PonchoTask(cmd.format(i=0)).code_layer
    report["layered"] = {"prep": sub, "first": first, "all": total,
                         "code_layer_bytes": os.path.getsize(layer.build()),
                         "sent_per_worker": [a[0] - b[0] for a, b in zip(after, before)],
                         "unpacks_per_worker": [len(a[1]) - len(b[1]) for a, b in zip(after, before)],
                         "base_unpacks_per_worker": [a[1].count(base.remote_name[:-7]) for a in after]}

    # whole rebuild: edit, new single tarball without the cache, attached to the same tasks
    edit(args.pkg, args.modules, "v2")
    before = after
    t0 = time.perf_counter()
    data = base.spec.to_dict()
    data["pip"] = list(data.get("pip", [])) + ["benchpkg @ file://" + args.pkg]
    out = os.path.join(args.scratch, "whole", "env-whole-v2.tar.gz")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    poncho_wq.create(parse_spec(data), out, use_cache=False)
    built = time.perf_counter() - t0
    from poncho_wq.shim import shim_path

    def whole_task(c):
        # Today's way with a single tarball: the package is inside it; the shim and the script ride along.
        t = binding.Task("./poncho_package_run -e {} -- {}".format(os.path.basename(out), c))
        t.specify_input_file(out, os.path.basename(out), cache=True)
        t.specify_input_file(shim_path(), "poncho_package_run", cache=True)
        t.specify_input_file("job.py", "job.py", cache=True)
        return t

    sub, first, total = round_(whole_task, "v2")
    after = worker_stats(args.workdirs)
    report["whole"] = {"build": built, "prep": built + sub, "first": built + first, "all": built + total,
                       "tarball_bytes": os.path.getsize(out),
                       "sent_per_worker": [a[0] - b[0] for a, b in zip(after, before)],
                       "unpacks_per_worker": [len(a[1]) - len(b[1]) for a, b in zip(after, before)]}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


def outer(args):
    # By a computed name: PonchoTask analyzes this script as the submitting one (__main__), and a literal import
    # of the tests' helper would be listed as a package to install.
    helpers = importlib.import_module("".join(("wq", "util")))
    start_worker_process, stop_worker_process = helpers.start_worker_process, helpers.stop_worker_process
    worker_binary = helpers.worker_binary

    work = args.keep or tempfile.mkdtemp(prefix="poncho-edit-run-")
    os.makedirs(work, exist_ok=True)
    packages = args.packages.split()
    venv = os.path.join(work, "venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        print("set-up: venv with {} (from PyPI)".format(" ".join(packages)), file=sys.stderr)
        _run([sys.executable, "-m", "venv", "--system-site-packages", venv])
        installer = ["uv", "pip", "install", "-q", "--python", py] if shutil.which("uv") else \
            [py, "-m", "pip", "install", "-q"]
        _run(installer + packages + ["wheel", "setuptools"])
    pkg = os.path.join(work, "benchpkg")
    if os.path.exists(pkg):
        shutil.rmtree(pkg)
        shutil.rmtree(os.path.join(work, "project"))
    pkg, proj = make_project(work, args.modules, packages)
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", pkg])
    cache = os.path.join(work, "cache")
    run = tempfile.mkdtemp(prefix="run-", dir=work)
    port_file = os.path.join(run, "port")
    workdirs = [os.path.join(run, "worker{}".format(i)) for i in range(args.workers)]
    env = dict(os.environ, PONCHO_WQ_CACHE=cache, PONCHO_WQ_BINDING=args.binding, PONCHO_WQ_SOURCE="index",
               PYTHONUNBUFFERED="1")
    out = os.path.join(run, "report.json")
    cmd = [py, os.path.abspath(__file__), "--inner", "--port-file", port_file, "--out", out, "--pkg", pkg,
           "--modules", str(args.modules), "--tasks", str(args.tasks), "--scratch", run,
           "--binding", args.binding] + [a for w in workdirs for a in ("--workdir", w)]
    print("set-up: building the base (once; cached in {}) and running round 0".format(cache), file=sys.stderr)
    with open(os.path.join(run, "manager.log"), "w") as log:
        manager = subprocess.Popen(cmd, cwd=proj, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        while not os.path.exists(port_file):
            if manager.poll() is not None:
                raise SystemExit("manager failed:\n" + open(log.name).read()[-3000:])
            time.sleep(0.2)
        time.sleep(0.1)
        port = int(open(port_file).read())
        binary = worker_binary("debian" if args.binding == "debian" else "ndcctools.work_queue")
        workers = [start_worker_process(binary, port, w, cores=1, env={"PONCHO_ENV_DIR": os.path.join(w, "envs")},
                                        extra=["--single-shot"], timeout=3600) for w in workdirs]
        try:
            rc = manager.wait()
        finally:
            for w in workers:
                stop_worker_process(w)
    if rc:
        raise SystemExit("manager failed:\n" + open(os.path.join(run, "manager.log")).read()[-3000:])
    with open(out) as f:
        r = json.load(f)
    lay, whole = r["layered"], r["whole"]
    mb = 1e6
    print("edit-run loop: {} modules in an editable package, base {:.1f} MB ({}), {} workers, {} tasks, {}".format(
        args.modules, r["base_bytes"] / mb, " ".join(packages), args.workers, args.tasks, args.binding))
    print("                                  layered        whole rebuild   ratio")
    print("  prep (edit -> all submitted)  {:8.3f} s     {:8.1f} s      {:.0f}x".format(
        lay["prep"], whole["prep"], whole["prep"] / lay["prep"]))
    print("  edit -> first new result      {:8.3f} s     {:8.1f} s      {:.0f}x".format(
        lay["first"], whole["first"], whole["first"] / lay["first"]))
    print("  edit -> all results           {:8.3f} s     {:8.1f} s      {:.0f}x".format(
        lay["all"], whole["all"], whole["all"] / lay["all"]))
    ls, ws = max(lay["sent_per_worker"]), max(whole["sent_per_worker"])
    print("  bytes sent per worker (max)   {:8.3f} MB    {:8.1f} MB     {:.0f}x   (code layer {:.3f} MB = {:.3f}% "
          "of the base)".format(ls / mb, ws / mb, ws / max(ls, 1), lay["code_layer_bytes"] / mb,
                                100.0 * lay["code_layer_bytes"] / r["base_bytes"]))
    print("  unpacks per worker            {}    {}   (base unpacks per worker, whole session: {})".format(
        lay["unpacks_per_worker"], whole["unpacks_per_worker"], lay["base_unpacks_per_worker"]))
    floor = r["unchanged"]
    print("  unchanged code (the floor)    prep {:.3f} s, first result {:.3f} s, all {:.3f} s: the job itself".format(
        floor["prep"], floor["first"], floor["all"]))
    print("  first new result above floor  {:8.3f} s     {:8.1f} s      {:.0f}x".format(
        lay["first"] - floor["first"], whole["first"] - floor["first"],
        (whole["first"] - floor["first"]) / max(lay["first"] - floor["first"], 1e-3)))
    print("  round 0 (cold, not compared)  {:.1f} s; whole rebuild itself {:.1f} s".format(
        r["round0_seconds"], whole["build"]))
    print("report: {}".format(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packages", default="numpy pandas scipy scikit-learn matplotlib")
    ap.add_argument("--modules", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--binding", default="ndcctools.work_queue", choices=("ndcctools.work_queue", "debian"))
    ap.add_argument("--keep", help="work directory to reuse (venv and cache survive between runs)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port-file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--pkg", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", dest="workdirs", action="append", help=argparse.SUPPRESS)
    args = ap.parse_args()
    (inner if args.inner else outer)(args)


if __name__ == "__main__":
    main()
