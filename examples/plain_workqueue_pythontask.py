"""Plain Work Queue: Work Queue's own PythonTask + specify_environment(<poncho_wq tarball>), and PonchoTask.

    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH" \
        python3 plain_workqueue_pythontask.py       # starts one local work_queue_worker itself

PythonTask.specify_environment() looks the run shim up on PATH (ndcctools.work_queue: poncho_package_run;
Debian's CCTools 8 work_queue: python_package_run) and ships that file: poncho_wq's must come first on PATH.
The environment must hold the binding's pickler: cloudpickle (ndcctools.work_queue) or dill (CCTools 8), pinned to
the manager's version.  The task runs `./poncho_package_run -e env.tar.gz --unpack-to "$WORK_QUEUE_SANDBOX"/...`;
our shim links that path to its per-worker cache: one unpack per worker.
"""

import json
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version

from poncho_wq import PonchoTask, wq
from poncho_wq.assemble.environment import Environment


def fmt(n):
    import humanize

    return humanize.intcomma(n)


def main():
    binding = wq.load()  # ndcctools.work_queue, or Debian's work_queue (PONCHO_WQ_BINDING=debian)
    pickler = wq.serializer_for(binding)
    spec = os.path.join(tempfile.mkdtemp(), "spec.json")
    with open(spec, "w") as f:
        json.dump({"python": "{}.{}.{}".format(*sys.version_info[:3]),
                   "pip": ["humanize", "{}=={}".format(pickler, version(pickler))]}, f)
    tarball = Environment.from_spec(spec).build()  # or: poncho_package_create spec.json env.tar.gz

    q = binding.WorkQueue(port=0)
    worker = subprocess.Popen(["work_queue_worker", "localhost", str(q.port), "--single-shot"])
    try:
        for i in range(4):
            t = binding.PythonTask(fmt, 10 ** 6 + i)
            t.specify_environment(tarball)
            q.submit(t)
        q.submit(PonchoTask("python3 -c 'import humanize; print(humanize.intword(10**9))'", environment=spec))
        while not q.empty():
            t = q.wait(5)
            if t:
                print(t.result, t.output)  # PythonTask: the return value; Task: stdout
    finally:
        worker.terminate()
        worker.wait()


if __name__ == "__main__":
    main()
