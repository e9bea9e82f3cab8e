"""Where the worker scripts live, and what their failures look like to the manager.

The run shim ``poncho_package_run`` is a POSIX sh script shipped as package data: the file itself (not a wrapper)
is what travels to workers, so nothing on the worker needs poncho_wq or Python. When the shim (or ``run_in_env``,
or the relocation it runs) cannot provide the environment, it exits 1-4 with a line ``<tool>: <why>``;
:func:`shim_error_from` is the one reader of those lines, for both bindings' task classes and the waiting manager.
"""

import collections
import functools
import os
import re

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


#: An environment that could not be used on the worker: the shim's exit code (1-4) and its last message.
ShimError = collections.namedtuple("ShimError", "exit_code message")

#: Which tools' lines count: Work Queue tasks run the shim; TaskVine tasks run bin/run_in_env (and the relocation
#: it starts) inside the environment TaskVine unpacked, or the shim in url mode.
SHIM = ("poncho_package_run",)
RUN_IN_ENV = ("run_in_env", "poncho_wq relocate", "poncho_package_run")


def shim_error_from(exit_code, output, tools=SHIM):
    """A :class:`ShimError` when *output* shows that one of *tools* failed with *exit_code* (1-4) and said why,
    else None: a failing command is not mistaken for a broken environment."""
    if exit_code not in (1, 2, 3, 4) or not output:
        return None
    lines = _failure_line(tuple(tools)).findall(output)
    return ShimError(exit_code, lines[-1]) if lines else None


@functools.lru_cache(maxsize=None)
def _failure_line(tools):
    """The pattern of a failure line of one of *tools* (compiled once per tool set: read for every finished task)."""
    return re.compile(r"^(?:{}): (.*)$".format("|".join(re.escape(t) for t in tools)), re.M)


def shim_path():
    """Absolute path of the ``poncho_package_run`` sh script inside the installed package."""
    return os.path.join(_DATA, "poncho_package_run")


def run_in_env_path():
    """Absolute path of ``run_in_env``, the activator every poncho_wq tarball carries as ``bin/run_in_env``."""
    return os.path.join(_DATA, "run_in_env")


def run_in_layer_path():
    """Absolute path of ``run_in_layer``, the ``bin/run_in_env`` of TaskVine code layers (:mod:`poncho_wq.assemble.layers`)."""
    return os.path.join(_DATA, "run_in_layer")
