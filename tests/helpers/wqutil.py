"""Real Work Queue managers and workers on localhost for the end-to-end tests (no mocks).

The manager runs as its own process (a script under tests/e2e/), as users run it: PonchoTask analyzes the
submitting script (``__main__``), so it must be a real script. Workers are real ``work_queue_worker`` processes
with a scrubbed environment (``PATH=/usr/bin:/bin``): their ``python3`` is Debian's, which lacks the packages the
jobs import, so only the shipped environment can make the jobs work.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(os.path.dirname(HERE), "e2e")
BINDINGS = ("debian", "ndcctools.work_queue")
WORKER_PATH = "/usr/bin:/bin"


def cctools_bin(name):
    """A command of the source-built CCTools (dev/test.sh puts its bin first on PATH), never Debian's."""
    scripts = sysconfig.get_path("scripts")
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(d, name)
        if d and not d.startswith(("/usr/bin", "/bin", scripts)) and os.access(cand, os.X_OK):
            return cand
    raise AssertionError("no source-built {} on PATH: run the tests with `bash dev/test.sh`".format(name))


def worker_binary(binding):
    """Debian's worker speaks to Debian's binding; the source-built one to ndcctools.work_queue."""
    return "/usr/bin/work_queue_worker" if binding == "debian" else cctools_bin("work_queue_worker")


def manager_env(binding, cache_dir, extra=None):
    env = dict(os.environ)
    env["PONCHO_WQ_BINDING"] = binding
    env["PONCHO_WQ_CACHE"] = cache_dir
    env["PONCHO_WQ_SOURCE"] = "index"  # tests/assemble/test_environment.py covers the automatic choice
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def count_unpacks(workdir):
    """Extractions the run shim recorded (lines of every unpack.log) below a worker's directory."""
    n = 0
    for log in glob.glob(os.path.join(workdir, "**", "unpack.log"), recursive=True):
        with open(log) as f:
            n += sum(1 for line in f if line.strip())
    return n


def count_debug_lines(workdir, needle):
    """Lines of a worker's debug.log containing *needle* (a string, or a compiled regex to search)."""
    match = needle.search if hasattr(needle, "search") else (lambda line: needle in line)
    with open(os.path.join(workdir, "debug.log"), errors="replace") as f:
        return sum(1 for line in f if match(line))


def start_worker_process(binary, port, workdir, cores=2, extra=(), env=None, workspace=None, timeout=120):
    """Start a real worker (work_queue_worker or vine_worker) for localhost:*port* in its own session, with the
    workers' scrubbed environment (PATH=/usr/bin:/bin: Debian's python3, without the jobs' packages) plus *env*,
    HOME in *workdir* and its debug log at ``<workdir>/debug.log``. *workspace* (default: *workdir*) is its -s
    directory; *timeout* its idle timeout (-t). Returns the Popen, with ``.workdir`` set."""
    os.makedirs(workdir, exist_ok=True)
    wenv = {"PATH": WORKER_PATH, "HOME": workdir, "LANG": "C.UTF-8"}
    wenv.update(env or {})
    workspace = workspace or workdir
    os.makedirs(workspace, exist_ok=True)  # work_queue_worker -s needs an existing directory
    cmd = [binary, "localhost", str(port), "-s", workspace, "--cores", str(cores), "-t", str(timeout),
           "-d", "all", "-o", os.path.join(workdir, "debug.log")] + list(extra)
    p = subprocess.Popen(cmd, env=wenv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    p.workdir = workdir
    return p


def stop_worker_process(p):
    """Kill a worker started by :func:`start_worker_process` with its whole session (the worker's task
    processes too), unless it has already exited; reap it."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


def fixed_disk_args(path):
    """Worker options reporting a fixed disk (1 GB, or half the free space of *path*'s file system if less): a
    worker that reports the file system's free space measures it again while it runs, and a task that asked for
    no disk (given all the worker reported) no longer fits once other work on the machine has written meanwhile:
    the worker forsakes it, the manager sends it again, and after a few times gives up ("unable to complete after
    specified number of retries": a Parsl run on a loaded CI machine)."""
    path = os.path.abspath(str(path))
    while not os.path.exists(path):
        path = os.path.dirname(path)  # not made yet: its file system is its nearest parent's
    free_mb = shutil.disk_usage(path).free >> 20
    return ["--disk", str(min(1024, free_mb // 2))]


class Cluster:
    """A manager script process plus local workers, cleaned up by :meth:`close`."""

    def __init__(self, tmp_path, binding):
        self.tmp = str(tmp_path)
        self.binding = binding
        self.workers = []
        self.manager = None
        self.port_file = os.path.join(self.tmp, "port")

    def start_manager(self, script, args, cwd, cache_dir, env=None, python=None):
        """Start tests/e2e/*script* with *python* (default: this interpreter, e.g. a venv's for editables)."""
        self.out_file = os.path.join(self.tmp, "results.json")
        self.manager_log = open(os.path.join(self.tmp, "manager.log"), "w")
        cmd = [str(python or sys.executable), os.path.join(E2E, script), "--port-file", self.port_file,
               "--out", self.out_file]
        self.manager = subprocess.Popen(cmd + list(args), cwd=cwd, env=manager_env(self.binding, cache_dir, env),
                                        stdout=self.manager_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 600
        while not os.path.exists(self.port_file):
            if self.manager.poll() is not None:
                raise AssertionError("manager exited early:\n" + self.log())
            if time.time() > deadline:
                raise AssertionError("manager did not start:\n" + self.log())
            time.sleep(0.1)
        time.sleep(0.1)
        with open(self.port_file) as f:
            self.port = int(f.read().strip())

    def start_worker(self, cores=2, keep_envs=False, fixed_disk=True):
        """Start a worker. Its tasks unpack into the worker's own workspace (WORKER_TMPDIR), which the worker
        deletes when it exits; ``keep_envs`` points PONCHO_ENV_DIR at a per-worker dir that outlives it, so a
        test can count the unpacks afterwards.

        ``fixed_disk`` (the default): the worker reports a fixed disk (``--disk``, 1 GB or half the free space if
        less) instead of the file system's free space, which it measures again after every synchronous fetch: a
        task that asks for no disk is given the whole disk the worker reported, and once other work on the machine
        has written to that file system meanwhile, the task no longer fits and the worker "forsakes" it (Debian's
        worker, seen with an 8 s fetch on a shared machine, and in the Parsl tests); the manager sends it again and
        the worker fetches again. ``fixed_disk=False`` keeps the measured free space, for a test about the
        worker's real disk (none of the Cluster tests is, today: the shim's budget is its own setting, not the
        worker's disk)."""
        workdir = os.path.join(self.tmp, "worker{}".format(len(self.workers)))
        env = {"PONCHO_ENV_DIR": os.path.join(workdir, "envs")} if keep_envs else None
        extra = ["--single-shot"]
        if fixed_disk:
            extra += fixed_disk_args(self.tmp)
        p = start_worker_process(worker_binary(self.binding), self.port, workdir, cores, extra, env)
        self.workers.append(p)
        return p

    def kill_worker(self, p):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()

    def wait_results(self, timeout=900):
        try:
            self.manager.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("manager did not finish in {} s:\n{}".format(timeout, self.log()))
        assert self.manager.returncode == 0, "manager failed:\n" + self.log()
        with open(self.out_file) as f:
            return json.load(f)

    def log(self):
        self.manager_log.flush()
        with open(self.manager_log.name) as f:
            return f.read()[-6000:]

    def unpack_counts(self):
        """Per worker: how many times the shim extracted an environment (lines of its unpack.log)."""
        return [count_unpacks(p.workdir) for p in self.workers]

    def tasks_run(self):
        """Per worker: how many task processes it started (from its debug log)."""
        return [count_debug_lines(p.workdir, "started process") for p in self.workers]

    def transfers(self):
        """Per worker: {cache name: how many times the manager sent it} (``put`` lines of its debug log). Both
        workers name a cached input ``<prefix>-<source file's basename>`` (Debian's: ``file-0-<md5 of path>-``)."""
        pattern = re.compile(r"rx(?: from manager)?: put (\S+) ")
        out = []
        for p in self.workers:
            counts = {}
            with open(os.path.join(p.workdir, "debug.log"), errors="replace") as f:
                for line in f:
                    m = pattern.search(line)
                    if m:
                        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
            out.append(counts)
        return out

    def unpacked_ids(self):
        """Per worker: the ids (env-<hex>, code-<hex>) in its unpack logs, in order."""
        out = []
        for p in self.workers:
            ids = []
            for log in glob.glob(os.path.join(p.workdir, "**", "unpack.log"), recursive=True):
                with open(log) as f:
                    ids += [line.split()[2] for line in f if len(line.split()) >= 3]
            out.append(ids)
        return out

    def env_transfers(self, remote_name):
        """Per worker: how many times the manager sent the file *remote_name* (``put`` lines of its debug log)."""
        pattern = re.compile(r"rx(?: from manager)?: put \S*-" + re.escape(remote_name) + r" ")
        return [count_debug_lines(p.workdir, pattern) for p in self.workers]

    def close(self):
        for p in self.workers:
            stop_worker_process(p)
        if self.manager and self.manager.poll() is None:
            self.manager.kill()
            self.manager.wait()
        if getattr(self, "manager_log", None):
            self.manager_log.close()


def which_debian_python():
    return shutil.which("python3", path="/usr/bin:/bin")
