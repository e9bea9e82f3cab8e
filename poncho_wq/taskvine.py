"""TaskVine adapter: the same environment declaration, on TaskVine's own execution-context protocol.

TaskVine unpacks a poncho package once per worker with a mini task
(``mkdir output && tar xf package.tar.gz -C output && output/bin/run_in_env``), moves ``output`` into the
worker cache as ``__vine_env_<id>`` and runs each task as ``__vine_env_<id>/bin/run_in_env <command>``.
Every poncho_wq tarball carries ``bin/run_in_env`` (POSIX sh), which relocates the environment lazily at its
final location (once, under a lock: upstream never runs ``conda-unpack`` on this path) and then activates it.

    from ndcctools import taskvine as vine
    from poncho_wq.taskvine import declare_environment, PonchoVineTask

    m = vine.Manager(port=0)
    env = declare_environment(m, "spec.json")          # or a tarball, an Environment, None (= analyze __main__)
    t = vine.Task("python3 job.py 7"); t.add_environment(env); m.submit(t)
    # or: m.submit(PonchoVineTask(m, "python3 job.py 7"))
"""

import os

from .environment import as_environment
from .task import check_command_argument, check_environment_argument

_declared = {}


def declare_environment(manager, environment=None, command=None):
    """Declare *environment* to a TaskVine manager as a poncho package; return the File for ``add_environment``.

    Declared once per manager and environment: many tasks share the same worker-side copy.
    """
    check_environment_argument(environment, "declare_environment")
    env = as_environment(environment, command)
    path = env.build()
    key = (id(manager), os.path.abspath(path))
    if key not in _declared:
        tarball = manager.declare_file(path, cache=True)
        _declared[key] = (manager, env, manager.declare_poncho(tarball, cache=True))
    return _declared[key][2]


def local_inputs(manager, task, environment):
    """Attach the environment's local modules to *task* under their relative names."""
    for source, arcname in environment.local_files:
        task.add_input(manager.declare_file(source, cache=True), arcname)


def PonchoVineTask(manager, command, environment=None, **kwargs):
    """A ``ndcctools.taskvine.Task`` running *command* in the environment (declared once per manager)."""
    from ndcctools import taskvine

    # The same argument checks as PonchoTask, before anything is analyzed or built.
    check_command_argument(command, "PonchoVineTask")
    check_environment_argument(environment, "PonchoVineTask")
    env = as_environment(environment, command)
    task = taskvine.Task(command, **kwargs)
    task.add_environment(declare_environment(manager, env))
    local_inputs(manager, task, env)
    task.environment = env
    return task
