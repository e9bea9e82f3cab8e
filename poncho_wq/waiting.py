"""Why a manager waits: one line on the ``poncho_wq`` logger instead of a silent wait.

A manager whose tasks wait while no worker is connected waits for ever and nothing says so (issue 25). Once a
queue (Work Queue's ``WorkQueue`` of either binding, or TaskVine's ``Manager``) has been given a poncho_wq task,
its ``wait`` methods watch two things between slices of the wait:

* tasks waiting and no worker connected for ``PONCHO_WQ_NO_WORKER_NOTICE`` seconds (default 30): one warning with
  the queue's port and the worker command for the binding in use (``work_queue_worker HOST PORT`` or ``vine_worker
  HOST PORT``; the full path when the binding's own worker is not the one on PATH). Said once; again only after
  a worker has connected and all have left;
* a task that comes back because a worker could not fetch its environment (``url`` distribution,
  :mod:`poncho_wq.deliver.fetch`): one warning per failure (the file, the URL and the cause) naming the worker; the task
  itself still says it through ``shim_error``.

The lines are warnings on the ``poncho_wq`` logger: with no logging configured Python prints them on stderr (its
last-resort handler), and the usual configuration silences them (``logging.getLogger("poncho_wq").setLevel(
logging.ERROR)``).

Why wrapped ``wait`` methods and not a watcher thread: the SWIG bindings hold the GIL inside ``wait`` (measured on
Debian's ``work_queue``, ``ndcctools.work_queue`` and ``ndcctools.taskvine``: a Python thread ticking every 10 ms
ticked once during a 3 s ``wait(3)`` with a task waiting and no worker), so a thread would not run while the
user's loop blocks. The wrappers are installed on the queue's class when the first poncho_wq task is submitted
(Work Queue: a wrapped ``submit``; TaskVine: the task's ``submit_finalize``), and act only on queues that got one.
A long or endless ``wait`` is cut into slices that end when the notice is due (the queue's own timeout is whole
seconds); the caller sees the same result and the same total timeout.
"""

import functools
import inspect
import logging
import math
import os
import shutil
import socket
import threading
import time

from .config import settings
from .shim import RUN_IN_ENV, shim_error_from

log = logging.getLogger("poncho_wq")

#: The wait methods of the bindings and the position of their ``timeout`` argument (after self).
WAIT_METHODS = {"wait": 0, "wait_for_tag": 1, "wait_for_task_id": 1, "wait_for_taskid": 1}
_ATTR = "_poncho_wq_watch"
_lock = threading.Lock()


class Watch:
    """What one queue's wait methods remember: since when no worker has been connected with tasks waiting, and
    what was already said."""

    def __init__(self, program, delay):
        self.program = program
        self.delay = delay
        self.since = None  # monotonic time first seen with tasks waiting and no worker
        self.said = False
        self.busy = False  # inside a wrapped wait (the bindings' wait calls their wait_for_tag)
        self.fetch_said: set = set()

    def check(self, queue):
        """Seconds until the no-worker notice is due, or None when there is nothing to watch now (a worker is
        connected, no task waits, the notice was given or is off). Gives the notice when it is due."""
        if not self.delay:
            return None
        try:
            workers = queue.stats.workers_connected
            empty = queue.empty()
        except Exception:  # never break the caller's wait over a notice
            return None
        if workers or empty:
            self.since = None
            if workers:
                self.said = False  # a worker came: should all leave later, that is worth saying again
            return None
        if self.said:
            return None
        now = time.monotonic()
        if self.since is None:
            self.since = now
        left = self.since + self.delay - now
        if left > 0:
            return left
        self.said = True
        log.warning("%s", no_worker_message(queue, self.program, self.delay))
        return None

    def returned(self, task):
        """Say once when *task* came back because its environment could not be fetched."""
        message = _fetch_failure(task)
        if message and message not in self.fetch_said:
            self.fetch_said.add(message)
            host = getattr(task, "hostname", None) or "?"
            log.warning("poncho_wq: task %s could not get its environment on worker %s: %s", _task_id(task), host,
                        message)

    def wait(self, queue, call, timeout):
        """``call(timeout)`` (the original wait), cut into slices that end when the notice is due."""
        forever = timeout == "wait_forever" or (isinstance(timeout, (int, float)) and timeout < 0)
        if not forever and not (isinstance(timeout, (int, float)) and timeout > 0):
            return self._returned(call(timeout))  # 0 (a poll), or a value the binding judges itself
        end = None if forever else time.monotonic() + timeout
        sliced = False  # once a slice ran, what is left of a timed wait is what the clock says
        while True:
            due = self.check(queue)
            left = None if end is None else end - time.monotonic()
            rest = timeout
            if sliced and left is not None:
                if left < 0.5:
                    return None  # the caller's timeout is used up (the slices are whole seconds)
                rest = max(1, int(round(left)))
            if due is None or (left is not None and due >= left):
                task = call(rest)  # nothing to say before this wait ends
                if task is None and left is not None:
                    self.check(queue)  # a notice due by now is said when the wait returns
                return self._returned(task)
            seconds = max(1, int(math.ceil(due)))
            if left is not None:
                seconds = max(1, min(seconds, int(left)))
            sliced = True
            task = call(seconds)
            if task is not None:
                return self._returned(task)

    def _returned(self, task):
        if task is not None:
            try:
                self.returned(task)
            except Exception:  # a notice must never lose the caller its task
                pass
        return task


def _task_id(task):
    for name in ("id", "taskid"):
        value = getattr(task, name, None)
        if isinstance(value, int):
            return value
    return "?"


def _fetch_failure(task):
    """The fetch failure message of a poncho_wq task that came back failed, else None."""
    if not hasattr(type(task), "shim_error"):
        return None
    if hasattr(task, "return_status"):  # Work Queue
        err = task.shim_error
    else:  # TaskVine: the module function, not the property (which also undeclares the environment)
        err = shim_error_from(task.exit_code, task.std_output, RUN_IN_ENV)
    if err is None:
        return None
    if err.message.startswith(("could not fetch ", "the worker could not put in place ")):
        return "{} (exit {})".format(err.message, err.exit_code)
    return None


def no_worker_message(queue, program, delay):
    """The notice: how many tasks wait, the port, and the command that starts a worker for this queue."""
    port = getattr(queue, "port", None)
    try:
        waiting = queue.stats.tasks_waiting
    except Exception:
        waiting = None
    tasks = "{} task{}".format(waiting, "" if waiting == 1 else "s") if waiting else "tasks"
    host = socket.gethostname() or "localhost"
    return ("poncho_wq: {} waiting and no worker connected for {:g} s; the manager listens on port {}: start "
            "workers with `{} {} {}` (on this machine: `{} localhost {}`)".format(
                tasks, delay, port, program, host, port, program, port))


def worker_program(binding_module, name):
    """The worker command for a binding: *name* (``work_queue_worker``, ``vine_worker``), or its full path when
    the binding's own CCTools (``<prefix>/bin`` above its module) has one and it is not the one on PATH (Debian's
    worker speaks to Debian's binding, a conda or source build's to its own)."""
    here = os.path.dirname(os.path.abspath(getattr(binding_module, "__file__", "") or "."))
    for _ in range(6):
        candidate = os.path.join(here, "bin", name)
        if os.access(candidate, os.X_OK):
            found = shutil.which(name)
            if found and os.path.realpath(found) == os.path.realpath(candidate):
                return name
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return name


def watch(queue, program):
    """Make *queue*'s wait methods watch it (idempotent; called when a poncho_wq task is submitted to it)."""
    if _ATTR in getattr(queue, "__dict__", {}):
        return
    try:
        delay = settings().no_worker_notice
    except Exception as e:  # a bad value must not fail a submit: say it and keep the default
        log.warning("poncho_wq: %s", e)
        delay = 30.0
    install(type(queue))
    queue.__dict__[_ATTR] = Watch(program, delay)


def install(cls):
    """Wrap the wait methods of *cls* (where each is defined in its MRO), once."""
    with _lock:
        for name, index in WAIT_METHODS.items():
            for klass in cls.__mro__:
                fn = vars(klass).get(name)
                if fn is None:
                    continue
                if not getattr(fn, "_poncho_wq_wrapped", False):
                    setattr(klass, name, _wrapped(fn, index))
                break


def _wrapped(fn, index):
    try:
        default = inspect.signature(fn).parameters["timeout"].default
    except (KeyError, TypeError, ValueError):
        default = inspect.Parameter.empty

    @functools.wraps(fn)
    def wait(self, *args, **kwargs):
        state = getattr(self, "__dict__", {}).get(_ATTR)
        if state is None or state.busy:
            return fn(self, *args, **kwargs)
        if len(args) > index:
            timeout = args[index]
        else:
            timeout = kwargs.get("timeout", default)
        if timeout is inspect.Parameter.empty:
            return fn(self, *args, **kwargs)

        def call(seconds):
            if len(args) > index:
                return fn(self, *args[:index], seconds, *args[index + 1:], **kwargs)
            return fn(self, *args, **dict(kwargs, timeout=seconds))

        state.busy = True
        try:
            return state.wait(self, call, timeout)
        finally:
            state.busy = False

    wait._poncho_wq_wrapped = True
    return wait


def install_submit(cls, task_classes, program):
    """Wrap *cls*'s ``submit`` (Work Queue's, whose Task has no hook of its own at submit time) so that a queue
    given one of *task_classes* is watched (:func:`watch`)."""
    with _lock:
        fn = vars(cls).get("submit")
        if fn is None or getattr(fn, "_poncho_wq_wrapped", False):
            return

        @functools.wraps(fn)
        def submit(self, task, *args, **kwargs):
            result = fn(self, task, *args, **kwargs)
            if isinstance(task, task_classes):
                watch(self, program)
            return result

        submit._poncho_wq_wrapped = True
        setattr(cls, "submit", submit)
