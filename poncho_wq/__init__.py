"""poncho_wq: make a Python environment travel with Work Queue / TaskVine tasks.

The public API is imported here; see README.md for runnable examples. ``PonchoTask`` and ``PonchoPythonTask``
derive from the Work Queue binding in use (``ndcctools.work_queue`` or Debian's ``work_queue``, see
:mod:`poncho_wq.wq`), which is imported only when they are first used.
"""

import importlib

from .errors import ActivationError, BuildError, InputMissing, PonchoError, SpecError
from .version import __version__

# Imported on first use (PEP 562): the command-line tools import this package on every call, and most of them
# need neither packaging's parsers nor a Work Queue binding.
_LAZY = {
    "Environment": ("assemble.environment", "Environment"),
    "Spec": ("spec", "Spec"),
    "load_spec": ("spec", "load_spec"),
    "parse_spec": ("spec", "parse_spec"),
    "Delivery": ("deliver.publish", "Delivery"),
    "Distribution": ("deliver.publish", "Distribution"),
    "distribution": ("deliver.publish", "distribution"),
    "serve": ("deliver.publish", "serve"),
}

__all__ = [
    "ActivationError",
    "BuildError",
    "Delivery",
    "Distribution",
    "Environment",
    "InputMissing",
    "PonchoError",
    "PonchoPythonTask",
    "PonchoTask",
    "Spec",
    "SpecError",
    "analyze",
    "clear_caches",
    "create",
    "distribution",
    "load_spec",
    "parse_spec",
    "serve",
    "__version__",
]


def analyze(*args, **kwargs):
    """Analyze scripts into an :class:`~poncho_wq.analysis.analyzer.Analysis` (see
    :func:`poncho_wq.analysis.analyzer.analyze`); ``package_data`` defaults to what ``$PONCHO_WQ_EXCLUDE`` and
    ``$PONCHO_WQ_DATA_WARN_MB`` say, read now."""
    from .analysis.analyzer import analyze as _analyze
    from .config import settings
    from .request import PackageData

    kwargs.setdefault("package_data", PackageData.from_settings(settings()))
    return _analyze(*args, **kwargs)


def clear_caches():
    """Forget every in-process memo (analyses, builds, probes, reachability): for long-running managers after
    something changed outside the process, and for tests. On-disk caches stay; they check themselves."""
    from .memo import clear_caches as _clear

    _clear()


def create(*args, **kwargs):
    """Build (or fetch from the cache) a packed environment (see :func:`poncho_wq.engines.create`)."""
    from .engines import create as _create

    return _create(*args, **kwargs)


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module("." + module, __name__), attr)
        globals()[name] = value
        return value
    if name in ("PonchoTask", "PonchoPythonTask"):
        from . import wq
        from .task import classes_for

        task_cls, python_task_cls = classes_for(wq.load())
        return task_cls if name == "PonchoTask" else python_task_cls
    raise AttributeError("module 'poncho_wq' has no attribute {!r}".format(name))
