"""One small compatibility layer over the Work Queue Python bindings.

Two bindings exist in the wild and poncho_wq supports both:

* ``ndcctools.work_queue``: current CCTools (conda-forge's ``ndcctools``, or a source build);
* ``work_queue``: Debian's ``python3-workqueue`` (CCTools 8 API). Debian installs it in
  ``/usr/lib/python3/dist-packages``, which only Debian's own ``/usr/bin/python3`` searches; a pyenv or venv
  interpreter of the same minor version can load it, so as a last resort we import it from there.

Both keep the ``specify_*`` task methods that poncho_wq uses. A Task subclass must derive from the binding
whose ``WorkQueue`` will submit it (their SWIG pointer types differ), hence :func:`load`, which picks one
binding per process: ``PONCHO_WQ_BINDING`` chooses explicitly: ``ndcctools.work_queue``, ``work_queue`` (whatever
``import work_queue`` gives: current CCTools also install a top-level ``work_queue`` alias of ndcctools), or
``debian`` (Debian's module from its dist-packages, even when such an alias shadows it).
"""

import atexit
import importlib
import os
import sys
import threading
import types

from .config import BINDINGS, settings
from .errors import PonchoError

DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def _import_debian():
    """Import Debian's work_queue from its dist-packages dir without leaving that dir on sys.path."""
    loaded = sys.modules.get("work_queue")
    if loaded is not None and os.path.dirname(getattr(loaded, "__file__", "") or "") == DEBIAN_DIST_PACKAGES:
        return loaded
    if not os.path.exists(os.path.join(DEBIAN_DIST_PACKAGES, "work_queue.py")):
        raise ImportError("no work_queue.py in " + DEBIAN_DIST_PACKAGES)
    if loaded is not None:
        raise ImportError("another work_queue module is already imported from " + str(loaded.__file__))
    sys.path.insert(0, DEBIAN_DIST_PACKAGES)
    try:
        return importlib.import_module("work_queue")
    finally:
        sys.path.remove(DEBIAN_DIST_PACKAGES)


def _import(name):
    if name == "debian":
        return _import_debian()
    if name == "work_queue":
        try:
            return importlib.import_module("work_queue")
        except ImportError:
            return _import_debian()
    return importlib.import_module(name)


_quiet_exit_modules: set = set()
_quiet_exit_lock = threading.Lock()


def quiet_at_exit(*classes):
    """Let the ``__del__`` of *classes* (and the methods it calls) run after interpreter shutdown has begun.

    Why: at exit Python wipes module globals (sets them to None) before it frees the objects still referenced
    from ``__main__``: a queue and its last task, a few tasks in a list. Debian's binding then printed one
    ``Exception ignored in ... __del__ ... TypeError: 'NoneType' object is not callable`` per object (plain Tasks as
    well as ours: 9 tracebacks for 8 tasks). At exit, before that wipe, the methods of *classes* (and of the classes
    they derive from) are re-bound to a copy of their module's globals, which the wipe does not touch, so their
    ``__del__`` frees the C objects quietly. Nothing changes while the program runs.

    The modules of the binding's own package that those globals name (TaskVine's ``manager.py`` calls
    ``cvine.vine_delete``, which calls ``_cvine.vine_delete``) are copied too (:func:`_copied_globals`): their
    dicts are wiped as well. Without that a TaskVine manager freed during the shutdown (any script that defines a
    function keeps its globals, the manager among them, until then) failed in ``__del__``, silently (ndcctools
    catches the TypeError), so it never released its workers: ``vine_worker`` then sleeps 5 s before it looks for
    the next manager (``disconnect_manager`` in ``vine_worker.c``, 7.17.1), a second workflow's first wait."""
    with _quiet_exit_lock:
        first = not _quiet_exit_modules
        for cls in classes:
            for klass in cls.__mro__:
                if klass is not object:
                    _quiet_exit_modules.add(klass)
    if first:
        atexit.register(_rebind_to_copied_globals)


def _rebound(fn, copy):
    new = types.FunctionType(fn.__code__, copy, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__, new.__qualname__ = fn.__kwdefaults__, fn.__qualname__
    return new


def _family(name):
    """The package family of a module name: its top-level package without SWIG's leading underscore
    (``ndcctools.taskvine.cvine`` and ``ndcctools.taskvine._cvine``: ``ndcctools``; ``_work_queue``: ``work_queue``)."""
    return (name or "").split(".")[0].lstrip("_")


def _copied_globals(g, copies):
    """A copy of the module globals *g* whose own functions (SWIG's module-level wrappers such as
    ``work_queue_task_delete``) also read the copy, and whose modules of *g*'s own package family (``cvine``,
    ``_cvine``) are copies made the same way (:func:`quiet_at_exit`)."""
    if id(g) not in copies:
        copy = copies[id(g)] = dict(g)
        family = _family(g.get("__name__"))
        for key, value in copy.items():
            if isinstance(value, types.FunctionType) and value.__globals__ is g:
                copy[key] = _rebound(value, copy)
            elif isinstance(value, types.ModuleType) and family and _family(value.__name__) == family:
                clone = types.ModuleType(value.__name__)
                vars(clone).update(_copied_globals(vars(value), copies))
                copy[key] = clone
    return copies[id(g)]


def _rebind_to_copied_globals():
    copies: dict = {}
    with _quiet_exit_lock:
        classes = list(_quiet_exit_modules)
    for klass in classes:
        for attr, fn in list(vars(klass).items()):
            if isinstance(fn, types.FunctionType):
                try:
                    setattr(klass, attr, _rebound(fn, _copied_globals(fn.__globals__, copies)))
                except (AttributeError, TypeError):  # a built-in or frozen class: leave it
                    pass


def load(name=None):
    """Return the Work Queue binding module to use (see module docstring for the choice); its objects are freed
    quietly at interpreter exit (:func:`quiet_at_exit`)."""
    module = _load(name)
    quiet_at_exit(*(getattr(module, n) for n in ("WorkQueue", "Task", "PythonTask", "Factory")
                    if isinstance(getattr(module, n, None), type)))
    return module


def _load(name=None):
    name = name or settings().binding
    if name:
        if name not in BINDINGS:
            raise PonchoError("PONCHO_WQ_BINDING={!r} is not valid; expected one of {}".format(name, ", ".join(BINDINGS)))
        try:
            return _import(name)
        except ImportError as e:
            raise PonchoError("cannot import the Work Queue binding {}: {}".format(name, e))
    errors = []
    for candidate in BINDINGS:
        try:
            return _import(candidate)
        except ImportError as e:
            errors.append("{}: {}".format(candidate, e))
    raise PonchoError(
        "no Work Queue Python binding found ({}); install conda's ndcctools or Debian's python3-workqueue".format(
            "; ".join(errors)
        )
    )


def serializer_for(binding):
    """The pickler a binding's PythonTask uses on the worker: dill (CCTools 8) or cloudpickle (current)."""
    source = getattr(binding, "__file__", "") or ""
    try:
        with open(source, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    return "cloudpickle" if "import cloudpickle" in text else "dill"
