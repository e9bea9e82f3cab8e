"""A build target: the oldest worker an environment must run on, named like a wheel's platform tag.

Why a target: workers are often older (RHEL 8: glibc 2.28, Ubuntu 20.04: 2.31) or of another architecture than
the manager that builds. An environment can only run where every binary in it runs, so a build for
``manylinux_2_28_x86_64`` must (a) take only wheels for that tag (uv ``--python-platform x86_64-manylinux_2_28`` or
pip ``--platform ... --only-binary=:all:``: an sdist compiled here would need this machine's glibc), (b) refuse an
interpreter that itself needs a newer glibc (:func:`poncho_wq.engines.interpreter.check_interpreter_target`), and
(c) for conda specs solve for the target's subdir (``linux-aarch64``) with ``__glibc`` set to the target's version,
so that conda-forge's builds for old glibc are chosen. After the build the recorded floor
(:mod:`poncho_wq.archive.floor`) is compared with the target (:func:`floor_problem`, in
:func:`poncho_wq.engines.build_prefix`): a floor above it is a build error
naming the file, never a tarball that fails on the worker.

The name is the manylinux tag (PEP 600) because that is what people read on PyPI and in ``pip debug``:
``manylinux_<glibc major>_<minor>_<arch>``; the legacy aliases ``manylinux2014_<arch>`` (2.17),
``manylinux2010_<arch>`` (2.12) and ``manylinux1_<arch>`` (2.5) are accepted and normalized.
"""

import dataclasses
import glob
import os
import platform
import re
from typing import Iterable, List, Optional, Tuple

from .errors import SpecError

#: The architectures a target may name (``uname -m`` spelling) and their conda subdirs.
SUBDIRS = {"x86_64": "linux-64", "aarch64": "linux-aarch64", "ppc64le": "linux-ppc64le", "s390x": "linux-s390x",
           "i686": "linux-32", "armv7l": "linux-armv7l"}
_LEGACY = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
_TAG = re.compile(r"manylinux_(\d+)_(\d+)_([a-z0-9_]+)")
_LEGACY_TAG = re.compile(r"(manylinux2014|manylinux2010|manylinux1)_([a-z0-9_]+)")
#: The manylinux glibc versions ``uv --python-platform`` names (uv 0.4 and later); a target in between is served
#: by the highest one below it (wheels for an older glibc run on a newer one).
UV_GLIBC = ((2, 17), (2, 28)) + tuple((2, minor) for minor in range(31, 41))
_EXAMPLE = "a manylinux platform tag such as 'manylinux_2_28_x86_64' or 'manylinux2014_aarch64'"
#: Architecture names people type (Windows/macOS and Debian spellings) for the ``uname -m`` ones.
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
#: ELF machine names (:data:`poncho_wq.archive.floor.MACHINES`) that differ from the target's ``uname -m`` spelling.
_ELF_MACHINE = {"armv7l": "arm"}
#: The architectures uv's ``--python-platform`` names manylinux values for; other targets are installed with pip.
UV_MACHINES = ("x86_64", "aarch64")


@dataclasses.dataclass(frozen=True)
class Target:
    """A parsed target: the glibc version (major, minor) and the architecture (``uname -m`` spelling)."""

    glibc: Tuple[int, int]
    machine: str

    @property
    def tag(self) -> str:
        """The canonical manylinux tag: ``manylinux_2_28_x86_64``."""
        return "manylinux_{}_{}_{}".format(self.glibc[0], self.glibc[1], self.machine)

    @property
    def glibc_text(self) -> str:
        return "{}.{}".format(*self.glibc)

    @property
    def subdir(self) -> str:
        """The conda subdir to solve for (``linux-aarch64``)."""
        return SUBDIRS[self.machine]

    def is_cross(self, machine: Optional[str] = None) -> bool:
        """Whether binaries for this target cannot run on *machine* (default: this one)."""
        return self.machine != (machine or host_machine())

    @property
    def uv_serves(self) -> bool:
        """Whether uv can select wheels for this target (:data:`UV_MACHINES`, glibc 2.17 or newer)."""
        return self.machine in UV_MACHINES and self.glibc >= UV_GLIBC[0]

    def uv_platform(self) -> str:
        """uv's ``--python-platform`` value: the highest manylinux version uv knows that is not above the target."""
        usable = [v for v in UV_GLIBC if v <= self.glibc]
        if not usable:
            raise SpecError("target {}: uv selects wheels for glibc 2.17 or newer; a target below manylinux2014 "
                            "(glibc {}) cannot be served: use the conda engine (conda-forge builds for glibc 2.17) "
                            "or a target of manylinux2014_{} or newer".format(self.tag, self.glibc_text,
                                                                             self.machine))
        return "{}-manylinux_{}_{}".format(self.machine, *max(usable))

    def pip_platforms(self) -> List[str]:
        """pip's ``--platform`` values: every manylinux tag the target can run, newest first (pip matches the tags
        literally, so ``manylinux_2_28_x86_64`` alone would skip a package that only has manylinux2014 wheels)."""
        out = ["manylinux_{}_{}_{}".format(self.glibc[0], minor, self.machine)
               for minor in range(self.glibc[1], 4, -1)]
        for name, version in _LEGACY.items():
            if version <= self.glibc:
                out.append("{}_{}".format(name, self.machine))
        return out

    def __str__(self):
        return self.tag


def host_machine() -> str:
    """This machine's architecture, ``uname -m`` spelling (``amd64`` and ``arm64`` normalized)."""
    m = platform.machine().lower()
    return _ALIASES.get(m, m)


def parse_target(value, field: str = "target") -> Target:
    """Parse and validate a target name; raise :class:`SpecError` naming *field*, the value and the expected form."""
    if isinstance(value, Target):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    m = _TAG.fullmatch(text or "")
    if m:
        glibc, machine = (int(m.group(1)), int(m.group(2))), m.group(3)
    else:
        m = _LEGACY_TAG.fullmatch(text or "")
        if not m:
            raise SpecError("{}: {!r} is not valid; expected {}{}".format(field, value, _EXAMPLE, _why_not(text)))
        glibc, machine = _LEGACY[m.group(1)], m.group(2)
    machine = _ALIASES.get(machine, machine)
    if machine not in SUBDIRS:
        raise SpecError("{}: {!r} names the architecture {!r}; expected one of {}".format(
            field, value, machine, ", ".join(sorted(SUBDIRS))))
    if glibc[0] != 2:
        raise SpecError("{}: {!r}: glibc {}.{} does not exist; expected {}".format(field, value, glibc[0], glibc[1],
                                                                                   _EXAMPLE))
    if glibc < (2, 5):
        raise SpecError("{}: {!r}: no manylinux tag exists below glibc 2.5 (manylinux1); expected {} with the "
                        "workers' glibc (`ldd --version` on a worker)".format(field, value, _EXAMPLE))
    return Target(glibc, machine)


def _why_not(text):
    """What to write instead of a platform tag that cannot be a target (the part after "expected ...")."""
    text = text or ""
    if text.startswith("linux_"):
        return ("; {!r} names no glibc version (it is the tag of a wheel built on one machine): write "
                "manylinux_<major>_<minor>_{} with the workers' glibc (`ldd --version` on a worker)".format(
                    text, _ALIASES.get(text[6:], text[6:]) or "x86_64"))
    if text.startswith("musllinux"):
        return ("; workers with musl libc (Alpine) are not supported: environments carry glibc binaries; run "
                "those workers in a glibc image")
    if text.startswith(("macosx", "win", "ios", "android")):
        return "; environments run on Linux workers only"
    return " (musllinux, macOS and Windows targets are not supported)"


def _version(text) -> Tuple[int, ...]:
    return tuple(int(x) for x in str(text).split(".") if x.isdigit())


def floor_problem(floor, target: Target) -> Optional[str]:
    """Why an environment (or interpreter) with *floor* (:func:`poncho_wq.archive.floor.prefix_floor`'s dict) cannot run
    on *target*, or None when it can."""
    if not floor:
        return None
    machine = floor.get("machine")
    if machine and machine not in (target.machine, _ELF_MACHINE.get(target.machine)):
        return "its binaries are built for {}, the target is {}".format(machine, target.machine)
    if floor.get("libc") == "musl":
        return "its binaries need musl, the target is glibc {}".format(target.glibc_text)
    glibc = floor.get("glibc")
    if glibc and _version(glibc) > target.glibc:
        by = floor.get("glibc_by")
        return "it needs glibc {}{}, the target has {}".format(glibc, " (" + by + ")" if by else "",
                                                               target.glibc_text)
    return None


def file_owner(prefix, relpath, conda_records: Iterable[dict] = ()) -> Optional[str]:
    """Which installed distribution (``distribution lie 1.0``, from a ``*.dist-info/RECORD``) or conda package
    (``conda package zlib 1.2.13``, one of *conda_records*: the prefix's ``conda-meta`` records, as
    :func:`poncho_wq.analysis.installation.conda_records` reads them) ships the file *relpath* of *prefix*; None
    when no record names it. For messages: the fix is a version of *that* package, which a file path does not
    say."""
    for record in conda_records:
        if relpath in (record.get("files") or ()):
            return "conda package {} {}".format(record.get("name"), record.get("version"))
    for record_file in sorted(glob.glob(os.path.join(prefix, "lib", "python*", "site-packages", "*.dist-info",
                                                     "RECORD"))):
        site = os.path.dirname(os.path.dirname(record_file))
        try:
            with open(record_file, encoding="utf-8") as f:
                paths = {line.rsplit(",", 2)[0] for line in f if line.strip()}
        except (OSError, ValueError):
            continue
        if os.path.relpath(os.path.join(prefix, relpath), site) in paths:
            name, _, version = os.path.basename(os.path.dirname(record_file))[:-len(".dist-info")].partition("-")
            return "distribution {} {}".format(name, version)
    return None
