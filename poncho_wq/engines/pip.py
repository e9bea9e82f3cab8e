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

With a build target (:mod:`poncho_wq.target`, e.g. ``manylinux_2_28_x86_64``) only wheels for that platform are
taken: uv gets ``--python-platform x86_64-manylinux_2_28`` and ``--only-binary :all:``. pip takes platform options
only with ``--target DIR``, which is no install into an interpreter: it resolves as if nothing were installed (a
conda spec's numpy was installed again over conda's files, which conda-pack then refuses), and it leaves a wheel's
``.data`` files (``share/``, headers) inside site-packages with RECORD paths pointing elsewhere. So pip runs twice:
``pip download`` with one ``--platform`` per manylinux tag the target can run plus ``--only-binary=:all:`` into a
temporary directory, then an ordinary ``pip install --no-index --find-links`` of that directory (no other index
or find-links from the environment, so nothing else can be chosen), which sees what is installed and lays files
out as usual. pip installs here only what runs here, so the tags stop at this machine's glibc when the target's is
newer (wheels for an older glibc run on newer workers). Why only wheels: an sdist would be compiled here, against
this machine's glibc, which is exactly what the target is meant to avoid. A package without a wheel for the target
fails the build with the installer's message plus what to do.
"""

import dataclasses
import glob
import hashlib
import logging
import os
import platform
import subprocess
import sys
import tempfile

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..config import settings
from ..credentials import mask
from ..errors import BuildError
from ..progress import as_progress
from ..target import UV_MACHINES, parse_target
from ..tools import check_interrupted, find_tool, start_tool, tail
from .netcheck import index_url

log = logging.getLogger(__name__)

def _has_pip(python_exe):
    r = subprocess.run([python_exe, "-c", "import pip"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def target_options(tool, target):
    """The installer options that select wheels for *target* (a :class:`poncho_wq.target.Target`): uv's for its
    install, pip's for its ``download`` step (see the module docstring)."""
    if target is None:
        return []
    if tool == "uv":
        return ["--python-platform", target.uv_platform(), "--only-binary", ":all:"]
    out = ["--only-binary=:all:"]
    for tag in _installable_here(target).pip_platforms():
        out += ["--platform", tag]
    return out


def _installable_here(target):
    """*target* with its glibc lowered to this machine's when it is newer: pip's install step refuses wheels this
    machine cannot run."""
    libc, version = platform.libc_ver()
    here = tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) if libc == "glibc" else ()
    if len(here) == 2 and here < target.glibc:
        return dataclasses.replace(target, glibc=here)
    return target


def installer_command(python_exe, use_uv=None, target=None):
    """The argument list (without requirements) that installs into *python_exe*, for *target* (a
    :class:`poncho_wq.target.Target` or None: this machine); also names the tool used."""
    if target is not None and not target.uv_serves:
        # uv's --python-platform names manylinux tags for x86_64 and aarch64 (glibc 2.17+) only; pip takes any tag.
        if use_uv:
            raise BuildError("uv cannot select wheels for {} (its --python-platform knows manylinux for {} from "
                             "glibc 2.17 only): leave uv out, pip is used then".format(
                                 target.tag, " and ".join(UV_MACHINES)))
        use_uv = False
    uv = find_tool("uv") if use_uv is not False else None
    if use_uv and not uv:
        raise BuildError("uv was requested but is not installed: pip install uv")
    if uv:
        return "uv", [uv, "pip", "install", "--python", python_exe, "--system", "--break-system-packages",
                      "--no-progress"] + target_options("uv", target)
    common = ["install", "--disable-pip-version-check", "--no-warn-script-location", "--no-input",
              "--break-system-packages"]
    if _has_pip(python_exe):
        return "pip", [python_exe, "-m", "pip"] + common
    return "pip", [sys.executable, "-m", "pip", "--python", python_exe] + common


def pip_install(python_exe, requirements, progress=None, *, use_uv=None, target=None):
    """Install PEP 508 *requirements* into the interpreter *python_exe* (a "pip" progress phase), only wheels
    for *target* (a target name or :class:`poncho_wq.target.Target`) when one is given.

    Raises BuildError (exit code 3) carrying the installer's own stderr (which names the requirement that could
    not be found or built) when the installation fails. An empty list does nothing.
    """
    requirements = list(requirements)
    if not requirements:
        return
    progress = as_progress(progress)
    if target is not None:
        target = parse_target(target)
    tool, cmd = installer_command(python_exe, use_uv, target)
    env = _installer_env()  # only the spec decides what is installed: no user/venv state may leak into the prefix
    with progress.phase("pip", "{} requirement(s) with {}".format(len(requirements), tool)) as phase:
        what = "{} could not install {}".format(tool, " ".join(requirements))
        if target is not None:
            what += (" for the target {} (only wheels for it are taken: a package without such a wheel needs "
                     "another version, a lower target, or the conda engine with the package from conda-forge)"
                     .format(target.tag))
        if target is not None and tool == "pip":
            output = _pip_for_target(cmd, requirements, target, what, env, phase)
        else:
            output = _run_watched(cmd + ["--"] + requirements if tool == "uv" else cmd + requirements, what, env,
                                  phase)
        summary = [line.strip() for line in output.splitlines()
                   if line.startswith(("Installed ", "Successfully installed "))]
        if summary:
            phase.note(summary[-1] if len(summary[-1]) <= 80 else summary[-1][:77] + "...")
    log.debug("%s output:\n%s", tool, output)


def _pip_for_target(cmd, requirements, target, what, env, phase):
    """pip's two steps for a target (see the module docstring): download the target's wheels, install from them
    alone. *cmd* is the ``pip install`` command of :func:`installer_command`."""
    pip = cmd[:cmd.index("install")]
    with tempfile.TemporaryDirectory(prefix="poncho-wheels-") as wheels:
        _run_watched(pip + ["download", "--disable-pip-version-check", "--no-input", "--dest", wheels]
                     + target_options("pip", target) + requirements, what, env, phase)
        local = {k: v for k, v in env.items()
                 if k not in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")}
        return _run_watched(cmd + ["--no-index", "--find-links", wheels] + requirements, what, local, phase)


def _run_watched(cmd, what, env, phase):
    """Run the installer like :func:`poncho_wq.tools.run_tool` (stdin closed, killed with us, BuildError with the
    end of its output), but read its output line by line as it comes, each line becoming the phase's status:
    on a terminal the person watching sees "Resolved 48 packages", "Prepared 12 packages", "Installed ..."
    instead of a frozen line. Both streams are merged (pip reports on stdout, uv on stderr; the error is at the
    end either way)."""
    log.debug("running %s", cmd)
    proc = start_tool(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                      text=True, errors="replace")
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.strip():
                phase.status(line.strip())
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    output = "".join(lines)
    check_interrupted(proc.returncode)
    if proc.returncode != 0:
        raise BuildError("{} (exit code {}):\n{}".format(what, proc.returncode, tail(output)))
    return output


def install_exact(python_exe, requirements, progress=None, *, constraints=(), target=None):
    """Install *requirements* the installed files could not serve (the locked engine, :mod:`.locked`) into
    *python_exe*; return ``{canonical name: {"kind": "index", "wheel": file name, "sha256": hex}}`` for the exact
    pins.

    Exact pins (``name==version``) are downloaded as wheels first (``pip download --no-deps --only-binary=:all:``,
    nothing but that version can come back) and installed from those files with ``--no-deps``: their hashes are
    then known, and nothing else is resolved. Other requirements (names the caller allowed although nothing
    provides them here) are resolved by the installer with the lock's pins as constraints (*constraints*), so
    a dependency they pull cannot replace a version of the lock silently: the installer fails instead. Downloads
    wait at most ``$PONCHO_WQ_HTTP_TIMEOUT`` seconds for the index per attempt.
    """
    progress = as_progress(progress)
    exact, other = [], []
    for text in requirements:
        req = Requirement(text)
        specs = list(req.specifier)
        (exact if len(specs) == 1 and specs[0].operator == "==" and not req.url else other).append(text)
    sources = {}
    timeout = "{:g}".format(settings().http_timeout)
    with tempfile.TemporaryDirectory(prefix="poncho-lock-wheels-") as wheels:
        if exact:
            url, _why = index_url()
            what = ("{}: the installed copies cannot be shipped (installed without a RECORD listing their files) "
                    "and the package index ({}) did not provide these exact versions; reinstall them here with pip "
                    "or uv (which write a RECORD), or build with source='index'".format(
                        ", ".join(exact), mask(url) if url else "none configured"))
            if target is not None:
                target = parse_target(target)
            cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--no-deps",
                   "--only-binary=:all:", "--timeout", timeout, "--retries", "1", "--dest", wheels]
            cmd += target_options("pip", target)[1:] if target is not None else []
            with progress.phase("download", "{} wheel(s) of the lock from the index".format(len(exact))) as phase:
                _run_watched(cmd + exact, what, _installer_env(), phase)
            files = sorted(glob.glob(os.path.join(wheels, "*.whl")))
            for path in files:
                name = os.path.basename(path).split("-")[0]
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                sources[canonicalize_name(name)] = {"kind": "index", "wheel": os.path.basename(path),
                                                    "sha256": h.hexdigest()}
            tool, cmd = installer_command(python_exe, target=target)
            with progress.phase("pip", "{} wheel(s) with {}".format(len(files), tool)) as phase:
                _run_watched(cmd + ["--no-deps", "--no-index"] + files, "{} could not install {}".format(
                    tool, " ".join(os.path.basename(f) for f in files)), _installer_env(), phase)
        if other:
            path = os.path.join(wheels, "constraints.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write("".join(c + "\n" for c in constraints))
            tool, cmd = installer_command(python_exe, target=target)
            with progress.phase("pip", "{} requirement(s) the lock leaves to the index, with {}".format(
                    len(other), tool)) as phase:
                _run_watched(cmd + ["-c", path] + (["--"] if tool == "uv" else []) + other,
                             "{} could not install {} (the lock's versions are constraints)".format(
                                 tool, " ".join(other)), _installer_env(), phase)
    return sources


def _installer_env():
    """The environment installers run in: nothing of the user's pip or venv state may redirect the install."""
    env = dict(os.environ)
    for var in ("PIP_REQUIRE_VIRTUALENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "VIRTUAL_ENV",
                "UV_SYSTEM_PYTHON", "PYTHONHOME", "PYTHONPATH", "PYTHONUSERBASE"):
        env.pop(var, None)
    env["PIP_NO_INPUT"] = "1"
    return env
