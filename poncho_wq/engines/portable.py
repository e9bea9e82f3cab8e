"""The portable-Python engine: a copied CPython plus the spec's pip packages, no conda anywhere.

For specs without a conda section (the usual case for venv/pyenv users): the base interpreter (the running one
unless ``python=`` names another, e.g. a uv-managed standalone build) is copied and made relocatable by
:mod:`.interpreter`, then the pip section is installed straight into the copy's site-packages by :mod:`.pip`.
Inside :func:`poncho_wq.engines.create` the copy is hard-linked from an *interpreter base* prepared once per
interpreter in the build cache, so the interpreter step costs ~0.1 s and the build time is uv's plus the pack.
The dispatcher then adds ``conda-meta/history`` so that conda-pack packs the prefix exactly like a conda one and
its ``conda-unpack`` rewrites the console-script shebangs on the worker.

With a build target (``spec.target``, :mod:`poncho_wq.target`) the base interpreter's own floor is checked first
(:func:`.interpreter.check_interpreter_target`): a copy of an interpreter built here needs this machine's glibc
(2.35 for the pyenv build on Debian 12), and no choice of wheels makes it run on an older worker. The fix is an
interpreter built on the older system (``--python``) or the conda engine. The pip section then takes only wheels
for the target.
"""

import os
import sys

from ..archive.pack import load_conda_pack_early
from ..errors import PonchoError
from ..progress import as_progress
from ..target import parse_target
from .bytecode import start_early
from .interpreter import check_interpreter_target, copy_interpreter, probe_interpreter
from .pip import pip_install


def base_python(python=None):
    """The interpreter the portable engine copies: *python* when given, else the running one."""
    return os.path.abspath(python) if python else sys.executable


def check_version(spec, info, python):
    """Raise PonchoError when the spec's Python version (a prefix such as "3.11") does not match the base's."""
    wanted = spec.python_version
    if not wanted:
        return
    have = [int(x) for x in info["version_info"]]
    if [int(x) for x in wanted.split(".")] != have[: len(wanted.split("."))]:
        raise PonchoError(
            "the spec asks for Python {} but the base interpreter {} is Python {}; pass --python PATH to an "
            "interpreter of version {} (e.g. `uv python find {}`)".format(wanted, python, info["version"],
                                                                         wanted, wanted))


def check_target(spec, python=None, engine="portable"):
    """Raise SpecError when the spec has a target the base interpreter cannot run on (see the module docstring)."""
    if spec.target:
        check_interpreter_target(base_python(python), parse_target(spec.target), engine)


def build_portable_prefix(spec, prefix, python=None, progress=None):
    """Populate *prefix* with a relocatable copy of the base interpreter and the spec's pip packages."""
    progress = as_progress(progress)
    python = base_python(python)
    info = probe_interpreter(python)
    check_version(spec, info, python)
    check_target(spec, python)
    with progress.phase("install", "python {} from {}".format(info["version"], python)) as phase:
        # Inside create(): placed from the interpreter base cached once per interpreter (see .interpreter).
        exe = copy_interpreter(python, prefix, phase=phase)
    start_early(prefix)  # the bytecode step's interpreter starts while uv installs,
    load_conda_pack_early()  # and the packer's conda-pack loads (a fresh process: 15-20 ms of CPU)
    pip_install(exe, spec.pip, progress, target=spec.target)
    return exe
