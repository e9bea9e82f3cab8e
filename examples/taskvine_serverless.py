"""TaskVine serverless (a library of functions + FunctionCalls) in a poncho_wq environment.

    python3 taskvine_serverless.py          # starts one local vine_worker itself

create_library analyzes this script (humanize), adds what TaskVine's library runtime imports on the worker
(cloudpickle, threadpoolctl, packaging, and this manager's own ndcctools, which is not on PyPI), builds the
environment once (cached) and declares it once; the worker needs no Python packages of its own.
"""

import os
import shutil
import signal
import subprocess
import tempfile

from ndcctools import taskvine as vine

from poncho_wq.taskvine import FunctionCall, create_library


def describe(n):
    import humanize

    return humanize.intword(n)


def main():
    m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(prefix="vine-run-info-"))  # logs, not the cwd
    lib = create_library(m, "humanizer", describe)         # analyzed environment + TaskVine's runtime
    m.install_library(lib)
    # The worker sees only /usr/bin:/bin: the shipped environment is what makes the calls work.
    # Its HOME and workspace: removed at the end (a killed worker leaves its workspace, environments unpacked).
    home = tempfile.mkdtemp(prefix="vine-worker-")
    worker = subprocess.Popen([shutil.which("vine_worker"), "localhost", str(m.port), "--single-shot",
                               "--workspace", home],
                              env={"PATH": "/usr/bin:/bin", "HOME": home}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for n in (10 ** 6, 3 * 10 ** 9, 42 * 10 ** 12):
            m.submit(FunctionCall("humanizer", "describe", n))
        while not m.empty():
            t = m.wait(5)
            if t:
                # A library that cannot start comes back as failed calls whose output says why.
                print(t.result, t.output)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
