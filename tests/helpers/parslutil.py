"""Helpers of the interop tests (tests/bindings/test_parsl.py, tests/bindings/test_interop_*.py) and the Parsl driver
script.

Parsl is imported in its own process (it forks submit/collector processes and keeps global DFK state), with the
PATH the caller chose: both executors look up ``python_package_*`` / ``poncho_package_*`` with ``shutil.which`` when
their module is imported, so the interpreter's scripts directory must come first (the source-built CCTools also
install upstream copies of those commands, and pyenv's bash shims would be copied to workers as is).

Workers are started by the test, not by Parsl (the provider launches no blocks): the test controls their
environment (``PATH=/usr/bin:/bin``, so only the shipped environment provides ``humanize``) and their workspaces.
Drivers write their results, then keep the manager up until the test creates a "hold" file, so that the test
can count the unpacks in the workspaces of still-connected workers (Work Queue workers delete theirs on exit).
"""

import contextlib
import json
import os
import socket
import subprocess
import sysconfig
import time

from helpers.wqutil import (count_debug_lines, count_unpacks, fixed_disk_args, start_worker_process,
                            stop_worker_process)

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = sysconfig.get_path("scripts")


def client_env(**extra):
    """Environment for a manager-side process: our scripts first on PATH (before the source-built CCTools' own
    poncho_package_* / python_package_* and pyenv's bash shims), unbuffered output."""
    env = dict(os.environ)
    env["PATH"] = SCRIPTS + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Workers:
    """Local worker processes with the workers' scrubbed environment (PATH=/usr/bin:/bin: Debian's python3,
    without humanize), each in its own directory; killed by :meth:`close`."""

    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.procs = []

    def start(self, binary, port, n=2, cores=2, extra=(), env=None):
        for _ in range(n):
            workdir = os.path.join(self.tmp, "worker{}".format(len(self.procs)))
            # a fixed disk: see wqutil.fixed_disk_args (Debian's worker forsook queued Parsl tasks under load)
            self.procs.append(start_worker_process(binary, port, workdir, cores,
                                                   list(extra) + fixed_disk_args(self.tmp), env,
                                                   workspace=os.path.join(workdir, "ws"), timeout=180))
        return self

    def unpack_counts(self):
        """Per worker: extractions recorded by the shim in the unpack.log files under its directory."""
        return [count_unpacks(p.workdir) for p in self.procs]

    def debug_lines(self, needle):
        """Per worker: lines of its debug log containing *needle*."""
        return [count_debug_lines(p.workdir, needle) for p in self.procs]

    def close(self):
        for p in self.procs:
            stop_worker_process(p)


@contextlib.contextmanager
def stopping(workers, proc):
    """Whatever happens in the block, stop the workers, then the driver process if it still runs."""
    try:
        yield
    finally:
        workers.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_until(proc, out, timeout, log, workers=None):
    """Wait for *proc* to write *out* (or exit); return the JSON in *out*."""
    deadline = time.time() + timeout
    while not os.path.exists(out):
        if proc.poll() is not None and not os.path.exists(out):
            raise AssertionError("driver exited ({}) without results:\n{}".format(proc.returncode, tail(log)))
        if workers is not None and all(p.poll() is not None for p in workers.procs):
            raise AssertionError("all workers exited ({}):\n{}".format(
                [p.returncode for p in workers.procs], tail(log)))
        if time.time() > deadline:
            raise AssertionError("no results after {} s:\n{}".format(timeout, tail(log)))
        time.sleep(0.1)
    with open(out) as f:
        return json.load(f)


def finish(proc, hold, log, timeout=120):
    """Release a driver waiting on *hold* and check it exits 0."""
    with open(hold, "w"):
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("driver did not exit:\n" + tail(log))
    assert proc.returncode == 0, tail(log)


def tail(path, n=8000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return "(no log)"


def pip_pin(name):
    """name==version of a distribution installed for this interpreter (the manager side)."""
    from importlib.metadata import version

    return "{}=={}".format(name, version(name))


# ------------------------------------------------------------------------------------------- the Parsl driver
# Written to a file and run as a script (``python parsl_driver.py wq|vine ...``), as users run Parsl: the app must
# be a module-level function of ``__main__`` whose first source line is the decorator (Parsl ships an app as its
# source text minus that line), and Parsl keeps process-wide state that must not leak into pytest.

PARSL_DRIVER = '''\
import argparse
import json
import os
import sys
import time

from parsl import python_app


@python_app
def fmt(n):
    import sys

    import humanize

    return humanize.intcomma(n), sys.executable


def config(kind, port, run_dir, pack):
    from parsl.config import Config
    from parsl.providers import LocalProvider

    if kind == "wq":
        from parsl.executors import WorkQueueExecutor

        ex = WorkQueueExecutor(label="wq", port=port, address="localhost", pack=True, shared_fs=False,
                               provider=LocalProvider(init_blocks=0, min_blocks=0, max_blocks=0))
    else:
        from parsl.executors.taskvine import TaskVineExecutor, TaskVineManagerConfig

        mc = TaskVineManagerConfig(port=port, address="localhost", shared_fs=False, app_pack=pack == "app",
                                   env_pack=None if pack == "app" else pack)
        ex = TaskVineExecutor(label="vine", manager_config=mc, worker_launch_method="manual")
        # Parsl's app_pack path (_prepare_package) reads self.extra_pkgs and self.cached_envs, which
        # TaskVineExecutor.__init__ never sets (AttributeError on the first app): set them as WorkQueueExecutor does.
        if not hasattr(ex, "extra_pkgs"):
            ex.extra_pkgs = mc.extra_pkgs or []
        if not hasattr(ex, "cached_envs"):
            ex.cached_envs = {}
    return Config(executors=[ex], run_dir=run_dir, strategy="none")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("wq", "vine"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pack", default="app", help="vine: app (app_pack=True) or a tarball (env_pack=)")
    ap.add_argument("--hold", help="after writing --out, keep the manager up until this file exists (max 120 s)")
    args = ap.parse_args()

    import parsl

    parsl.load(config(args.kind, args.port, args.run_dir, args.pack))
    try:
        futures = [fmt(1000 * 1000 + i) for i in range(args.tasks)]
        results = [f.result(timeout=300) for f in futures]
        with open(args.out + ".tmp", "w") as f:
            json.dump({"parsl": parsl.__version__, "results": results}, f)
        os.replace(args.out + ".tmp", args.out)
        deadline = time.time() + 120
        while args.hold and not os.path.exists(args.hold) and time.time() < deadline:
            time.sleep(0.1)
    finally:
        parsl.dfk().cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
