"""Where the run shim lives: ``poncho_package_run``, a POSIX sh script shipped as package data.

The file itself (not a wrapper) is what travels to workers, so nothing on the worker needs poncho_wq or Python.
"""

import os

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def shim_path():
    """Absolute path of the ``poncho_package_run`` sh script inside the installed package."""
    return os.path.join(_DATA, "poncho_package_run")


def run_in_env_path():
    """Absolute path of ``run_in_env``, the activator every poncho_wq tarball carries as ``bin/run_in_env``."""
    return os.path.join(_DATA, "run_in_env")


def run_in_layer_path():
    """Absolute path of ``run_in_layer``, the ``bin/run_in_env`` of TaskVine code layers (:mod:`poncho_wq.layers`)."""
    return os.path.join(_DATA, "run_in_layer")
