"""Delta updates (issue 28): after adding an import or bumping one pin, what reaches the workers, and how soon?

    nice -n 10 python3 bench/delta_update.py [--workers 4] [--keep DIR] [--binding ndcctools.work_queue]
                                             [--base "numpy==1.26.4 pandas==2.2.2 scipy==1.13.1"]
                                             [--old scikit-learn==1.5.1] [--new scikit-learn==1.5.2]

Set-up (not measured): three spec environments built once into the bench's cache (portable engine, wheels from
PyPI): *base* (the ``--base`` pins + ``--old``), *add* (base + humanize: the job adds ``import humanize``),
*bump* (``--new`` instead of ``--old``); each is cut into parts once (the cut time is printed).
Then two sessions, each with fresh local workers (so nothing carries over), the same rounds in both:

* ``parts``: ``PONCHO_WQ_PARTS=1``, the environment travels as content-addressed parts;
* ``tarball``: the single ``env-<hash>.tar.gz`` (today's default).

Rounds: cold (base), unchanged (base again: the floor), code edit (job.py edited, base), add (the add environment
and ``import humanize``), bump (the bump environment). Printed per session: first result of each round, the bytes
the manager sent per worker (``put`` lines of the workers' debug logs) against the bound ``changed parts + 1% of
the environment``, first new result over that of the code-only edit, cold start and import time parts/tarball,
and worker disk after the three environments over one environment (``du -sk``, hard links counted once).
Ratios are against baselines measured in the same run; nothing is asserted (tests/bindings/test_parts_e2e.py does).
"""

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

JOB = '''\
import sys
import time

t0 = time.perf_counter()
import numpy
import pandas
import sklearn
{extra}
print("RESULT", sys.argv[1], {tag!r}, sklearn.__version__, "%.3f" % (time.perf_counter() - t0))
'''


def specs(args):
    base = args.base.split()
    return {"base": {"python": args.python, "pip": base + [args.old]},
            "add": {"python": args.python, "pip": base + [args.old, "humanize"]},
            "bump": {"python": args.python, "pip": base + [args.new]}}


def write_job(proj, tag, extra=""):
    with open(os.path.join(proj, "job.py"), "w") as f:
        f.write(JOB.format(tag=tag, extra=extra))


def sent_per_worker(workdirs):
    out = []
    for w in workdirs:
        sent = 0
        try:
            with open(os.path.join(w, "debug.log"), errors="replace") as f:
                for line in f:
                    m = re.search(r"rx(?: from manager)?: put \S+ (\d+) ", line)
                    if m:
                        sent += int(m.group(1))
        except OSError:
            pass
        out.append(sent)
    return out


def du_kb(*paths):
    """KiB of *paths* together (du counts a hard-linked file once per run)."""
    r = subprocess.run(["du", "-skc", "--"] + list(paths), capture_output=True, text=True)
    return int(r.stdout.strip().splitlines()[-1].split()[0])


def prebuild(args):
    """Build the three environments and cut them into parts (in the bench's cache); report sizes and times."""
    import poncho_wq
    from poncho_wq.archive.cache import default_cache_dir
    from poncho_wq.archive.parts import cut_parts

    report = {}
    for name, spec in specs(args).items():
        t0 = time.perf_counter()
        env = poncho_wq.Environment.from_spec(spec)
        tarball = env.build()
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        parts = cut_parts(tarball, default_cache_dir(), 4.0, env.remote_name[:-len(".tar.gz")])
        report[name] = {"tarball": tarball, "bytes": os.path.getsize(tarball), "build_s": built,
                        "cut_s": time.perf_counter() - t0, "id": env.remote_name[:-len(".tar.gz")],
                        "parts": {p.name: os.path.getsize(p.path) for p in parts},
                        "unpacked": sum(p.bytes for p in parts)}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


def inner(args):
    """The manager of one session: the rounds, with PONCHO_WQ_PARTS as the outer process set it."""
    import poncho_wq
    from poncho_wq import wq

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(q.port))
    os.replace(args.port_file + ".tmp", args.port_file)
    envs = {name: poncho_wq.Environment.from_spec(spec) for name, spec in specs(args).items()}
    proj = os.getcwd()

    def round_(env, tag):
        t0 = time.perf_counter()
        for i in range(args.tasks):
            t = poncho_wq.PonchoTask("python3 job.py {}".format(i), environment=env)
            t.specify_cores(1)
            q.submit(t)
        first, done, imports = None, 0, []
        while done < args.tasks:
            t = q.wait(5)
            if t is None:
                continue
            if t.return_status != 0 or tag not in t.std_output:
                raise SystemExit("task failed: {} {}".format(t.return_status, t.std_output[-3000:]))
            first = first or time.perf_counter() - t0
            imports.append(float(t.std_output.split()[-1]))
            done += 1
        return {"first": first, "all": time.perf_counter() - t0, "imports": sorted(imports)}

    report = {}
    before = sent_per_worker(args.workdirs)
    plan = [("cold", "base", "v0", ""), ("unchanged", "base", "v0", ""), ("code", "base", "v1", ""),
            ("add", "add", "v2", "import humanize"), ("bump", "bump", "v3", "")]
    for name, env, tag, extra in plan:
        write_job(proj, tag, extra)
        r = round_(envs[env], tag)
        after = sent_per_worker(args.workdirs)
        r["sent"] = [a - b for a, b in zip(after, before)]
        before = after
        report[name] = r
    roots = [os.path.join(w, "envs") for w in args.workdirs]
    ids = {name: e.remote_name[:-len(".tar.gz")] for name, e in envs.items()}
    report["disk"] = {"root_kb": [du_kb(r) for r in roots],
                      "one_env_kb": [du_kb(os.path.join(r, ids["base"])) for r in roots
                                     if os.path.isdir(os.path.join(r, ids["base"]))]}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


def _session(args, work, mode, helpers):
    run = tempfile.mkdtemp(prefix="run-{}-".format(mode), dir=work)
    proj = os.path.join(run, "project")
    os.makedirs(proj)
    write_job(proj, "v0")
    port_file = os.path.join(run, "port")
    workdirs = [os.path.join(run, "worker{}".format(i)) for i in range(args.workers)]
    env = dict(os.environ, PONCHO_WQ_CACHE=os.path.join(work, "cache"), PONCHO_WQ_BINDING=args.binding,
               PONCHO_WQ_PARTS="1" if mode == "parts" else "", PYTHONUNBUFFERED="1")
    out = os.path.join(run, "report.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--inner", "--port-file", port_file, "--out", out,
           "--tasks", str(args.workers)] + _spec_args(args) + [a for w in workdirs for a in ("--workdir", w)]
    with open(os.path.join(run, "manager.log"), "w") as log:
        manager = subprocess.Popen(cmd, cwd=proj, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        while not os.path.exists(port_file):
            if manager.poll() is not None:
                raise SystemExit("manager failed:\n" + open(log.name).read()[-3000:])
            time.sleep(0.2)
        time.sleep(0.1)
        port = int(open(port_file).read())
        binary = helpers.worker_binary("debian" if args.binding == "debian" else "ndcctools.work_queue")
        workers = [helpers.start_worker_process(binary, port, w, cores=1,
                                                env={"PONCHO_ENV_DIR": os.path.join(w, "envs")},
                                                extra=["--single-shot"], timeout=3600) for w in workdirs]
        try:
            rc = manager.wait()
        finally:
            for w in workers:
                helpers.stop_worker_process(w)
    if rc:
        raise SystemExit("manager failed:\n" + open(os.path.join(run, "manager.log")).read()[-3000:])
    with open(out) as f:
        return json.load(f)


def _spec_args(args):
    return ["--python", args.python, "--base", args.base, "--old", args.old, "--new", args.new]


def outer(args):
    helpers = importlib.import_module("helpers." + "".join(("wq", "util")))
    work = args.keep or tempfile.mkdtemp(prefix="poncho-delta-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, PONCHO_WQ_CACHE=os.path.join(work, "cache"), PYTHONUNBUFFERED="1")
    pre_out = os.path.join(work, "prebuild.json")
    print("set-up: building base/add/bump (cached in {}) and cutting them into parts".format(work), file=sys.stderr)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--prebuild", "--out", pre_out] + _spec_args(args),
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("prebuild failed:\n" + (r.stdout + r.stderr)[-3000:])
    with open(pre_out) as f:
        pre = json.load(f)
    sessions = {}
    for mode in ("parts", "tarball"):
        print("session: {}".format(mode), file=sys.stderr)
        sessions[mode] = _session(args, work, mode, helpers)
    mb = 1e6
    base = pre["base"]
    print("delta updates: {} + {} -> {} / + humanize; {} workers, {}".format(
        args.base, args.old, args.new, args.workers, args.binding))
    print("  environment: tarball {:.1f} MB, {:.1f} MB unpacked, {} parts; cut into parts in {:.1f} s".format(
        base["bytes"] / mb, base["unpacked"] / mb, len(base["parts"]), base["cut_s"]))
    had = set(base["parts"])
    for change, prev_had in (("add", had), ("bump", had | set(pre["add"]["parts"]))):
        new = pre[change]
        changed = sum(size for name, size in new["parts"].items() if name not in prev_had)
        bound = changed + 0.01 * new["bytes"]
        p, t = sessions["parts"], sessions["tarball"]
        ps, ts = max(p[change]["sent"]), max(t[change]["sent"])
        print("  {:<4}: sent/worker parts {:.1f} MB (bound {:.1f} MB = changed parts {:.1f} + 1% env), "
              "tarball {:.1f} MB; first result / code edit's: parts {:.2f}x, tarball {:.2f}x".format(
                  change, ps / mb, bound / mb, changed / mb, ts / mb, p[change]["first"] / p["code"]["first"],
                  t[change]["first"] / t["code"]["first"]))
    for mode in ("parts", "tarball"):
        s = sessions[mode]
        print("  {:<7} first result: cold {:.2f} s, unchanged {:.2f} s, code edit {:.2f} s, add {:.2f} s, "
              "bump {:.2f} s".format(mode, s["cold"]["first"], s["unchanged"]["first"], s["code"]["first"],
                                     s["add"]["first"], s["bump"]["first"]))
    p, t = sessions["parts"], sessions["tarball"]
    print("  cold start (first result) parts/tarball {:.2f}x ({:.2f} s vs {:.2f} s); import time (warm median) "
          "{:.2f}x".format(p["cold"]["first"] / t["cold"]["first"], p["cold"]["first"], t["cold"]["first"],
                           _median(p["unchanged"]["imports"]) / _median(t["unchanged"]["imports"])))
    for mode in ("parts", "tarball"):
        d = sessions[mode]["disk"]
        if d["one_env_kb"]:
            ratio = max(d["root_kb"]) / max(d["one_env_kb"])
            print("  disk, 3 environments / 1 ({}): {:.2f}x ({:.0f} MB vs {:.0f} MB)".format(
                mode, ratio, max(d["root_kb"]) / 1024, max(d["one_env_kb"]) / 1024))
    print("reports: {} and the sessions' report.json under it".format(pre_out))


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--binding", default="ndcctools.work_queue", choices=("ndcctools.work_queue", "debian"))
    ap.add_argument("--python", default="{}.{}".format(*sys.version_info[:2]))
    ap.add_argument("--base", default="numpy==1.26.4 pandas==2.2.2 scipy==1.13.1")
    ap.add_argument("--old", default="scikit-learn==1.5.1")
    ap.add_argument("--new", default="scikit-learn==1.5.2")
    ap.add_argument("--keep", help="work directory to reuse (the cache survives between runs)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prebuild", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port-file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--tasks", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", dest="workdirs", action="append", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.prebuild:
        prebuild(args)
    elif args.inner:
        inner(args)
    else:
        outer(args)


if __name__ == "__main__":
    main()
