"""Jobs as projects: a Work Queue manager running a setup.py job directory (examples/project_job/) on local workers.

    python3 examples/project_tasks.py [--tasks 4]

``Environment.from_project`` builds the project as a wheel once (cached): its ``install_requires`` go to the base
environment, its modules to the code layer, and its ``data_files`` (``job.yaml``, ``model.json``) to each task's
sandbox, where ``run.py`` reads them. The same directory as one tarball for other tools::

    poncho_package_create --from-project examples/project_job env.tar.gz
"""

import argparse
import os
import sys

from localworkers import local_workers
from poncho_wq import Environment, PonchoTask, wq

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=4)
    args = ap.parse_args()

    env = Environment.from_project(os.path.join(HERE, "project_job"))
    binding = wq.load()
    q = binding.WorkQueue(port=0)
    with local_workers(binding, q.port, 2):
        for i in range(args.tasks):
            q.submit(PonchoTask("python3 -m run {}".format(i), environment=env))
        failed = 0
        while not q.empty():
            t = q.wait(5)
            if t is None:
                continue
            if t.return_status == 0:
                print(t.std_output.strip())
            else:
                failed += 1
                reason = t.shim_error.message if t.shim_error else t.std_output.strip()[-300:]
                print("task {} failed ({}): {}".format(t.id, t.return_status, reason))
    print("tasks: {} done, {} failed".format(args.tasks - failed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
