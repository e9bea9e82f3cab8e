"""Cold start of a task on a fresh worker, on 3 environment sizes, vs plain ``tar -xzf`` + a bytecode-warm import
(issue 14).

    python3 bench/cold_start.py [--sizes small,medium,large] [--runs 2] [--keep-tests]
    python3 bench/cold_start.py --vine [--sizes small,medium] [--runs 2]

Environments (portable engine, built once through poncho_wq into ``~/.cache/poncho_wq-bench/cold_start``,
``PONCHO_WQ_BENCH_DIR`` overrides): small = six (~12 MB tarball), medium = numpy+pandas+sympy (~75 MB), large =
numpy+pandas+scipy+sympy+matplotlib (~160 MB); each first task imports all of them (``scipy.stats`` and
``matplotlib.pyplot`` for large). ``--keep-tests`` builds with ``PONCHO_WQ_KEEP_TESTS=1`` (today's unpruned
archives) for the before/after figures.

Two measurements, because they answer different questions:

* **worker** (the cold start of a task, what a user sees): a fresh ``work_queue_worker`` per run, one task,
  submit to result. PonchoTask with the tarball vs a plain Task that gets the *same* tarball as a cached input and
  runs ``tar -xzf`` + ``python -c IMPORTS`` in a venv that has the packages with compiled bytecode (``uv pip
  install --compile-bytecode``), warmed by an import beforehand. Same transfer, same worker: the ratio is what
  poncho_wq adds (locking, checks, relocation, activation, first import from the shipped bytecode).
* **shim** (less noise: no worker, no transfer): ``poncho_package_run -e`` into a fresh root running the imports
  vs ``tar -xzf`` into a fresh directory + the warm venv import; wall and CPU (user+sys of the children, steadier
  than wall on a shared machine).
* **vine** (``--vine``, only this; sizes default to small,medium): the same cold start on TaskVine against Work
  Queue, same tarball, same imports: a fresh ``vine_worker`` and one ``poncho_wq.taskvine.PonchoVineTask``
  (TaskVine's mini task unpacks the package, then the task runs ``bin/run_in_env``, which relocates once at the
  final place) vs the **worker** measurement's PonchoTask on a fresh ``work_queue_worker``; submit to result,
  best of ``--runs``, ratio TaskVine / Work Queue. Also the mini task's own time (the worker's ``CACHE_UPDATE``
  in the manager's transaction log) and the task's (its ``wall_time`` there). The mini task's command is
  TaskVine's own (``tar xf``: gzip in tar's own process), while the Work Queue shim hands decompression to
  ``pigz`` when the worker has it; so the unpack alone can take as long as Work Queue's whole first task.

Also printed per size: files, unpacked MB, and how the plain ``tar -xzf`` CPU splits into gzip and tar; with
``--codecs``, ``tar -I pigz`` and a ``zstd -10`` archive of the same tar against ``tar -xzf`` (the shim uses gzip).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

from localworkers import local_workers  # noqa: E402
from poncho_wq import wq  # noqa: E402
from poncho_wq.shim import shim_path  # noqa: E402
from poncho_wq.tools import find_tool  # noqa: E402

SIZES = {
    "small": (["six"], "import six"),
    "medium": (["numpy", "pandas", "sympy"], "import numpy, pandas, sympy"),
    "large": (["numpy", "pandas", "scipy", "sympy", "matplotlib"],
              "import numpy, pandas, scipy.stats, sympy, matplotlib; import matplotlib.pyplot"),
}
BENCH = os.environ.get("PONCHO_WQ_BENCH_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "poncho_wq-bench")


def build(name, keep_tests):
    """The tarball (poncho_wq's cache makes a second call instant) and a bytecode venv for *name*."""
    root = os.path.join(BENCH, "cold_start")
    os.makedirs(root, exist_ok=True)
    pkgs = SIZES[name][0]
    spec = os.path.join(root, name + ".json")
    with open(spec, "w") as f:
        json.dump({"python": "{}.{}".format(*sys.version_info[:2]), "pip": pkgs}, f)
    tarball = os.path.join(root, "{}{}.tar.gz".format(name, "-keep-tests" if keep_tests else ""))
    env = dict(os.environ, PONCHO_WQ_CACHE=os.path.join(root, "cache"))
    env.pop("PONCHO_WQ_KEEP_TESTS", None)
    if keep_tests:
        env["PONCHO_WQ_KEEP_TESTS"] = "1"
    subprocess.run([sys.executable, "-m", "poncho_wq", "create", "-q", spec, tarball], env=env, check=True)
    venv = os.path.join(root, "venv-" + name)
    if not os.path.exists(os.path.join(venv, ".done")):
        shutil.rmtree(venv, ignore_errors=True)
        uv = find_tool("uv")
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, venv], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python",
                        os.path.join(venv, "bin", "python")] + pkgs, check=True)
        open(os.path.join(venv, ".done"), "w").close()
    return tarball, venv


def timed(argv, env=None):
    """(wall, children's user+sys CPU) of running *argv*."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def composition(tarball, work):
    with tarfile.open(tarball) as tar:
        infos = [m for m in tar if m.isfile()]
    plain = os.path.join(work, "plain.tar")
    with open(plain, "wb") as out:
        subprocess.run(["gzip", "-dc", tarball], stdout=out, check=True)
    _, gz = timed(["sh", "-c", 'gzip -dc "$1" >/dev/null', "-", tarball])
    d = tempfile.mkdtemp(dir=work)
    _, tar = timed(["tar", "-xf", plain, "-C", d])
    shutil.rmtree(d)
    os.unlink(plain)
    return len(infos), sum(m.size for m in infos), gz, tar


def codecs(tarball, work, runs):
    """Wall and CPU (best of *runs*) of extracting *tarball* with ``tar -xzf``, ``tar -I pigz`` and the same tar
    recompressed with ``zstd -10`` (``tar -I zstd``): what the run shim would gain by using them when a worker has
    them (it uses plain gzip today)."""
    plain = os.path.join(work, "codec.tar")
    with open(plain, "wb") as out:
        subprocess.run(["gzip", "-dc", tarball], stdout=out, check=True)
    zst = plain + ".zst"
    subprocess.run(["zstd", "-q", "-10", "-T0", plain, "-o", zst], check=True)
    os.unlink(plain)
    cases = [("tar -xzf", ["tar", "-xzf", tarball]), ("tar -I pigz", ["tar", "-I", "pigz", "-xf", tarball]),
             ("tar -I zstd", ["tar", "-I", "zstd", "-xf", zst])]
    best = {}
    for _ in range(runs):
        for name, argv in cases:
            d = tempfile.mkdtemp(dir=work)
            w, c = timed(argv + ["-C", d])
            shutil.rmtree(d)
            old = best.get(name, (w, c))
            best[name] = (min(w, old[0]), min(c, old[1]))
    size = os.path.getsize(zst)
    os.unlink(zst)
    return best, size


def shim_side(tarball, venv, code, work):
    d = tempfile.mkdtemp(dir=work)
    tar = timed(["tar", "-xzf", tarball, "-C", d])
    shutil.rmtree(d)
    venv_py = [os.path.join(venv, "bin", "python"), "-c", code]
    timed(venv_py)  # warm
    imp = timed(venv_py)
    env = dict(os.environ, PONCHO_ENV_DIR=tempfile.mkdtemp(dir=work), PATH="/usr/bin:/bin")
    ours = timed(["sh", shim_path(), "-e", tarball, "--", "python3", "-c", code], env)
    shutil.rmtree(env["PONCHO_ENV_DIR"])
    return ours, (tar[0] + imp[0], tar[1] + imp[1])


def worker_side(binding, tarball, venv, code, kinds=(True, False)):
    """Seconds from submit to result of one task on a fresh worker: PonchoTask, then the plain tar + venv task
    (*kinds*: True for the PonchoTask, False for the plain one)."""
    from poncho_wq import PonchoTask

    venv_py = os.path.join(venv, "bin", "python")
    if False in kinds:
        subprocess.run([venv_py, "-c", code], check=True)  # warm the venv's files in the page cache
    out = []
    for poncho in kinds:
        q = binding.WorkQueue(port=0)
        if poncho:
            t = PonchoTask("python3 -c '{}'".format(code), environment=tarball)
        else:
            t = binding.Task("mkdir x && tar -xzf env.tar.gz -C x && {} -c '{}'".format(venv_py, code))
            t.specify_input_file(tarball, "env.tar.gz", cache=True)
        with local_workers(binding, q.port, 1):
            start = time.perf_counter()
            q.submit(t)
            while True:
                done = q.wait(5)
                if done is not None:
                    break
            out.append(time.perf_counter() - start)
            if done.return_status != 0:
                sys.exit("task failed ({}): {}".format("PonchoTask" if poncho else "plain", done.std_output))
    return out


def vine_side(tarball, code, work):
    """(seconds from submit to result, the mini task's seconds, the task's own seconds; None if not logged) of
    one PonchoVineTask running ``python3 -c CODE`` in *tarball* on a fresh ``vine_worker``; the worker's
    directory and the manager's logs are temp dirs, removed."""
    from ndcctools import taskvine as vine
    from poncho_wq.taskvine import PonchoVineTask

    d = tempfile.mkdtemp(prefix="vine-", dir=work)
    try:
        m = vine.Manager(port=0, run_info_path=os.path.join(d, "runinfo"))
        t = PonchoVineTask(m, "python3 -c '{}'".format(code), environment=tarball, cores=1)
        with local_workers(vine, m.port, 1, name="vine_worker"):
            start = time.perf_counter()
            m.submit(t)
            while True:
                done = m.wait(5)
                if done is not None:
                    break
            took = time.perf_counter() - start
            if done.result != "success" or done.exit_code != 0:
                sys.exit("PonchoVineTask failed ({}, exit {}): {}".format(done.result, done.exit_code,
                                                                         done.std_output))
        del t, done, m  # the manager ends (and closes its logs) before they are read and removed
        return (took,) + mini_task_seconds(os.path.join(d, "runinfo"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def mini_task_seconds(runinfo):
    """(the mini task's seconds, the task's own seconds on the worker), each None if absent, from the manager's
    transaction log (TaskVine 7.17.1): the worker's ``cache-update`` of the unpacked environment is logged as
    ``<us> <pid> WORKER <worker> CACHE_UPDATE task-rnd-<id> <bytes> <microseconds> <start>`` and the task's
    ``RETRIEVED`` line carries its ``wall_time``."""
    mini = own = None
    for root, _dirs, files in os.walk(runinfo):
        if "transactions" not in files:
            continue
        with open(os.path.join(root, "transactions")) as f:
            for line in f:
                parts = line.split()
                try:
                    if len(parts) > 7 and parts[4] == "CACHE_UPDATE" and parts[5].startswith("task-"):
                        mini = int(parts[7]) / 1e6
                    elif len(parts) > 5 and parts[2] == "TASK" and parts[4] == "RETRIEVED":
                        own = json.loads(line[line.rindex(" {"):])["wall_time"][0]
                except (ValueError, KeyError, IndexError):
                    pass
    return mini, own


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help="default small,medium,large (--vine: small,medium)")
    ap.add_argument("--runs", type=int, default=2, help="runs per measurement; the best is kept")
    ap.add_argument("--keep-tests", action="store_true", help="build with PONCHO_WQ_KEEP_TESTS=1 (before pruning)")
    ap.add_argument("--no-worker", action="store_true", help="only the shim measurement")
    ap.add_argument("--vine", action="store_true", help="only TaskVine vs Work Queue, fresh worker, same tarball")
    ap.add_argument("--codecs", action="store_true", help="also time tar -I pigz and a zstd archive (if installed)")
    args = ap.parse_args()
    sizes = (args.sizes or ("small,medium" if args.vine else "small,medium,large")).split(",")
    binding = None if args.no_worker else wq.load()
    work = tempfile.mkdtemp(prefix="cold-start-bench-")
    try:
        for name in sizes:
            tarball, venv = build(name, args.keep_tests)
            code = SIZES[name][1]
            if args.vine:
                if binding is None:
                    sys.exit("--vine measures against Work Queue: drop --no-worker")
                vq, vv = [], []
                for _ in range(args.runs):  # alternated, so both see the same machine load
                    vq.append(worker_side(binding, tarball, venv, code, kinds=(True,))[0])
                    vv.append(vine_side(tarball, code, work))
                q, v = min(vq), min(r[0] for r in vv)
                notes = ["{} {:.2f} s".format(what, min(x[i] for x in vv if x[i] is not None))
                         for i, what in ((1, "mini task"), (2, "task on the worker"))
                         if any(x[i] is not None for x in vv)]
                print("{}: {:.1f} MB tarball | Work Queue PonchoTask first result {:6.2f} s | TaskVine PonchoVineTask "
                      "first result {:6.2f} s{} | ratio TaskVine/Work Queue {:.2f}x".format(
                          name, os.path.getsize(tarball) / 1e6, q, v,
                          " ({})".format(", ".join(notes)) if notes else "", v / q))
                sys.stdout.flush()
                continue
            files, size, gz, tar = composition(tarball, work)
            print("{}: {:.1f} MB tarball, {} files, {:.0f} MB unpacked; plain unpack CPU: gzip -dc {:.2f} s, "
                  "tar -x of the plain tar {:.2f} s".format(name, os.path.getsize(tarball) / 1e6, files, size / 1e6,
                                                            gz, tar))
            if args.codecs and shutil.which("pigz") and shutil.which("zstd"):
                best, zsize = codecs(tarball, work, args.runs)
                gz = best["tar -xzf"]
                print("  codecs  " + " | ".join("{} {:.2f} s wall ({:.2f}x) {:.2f} s CPU ({:.2f}x)".format(
                    name, w, w / gz[0], c, c / gz[1]) for name, (w, c) in best.items())
                    + " | zstd -10 archive {:.1f} MB ({:.2f}x)".format(zsize / 1e6, zsize / os.path.getsize(tarball)))
            shim = [shim_side(tarball, venv, code, work) for _ in range(args.runs)]
            ours = min(s[0][0] for s in shim), min(s[0][1] for s in shim)
            base = min(s[1][0] for s in shim), min(s[1][1] for s in shim)
            print("  shim    unpack+relocate+first import {:6.2f} s wall {:6.2f} s CPU | tar -xzf + warm venv import "
                  "{:6.2f} s wall {:6.2f} s CPU | ratio {:.2f}x wall {:.2f}x CPU (goal <= 1.1x)".format(
                      ours[0], ours[1], base[0], base[1], ours[0] / base[0], ours[1] / base[1]))
            if binding is not None:
                runs = [worker_side(binding, tarball, venv, code) for _ in range(args.runs)]
                p, b = min(r[0] for r in runs), min(r[1] for r in runs)
                print("  worker  PonchoTask first result {:6.2f} s | plain task tar -xzf + venv import {:6.2f} s | "
                      "ratio {:.2f}x (goal <= 1.1x)".format(p, b, p / b))
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
