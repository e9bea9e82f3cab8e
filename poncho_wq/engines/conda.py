"""The conda engine: fill a prefix with a spec's conda packages, then its pip requirements.

Which installer: ``$PONCHO_CONDA_EXE`` when set (a command name or path such as ``micromamba``, or ``rattler`` to
force the embedded one); else the first of ``micromamba``, ``mamba``, ``conda`` on PATH; else the embedded solver
and installer of py-rattler, so a manager needs no conda installation at all. All of them give a prefix with
``conda-meta/*.json`` records, which is what conda-pack and ``conda-unpack`` need to relocate it.

Only the spec decides where packages come from. An external tool gets ``--override-channels`` and one ``-c`` per
spec channel, ``CONDARC`` pointing at an empty file (conda and mamba), ``--no-rc`` (micromamba): a user's
``.condarc`` with other channels, mirrors or pinned packages would otherwise change what a cached environment
contains without changing its cache key. (conda and mamba still read ``~/.condarc`` for settings other than
channels, e.g. ``pinned_packages``; micromamba with ``--no-rc`` and the embedded path read no rc file at all.) A spec without channels uses
``conda-forge`` (the channel every analyzer-written spec names; an empty list would make every solve fail).

The embedded engine keeps downloaded packages in py-rattler's package cache (``~/.cache/rattler/cache/pkgs``), or
in ``$PONCHO_CONDA_PKGS_DIR`` when set; installs hard-link from there, so repeated builds are fast and small.

Channels may be names (``conda-forge``), URLs (``https://...``, ``file:///...``) or local directories, which become
``file://`` URLs (installers take only URLs and names; a relative path would depend on the build's cwd).

Failures carry the solver's own explanation, which names the missing package or the conflict. With the embedded
engine, a request the solver cannot satisfy (an unknown package, no version matching, conflicting requirements) is a
bad spec: :class:`~poncho_wq.errors.SpecError`, exit code 1, as for any other bad input. An unreachable channel or a
failed download or install is a :class:`~poncho_wq.errors.BuildError` (exit code 3): the same spec may build later.

**Build targets** (``spec.target``, :mod:`poncho_wq.target`): the solve is for the target's subdir (``linux-64``
or ``linux-aarch64``: conda packages are plain files, so cross-building needs no emulation) with the virtual
packages of the target instead of this machine's: ``__glibc`` at the target's version (conda-forge packages built
for a newer glibc depend on ``__glibc >=2.28`` or more, so the solver picks builds that run there), ``__unix``,
``__linux`` and ``__archspec`` (the target's base architecture). External tools get the same through
``--platform`` and ``CONDA_OVERRIDE_GLIBC``. A cross-built prefix is not run here: no bytecode is compiled for it
and a pip section is refused (pip would have to run the target's python).
"""

import asyncio
import logging
import os
import re
import shutil
import tempfile

from ..config import Settings, settings
from ..errors import BuildError, SpecError
from ..archive.pack import ensure_history
from ..progress import as_progress
from ..target import host_machine, parse_target
from ..tools import run_tool
from .pip import pip_install

log = logging.getLogger(__name__)

#: External installers, in order of preference (micromamba: one static binary, fastest start; conda: slowest).
TOOLS = ("micromamba", "mamba", "conda")
#: Values of $PONCHO_CONDA_EXE that select the embedded py-rattler engine.
EMBEDDED = ("rattler", "py-rattler", "embedded")
DEFAULT_CHANNELS = ("conda-forge",)


def conda_tool(environ=None, chosen=None):
    """The external installer to use (an absolute path), or None for the embedded py-rattler engine. *chosen*: the
    installer a build request names (else ``$PONCHO_CONDA_EXE`` of *environ*, for direct callers)."""
    environ = os.environ if environ is None else environ
    chosen = chosen or Settings(environ).conda_exe
    if chosen:
        if chosen.lower() in EMBEDDED:
            return None
        path = shutil.which(chosen, path=environ.get("PATH"))
        if not path:
            raise BuildError("PONCHO_CONDA_EXE={!r} is not an executable command; set it to micromamba, mamba, "
                              "conda (or a path to one), or to 'rattler' for the embedded installer".format(chosen))
        return os.path.abspath(path)
    for name in TOOLS:
        path = shutil.which(name, path=environ.get("PATH"))
        if path:
            return os.path.abspath(path)
    return None


def channel_url(channel):
    """A channel name or URL unchanged; an existing local directory (or ``./``, ``/`` path) as a file:// URL."""
    if "://" in channel:
        return channel
    if channel.startswith(("/", "./", "../", "~")) or os.path.isdir(channel):
        return "file://" + os.path.abspath(os.path.expanduser(channel))
    return channel


def spec_channels(spec):
    return [channel_url(c) for c in (spec.conda.channels or DEFAULT_CHANNELS)]


def spec_target(spec):
    """The spec's :class:`poncho_wq.target.Target`, or None."""
    if not spec.target:
        return None
    return parse_target(spec.target)


def build_conda_prefix(spec, prefix, progress=None, conda_exe=None):
    """Install the spec's conda packages into *prefix* (new or empty), then its pip requirements.

    Progress phases: "solve" and "install" (one "install" phase for an external tool, which solves and installs
    in one run), then "pip". *conda_exe*: the installer the request names (see :func:`conda_tool`).
    """
    progress = as_progress(progress)
    if not spec.conda or not spec.conda.packages:
        raise BuildError("the conda engine needs a spec with conda packages")
    target = spec_target(spec)
    if target is not None and target.is_cross() and spec.pip:
        raise SpecError("pip: the pip section ({}) cannot be installed for the target {} on this {} machine (pip "
                        "runs the environment's own python); put the packages in conda.packages instead (most are "
                        "on conda-forge), or build on a {} machine".format(
                            " ".join(spec.pip), target.tag, _host(), target.machine))
    tool = conda_tool(chosen=conda_exe)
    if tool:
        progress.info("conda engine: %s", tool)
        _install_with_tool(tool, spec, prefix, progress)
    else:
        progress.info("conda engine: embedded py-rattler (no micromamba, mamba or conda on PATH)")
        _install_with_rattler(spec, prefix, progress)
    ensure_history(prefix, "conda")
    if spec.pip:
        python = prefix_python(prefix)
        if not python:
            raise BuildError(_no_python_message(spec))
        pip_install(python, spec.pip, progress, target=target)


def _host():
    return host_machine()


def target_virtual_packages(target):
    """The virtual packages a worker of *target* has (see the module docstring)."""
    from rattler import BuildString, GenericVirtualPackage, PackageName, Version

    def virtual(name, version, build="0"):
        return GenericVirtualPackage(PackageName(name), Version(version), BuildString(build))

    # __linux: the oldest kernel conda-forge supports for the target's era; packages ask for >=3.10 at most.
    return [virtual("__unix", "0"), virtual("__linux", "3.10"), virtual("__glibc", target.glibc_text),
            virtual("__archspec", "1", target.machine)]


def prefix_python(prefix):
    path = os.path.join(prefix, "bin", "python")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _no_python_message(spec):
    return ("the spec has pip requirements ({}) but its conda packages ({}) put no python into the environment: "
            "add python to conda.packages, e.g. \"python=3.11\"".format(" ".join(spec.pip),
                                                                        " ".join(spec.conda.packages)))


def _install_with_rattler(spec, prefix, progress):
    try:
        from rattler import MatchSpec, VirtualPackage, install, solve
    except ImportError as e:  # pragma: no cover - py-rattler is a dependency
        raise BuildError("no micromamba, mamba or conda on PATH and py-rattler is not importable ({}): "
                          "pip install py-rattler".format(e))
    channels = spec_channels(spec)
    packages = list(spec.conda.packages)
    target = spec_target(spec)
    platform = target.subdir if target else current_subdir()
    virtual_packages = target_virtual_packages(target) if target else VirtualPackage.detect()
    with progress.phase("solve", "{} package(s) from {}{}".format(len(packages), " ".join(channels),
                                                                   " for " + target.tag if target else "")):
        try:
            records = asyncio.run(solve(channels, packages, platforms=[platform, "noarch"],
                                        virtual_packages=virtual_packages))
        except Exception as e:  # rattler's SolverError, GatewayError, ...: the message is the explanation
            if _is_solver_error(e):
                raise SpecError("conda.packages: {} cannot be satisfied from channels {}; check the package names "
                                "and versions (and the channels):\n{}".format(
                                    _unsatisfied(packages, str(e)), " ".join(channels), _rattler_message(e)))
            raise BuildError("cannot solve the conda packages {} from channels {}:\n{}".format(
                " ".join(packages), " ".join(channels), _rattler_message(e)))
    if spec.pip and not any(r.name.normalized == "python" for r in records):
        raise BuildError(_no_python_message(spec))
    pkgs_dir = settings().conda_pkgs_dir
    with progress.phase("install", "{} package(s) into {}".format(len(records), prefix)):
        try:
            # requested_specs: py-rattler 0.28 rejects its own MatchSpec wrapper here; the inner object works.
            asyncio.run(install(records, prefix, cache_dir=pkgs_dir, show_progress=False,
                                requested_specs=[MatchSpec(p)._match_spec for p in packages],
                                **_install_platform(target)))
        except Exception as e:
            raise BuildError("installing the conda packages into {} failed:\n{}".format(prefix, _rattler_message(e)))
    log.debug("installed %s", ", ".join("{}={}={}".format(r.name.normalized, r.version, r.build) for r in records))


def _is_solver_error(e):
    """The solver ran on the channels' package lists and found no solution (not a fetch or network failure)."""
    try:
        from rattler.exceptions import SolverError
    except ImportError:  # pragma: no cover - older py-rattler: fall back to the class name
        return type(e).__name__ == "SolverError"
    return isinstance(e, SolverError)


def _unsatisfied(packages, message):
    """The requested specs whose package names the solver's explanation mentions ("No candidates were found for
    numpy 9.*", "needs-new * cannot be installed ..."), as a readable list; all of them when it names none."""
    from rattler import MatchSpec

    def mentioned(spec):
        name = MatchSpec(spec).name.normalized
        return re.search(r"(?<![\w.-]){}(?![\w.-])".format(re.escape(name)), message) is not None

    return " ".join(repr(p) for p in ([p for p in packages if mentioned(p)] or packages))


def _install_platform(target):
    """install()'s ``platform`` for a target build: the target's subdir (it decides e.g. the noarch python
    entry-point layout); none otherwise (this machine's)."""
    if target is None:
        return {}
    try:
        from rattler import Subdir
    except ImportError:  # pragma: no cover - older py-rattler
        from rattler import Platform as Subdir
    return {"platform": Subdir(target.subdir)}


def current_subdir():
    """This machine's conda subdir ("linux-64"); py-rattler renamed Platform to Subdir (0.28 warns on Platform)."""
    try:
        from rattler import Subdir
    except ImportError:  # pragma: no cover - older py-rattler
        from rattler import Platform as Subdir
    return str(Subdir.current())


def _rattler_message(e):
    return "{}: {}".format(type(e).__name__, str(e).strip())


def tool_command(tool, spec, prefix):
    """The argument list that creates *prefix* with the external *tool* (micromamba, mamba or conda)."""
    name = os.path.basename(tool)
    cmd = [tool, "create", "--yes", "--prefix", prefix]
    if name.startswith("micromamba"):
        cmd.append("--no-rc")
    target = spec_target(spec)
    if target is not None:
        cmd += ["--platform", target.subdir]
    cmd.append("--override-channels")
    for channel in spec_channels(spec):
        cmd += ["--channel", channel]
    # No "--" before the packages: micromamba's parser does not take it; spec validation already rejects
    # package strings that start with "-".
    return cmd + list(spec.conda.packages)


def _install_with_tool(tool, spec, prefix, progress):
    # conda and micromamba refuse (or prompt about) an existing non-conda directory as a new env's prefix.
    if os.path.isdir(prefix) and not os.listdir(prefix):
        os.rmdir(prefix)
    cmd = tool_command(tool, spec, prefix)
    with tempfile.TemporaryDirectory(prefix="poncho-condarc-") as tmp:
        empty_rc = os.path.join(tmp, "condarc")
        open(empty_rc, "w").close()
        env = dict(os.environ)
        env.update(CONDARC=empty_rc, MAMBARC=empty_rc, CONDA_CHANNEL_PRIORITY="strict")
        target = spec_target(spec)
        if target is not None:  # the worker's glibc, not ours (see the module docstring)
            env.update(CONDA_OVERRIDE_GLIBC=target.glibc_text, CONDA_SUBDIR=target.subdir)
        for var in ("CONDA_CHANNELS", "CONDA_DEFAULT_CHANNELS", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
                    "PYTHONPATH", "PYTHONHOME"):
            env.pop(var, None)
        with progress.phase("install", "{} package(s) with {}".format(len(spec.conda.packages),
                                                                      os.path.basename(tool))):
            # conda prints solver conflicts on stdout, micromamba on stderr: keep both.
            run_tool(cmd, "{} could not create the environment with {} from channels {}".format(
                os.path.basename(tool), " ".join(spec.conda.packages), " ".join(spec_channels(spec))),
                env=env, both_streams=True)
