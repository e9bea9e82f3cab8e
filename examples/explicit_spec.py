"""An explicit environment spec (no analysis): every task runs with exactly these packages.

    python3 examples/explicit_spec.py
"""

import sys

from localworkers import local_workers
from poncho_wq import Environment, PonchoTask, wq

SPEC = {"python": "{}.{}".format(*sys.version_info[:2]), "pip": ["humanize==4.*", "tabulate"]}
COMMAND = "python3 -c 'import humanize, tabulate; print(tabulate.tabulate([[humanize.ordinal({})]]))'"


def main():
    binding = wq.load()
    q = binding.WorkQueue(port=0)
    env = Environment.from_spec(SPEC)  # a dict, a Spec, or a path to a spec file (JSON)
    with local_workers(binding, q.port, 1):
        for i in range(3):
            q.submit(PonchoTask(COMMAND.format(i + 1), environment=env))
        failed = 0
        while not q.empty():
            t = q.wait(5)
            if t:
                print(t.std_output.strip())
                failed += t.return_status != 0
    print("environment", env.remote_name, "spec hash", env.spec.digest()[:16])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
