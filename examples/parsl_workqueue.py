"""Parsl's WorkQueueExecutor with pack=True, on poncho_wq (no change to Parsl):

    pip install -e . parsl                 # in a checkout; and CCTools: ndcctools.work_queue + work_queue_worker
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH" python3 parsl_workqueue.py

Parsl finds python_package_analyze/create/run with shutil.which when it imports the executor, so poncho_wq's
must come first on PATH (a pyenv shim or an upstream copy earlier on PATH would be used instead).  For each app
Parsl runs `python_package_analyze exec_parsl_function.py - spec.yaml` (app source on stdin; the spec pins the
app's imports and parsl itself), `python_package_create spec.yaml pack-<hash>.tar.gz`, and every task runs
`./python_package_run -e pack-<hash>.tar.gz python3 exec_parsl_function.py ...` on the worker: our shim unpacks
the tarball once per worker (WORKER_TMPDIR/poncho-envs), later tasks start at once.
"""

import tempfile

import parsl
from parsl import python_app
from parsl.config import Config
from parsl.executors import WorkQueueExecutor
from parsl.providers import LocalProvider


# Parsl ships an app as its source minus the first line: the decorator must be that line.
@python_app
def fmt(n):
    import humanize  # installed here, not needed on the workers: it travels in the environment

    return humanize.intcomma(n)


def main():
    run_dir = tempfile.mkdtemp(prefix="parsl-runinfo-")       # Parsl's logs, not the current directory
    config = Config(run_dir=run_dir, executors=[WorkQueueExecutor(
        port=0, address="localhost", pack=True,               # port=0: any free port; pack=True: one env per app
        provider=LocalProvider(init_blocks=1, max_blocks=1),  # Parsl starts one local work_queue_worker
    )])
    with parsl.load(config):
        print([f.result() for f in [fmt(10 ** 6 + i) for i in range(8)]])


if __name__ == "__main__":
    main()
