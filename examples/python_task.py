"""PonchoPythonTask: run a Python function on a worker, in an environment analyzed from this file.

    python3 examples/python_task.py

The function imports humanize; the serializer Work Queue's function wrapper needs on the worker (dill or
cloudpickle, depending on the binding) is added to the environment automatically.
"""

import sys

from localworkers import local_workers
from poncho_wq import PonchoPythonTask, wq


def describe(n):
    import humanize

    return "{} -> {}".format(n, humanize.intword(n))


def main():
    binding = wq.load()
    q = binding.WorkQueue(port=0)
    with local_workers(binding, q.port, 1):
        for n in (10 ** 6, 10 ** 9, 3 * 10 ** 12):
            q.submit(PonchoPythonTask(describe, n))
        failed = 0
        while not q.empty():
            t = q.wait(5)
            if t:
                print(t.output if t.return_status == 0 else "failed: {}".format(t.shim_error or t.std_output))
                failed += t.return_status != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
