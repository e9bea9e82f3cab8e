"""Start local workers for the examples, and always stop them (a context manager).

Workers get a scrubbed environment (PATH=/usr/bin:/bin): their python3 is the system's, which lacks the
packages the examples' jobs import, so only the shipped environment makes the jobs work.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile


def worker_binary(module, name="work_queue_worker"):
    """The worker that speaks *module*'s protocol: a source build keeps it in its own bin/, Debian in /usr/bin."""
    root = os.path.dirname(module.__file__)
    for _ in range(6):
        cand = os.path.join(root, "bin", name)
        if os.access(cand, os.X_OK):
            return cand
        root = os.path.dirname(root)
    found = shutil.which(name)
    if not found:
        sys.exit("{} not found: run `bash dev/demo.sh`, which installs it".format(name))
    return found


def count_unpacks(directory):
    """How many times the run shim made an environment (or a code layer) ready below *directory*: the lines of its
    unpack.log (``<epoch> <pid> <id>``), except those of parts (``part-<hash>``): with ``PONCHO_WQ_PARTS=1`` an
    environment is assembled from parts, each unpacked once per worker and shared by environments, and its own
    line is the assembly's."""
    n = 0
    for root, _dirs, files in os.walk(directory):
        if "unpack.log" in files:
            with open(os.path.join(root, "unpack.log")) as f:
                n += sum(1 for line in f if line.strip() and not line.split()[-1].startswith("part-"))
    return n


@contextlib.contextmanager
def local_workers(module, port, count=2, name="work_queue_worker", env=None):
    """Run *count* workers against localhost:*port*; yields their scratch dir (where they unpack).

    *env* adds to (or overrides) the workers' scrubbed environment."""
    workdir = tempfile.mkdtemp(prefix="poncho-example-")
    procs = []
    try:
        for i in range(count):
            wdir = os.path.join(workdir, "worker{}".format(i))
            os.makedirs(wdir)
            procs.append(subprocess.Popen(
                [worker_binary(module, name), "localhost", str(port), "-s", wdir, "--single-shot", "-t", "60"],
                env=dict({"PATH": "/usr/bin:/bin", "HOME": wdir, "LANG": "C.UTF-8"}, **(env or {})),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
        yield workdir
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(workdir, ignore_errors=True)
