"""Progress of long phases (solve, install, pip, copy, git, download, pack), for a person and for a program.

Every phase is reported as :class:`ProgressEvent` objects: ``start``, any number of ``update`` (a status text
such as uv's "Resolved 12 packages", and/or ``done``/``total`` - bytes for ``pack``), then ``end`` (with
``elapsed`` and a closing ``detail``) or ``failed``; a message outside the phases is an ``info`` event.
:class:`Progress` hands each event to :meth:`Progress.event`, which calls the optional *callback* and, unless
``quiet``, renders it:

* on a terminal (the stream is a TTY and ``TERM`` is not ``dumb``): one live line per phase, redrawn in place
  (``\\r``) five times a second with the elapsed time, the status and, for byte counts, ``12.0/48.3 MB 25%``;
  when the phase ends the line is replaced by its summary line;
* otherwise (a log file, a pipe, CI): exactly one line per phase, when it ends
  (``poncho: pack done in 2.5 s: 4199 files, 37.1 MB (pigz)``), so logs stay readable; messages outside phases
  are one line each. These lines go to the ``poncho_wq`` logger at INFO (the CLIs send it to stderr), or straight
  to stderr when the application configured no logging at all;
* with ``quiet`` nothing (``-q``); the callback still gets every event.

Python API: ``create(spec, progress=...)`` (and ``Environment.build``, ``PonchoTask`` and ``PonchoVineTask``'s
``progress=``) take ``None`` (silent), ``True`` (render as above), a callable (called with each
:class:`ProgressEvent`, nothing rendered) or a :class:`Progress` (e.g. ``Progress(callback=f)`` for both, or a
subclass overriding :meth:`Progress.event`). For ``Environment.build`` and the tasks, ``None`` means
``PONCHO_WQ_PROGRESS`` (:func:`default_progress`): a build a task starts on a terminal shows its phases.
The bars are hand-written: one ``\\r`` line needs no dependency.
"""

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import threading
import time
from typing import Callable, Optional

from .config import settings

log = logging.getLogger("poncho_wq")


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """One thing that happened in a build: see the module docstring for the kinds and their order."""

    kind: str  # "start", "update", "end", "failed" or "info"
    phase: str  # "solve", "install", "pip", "copy", "git", "download", "pack"; "" for info
    detail: str = ""  # start: what the phase does; update: the latest status; end: the summary; info: the message
    done: Optional[int] = None  # units done so far (bytes when unit == "B")
    total: Optional[int] = None  # units expected, when known
    unit: str = ""
    elapsed: float = 0.0  # seconds since the phase started


class Phase:
    """What a running phase reports through (yielded by :meth:`Progress.phase`)."""

    def __init__(self, progress, name, detail, total=None, unit=""):
        self.progress = progress
        self.name = name
        self.detail = detail
        self.total = total
        self.unit = unit
        self.done = None
        self.last_status = ""
        self.notes = []
        self.started = time.monotonic()
        self._last_update = 0.0

    @property
    def elapsed(self):
        return time.monotonic() - self.started

    def _emit(self, kind, detail):
        self.progress.event(ProgressEvent(kind, self.name, detail, self.done, self.total, self.unit, self.elapsed))

    def status(self, text):
        """A new status line for the phase (what it is doing now)."""
        self.last_status = text
        self._emit("update", text)

    def update(self, done, total=None):
        """*done* units of *total* (bytes for ``unit="B"``) are finished. Events are sent at most every
        :attr:`Progress.interval` seconds (a pack calls this for each of thousands of files)."""
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if now - self._last_update >= self.progress.interval or (self.total and done >= self.total):
            self._last_update = now
            self._emit("update", self.last_status)

    def advance(self, n):
        self.update((self.done or 0) + n)

    def note(self, text):
        """Something for the phase's closing line (what it produced, what was reused)."""
        self.notes.append(text)


class Progress:
    """Receives the build's events; renders them on *stream* (default: stderr at the time) unless *quiet*, and
    passes each one to *callback* when given. ``timings`` keeps each phase's seconds (benchmarks read it)."""

    #: seconds between redraws of the live line on a terminal
    interval = 0.2

    def __init__(self, quiet: bool = False, callback: Optional[Callable[[ProgressEvent], None]] = None,
                 stream=None, tty: Optional[bool] = None):
        self.quiet = quiet
        self.callback = callback
        self._stream = stream
        self._tty = tty
        self.timings: dict = {}
        self._lock = threading.RLock()
        self._live = None  # the Phase drawn on the terminal's live line
        self._last_draw = 0.0

    # -- what engines call ----------------------------------------------------------------------------------------

    def info(self, message, *args):
        """A message outside a phase (one line); inside a phase it becomes the phase's status."""
        text = message % args if args else message
        with self._lock:
            live = self._live
        if live is not None:
            live.status(text)
        else:
            self.event(ProgressEvent("info", "", text))

    @contextlib.contextmanager
    def phase(self, name, detail="", total=None, unit=""):
        """``with progress.phase("pack", "37 MB") as p: ... p.update(n, total)``; the phase's seconds are added
        to ``timings[name]``. An exception ends it as ``failed`` and propagates."""
        p = Phase(self, name, detail, total, unit)
        with self._lock:
            outer, self._live = self._live, p
        self.event(ProgressEvent("start", name, detail, None, total, unit, 0.0))
        ticker = self._start_ticker(p)
        try:
            yield p
        except BaseException:
            self._stop_ticker(ticker)
            self.event(ProgressEvent("failed", name, detail, p.done, p.total, unit, p.elapsed))
            raise
        finally:
            with self._lock:
                self._live = outer
            self.timings[name] = self.timings.get(name, 0.0) + p.elapsed
        self._stop_ticker(ticker)
        summary = "; ".join(x for x in [detail] + p.notes if x)
        self.event(ProgressEvent("end", name, summary, p.done, p.total, unit, p.elapsed))

    # -- what a subclass may override ------------------------------------------------------------------------------

    def event(self, ev: ProgressEvent) -> None:
        """Called for every event: calls the callback, then renders (unless quiet)."""
        if self.callback is not None:
            self.callback(ev)
        if not self.quiet:
            self.render(ev)

    def render(self, ev: ProgressEvent) -> None:
        if self.is_tty():
            self._render_tty(ev)
        elif ev.kind == "info":
            self._line("poncho: " + ev.detail)
        elif ev.kind == "end":  # (a failure is the error message's to tell, in one line)
            self._line(_summary_line(ev))

    # -- rendering ------------------------------------------------------------------------------------------------

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    def is_tty(self):
        if self._tty is not None:
            return self._tty
        try:
            return self.stream.isatty() and os.environ.get("TERM") != "dumb"
        except (AttributeError, ValueError):
            return False

    def _line(self, text):
        # Through logging when the application has any handler (the CLIs send it to stderr; a caller's own
        # logging setup decides), else straight to the stream: `progress=True` must show something either way.
        if self._stream is None and log.hasHandlers():
            log.info("%s", text)
        else:
            self._write(text + "\n")

    def _write(self, text):
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not fail the build
            pass

    def _render_tty(self, ev):
        with self._lock:
            if ev.kind in ("end", "failed", "info"):
                text = _summary_line(ev) if ev.kind != "info" else "poncho: " + ev.detail
                self._write("\r\x1b[K" + text + "\n")
                self._last_draw = 0.0
                if ev.kind == "info" and self._live is not None:
                    self._draw(self._live)
            elif self._live is not None and (ev.kind == "start"
                                             or time.monotonic() - self._last_draw >= self.interval):
                self._draw(self._live)

    def _draw(self, p):
        parts = ["poncho: {} {}".format(p.name, p.detail).rstrip()]
        if p.done is not None:
            parts.append(_amount(p.done, p.total, p.unit))
        if p.last_status:
            parts.append(p.last_status)
        parts.append("{:.1f} s".format(p.elapsed))
        text = " | ".join(parts)
        width = shutil.get_terminal_size((100, 20)).columns - 1
        if len(text) > width:  # a wrapped line cannot be redrawn in place
            text = text[:max(0, width - 3)] + "..."
        self._write("\r\x1b[K" + text)
        self._last_draw = time.monotonic()

    def _start_ticker(self, p):
        if self.quiet or not self.is_tty():
            return None
        stop = threading.Event()

        def tick():
            while not stop.wait(self.interval):
                with self._lock:
                    if self._live is p:
                        self._draw(p)

        thread = threading.Thread(target=tick, name="poncho-progress", daemon=True)
        thread.start()
        return stop, thread

    @staticmethod
    def _stop_ticker(ticker):
        if ticker:
            ticker[0].set()
            ticker[1].join()


def _amount(done, total, unit):
    if unit == "B":
        if total:
            return "{:.1f}/{:.1f} MB {:.0f}%".format(done / 1e6, total / 1e6, 100.0 * done / total if total else 0)
        return "{:.1f} MB".format(done / 1e6)
    return "{}/{}".format(done, total) if total else str(done)


def _summary_line(ev):
    verb = "done in" if ev.kind == "end" else "failed after"
    return "poncho: {} {} {:.1f} s{}".format(ev.phase, verb, ev.elapsed, ": " + ev.detail if ev.detail else "")


def as_progress(progress):
    """Accept a Progress, None/False (silent), True (render on stderr) or a callable (gets each
    :class:`ProgressEvent`, nothing rendered) and return a Progress."""
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return Progress(quiet=True, callback=progress)
    return Progress(quiet=not progress)


def default_progress():
    """What ``progress=None`` means for ``Environment.build`` and the tasks: ``PONCHO_WQ_PROGRESS`` ``on``
    (True), ``off`` (None: silent) or ``auto`` (default: a :class:`Progress` rendering on stderr when stderr is a
    terminal, else silent: a manager's log file stays as it was)."""
    mode = settings().progress
    if mode == "on":
        return True
    if mode == "auto":
        progress = Progress()
        return progress if progress.is_tty() else None
    return None
