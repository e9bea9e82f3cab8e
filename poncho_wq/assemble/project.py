"""Projects as environments: a job directory with ``setup.py`` or ``pyproject.toml`` (Beam/Dataflow and Klio style).

    Environment.from_project("jobdir")                      # PonchoTask(..., environment=...)
    poncho_package_create --from-project jobdir env.tar.gz  # one tarball for other tools

Why build a wheel instead of reading the project's files: what a project ships is what its build backend says
(``py_modules``, ``packages``, ``package_data``, ``data_files``, generated files of custom ``cmdclass`` steps), and
only the backend knows. So the project is built once on the manager, PEP 517 through ``pip wheel --no-deps``, and
the wheel is what travels:

* its ``Requires-Dist`` (PEP 621 ``dependencies`` and setuptools ``install_requires`` alike; ``extra == "x"``
  requirements when the extra is asked for) go to the *base* environment, which the engines build and cache;
* its files go to the *code layer* (:mod:`poncho_wq.assemble.layers`, ``lib/`` on ``PYTHONPATH``): modules, packages
with
  their ``package_data``, and the ``.dist-info`` (``importlib.metadata`` finds the project on the worker);
* its ``data_files`` (``<name>.data/data/``, what pip installs relative to ``sys.prefix``) go to the task sandbox
  under their relative names, next to the command: Klio's ``data_files=[(".", ["job.yaml", "my-model.h5"])]``
  is read from the working directory, which on a worker is the sandbox.

``MANIFEST.in``-only files are sdist inputs: a wheel does not carry them, and neither does the task. Custom
``cmdclass`` steps run here, at build time, never on workers. A ``setup.py`` that installs OS packages with
``apt-get`` (Beam's ``CUSTOM_COMMANDS`` recipe) is refused before anything runs: OS packages cannot travel in a
Python build (and would be installed on the manager); a conda spec can carry them.

The build is isolated from the project's tree: the sources are copied to a scratch directory first (setuptools
writes ``build/`` and ``*.egg-info`` next to the sources), so a failed build leaves nothing behind. Build
isolation (pip's default) downloads the build requirements; when the interpreter already has them (setuptools,
and ``wheel`` for setuptools < 70.1) ``--no-build-isolation`` is used instead, which needs no network
(``build_isolation=True/False`` forces one or the other). Wheels are cached under ``<cache>/projects/<key>``,
the key covering the project's files (exactly the ones copied: :func:`_source_files`, which leaves out VCS, tool
and build directories, virtual environments and a cache inside the project, and follows symbolic links), the
interpreter and the build mode: an unchanged project is not built again. An :class:`~poncho_wq.assemble.environment.
Environment` made from a project is that build: after an edit, call ``Environment.from_project`` again.
"""

import ast
import configparser
import email.parser
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..analysis.installation import installation
from ..archive.cache import default_cache_dir
from ..errors import BuildError, InputMissing, SpecError
from ..fsutil import TOOL_STATE_DIRS, build_scratch, read_toml
from ..identity import tree_digest
from ..memo import register
from ..tools import check_interrupted, run_group

log = logging.getLogger(__name__)

#: Bumped when what a cached build holds, or how it is laid out, changes.
FORMAT = 3
#: Source-tree entries that are tool state or build output, not project content (not copied, not hashed).
_SKIP = TOOL_STATE_DIRS | {".venv", ".eggs", ".ruff_cache", ".ipynb_checkpoints"}
_SKIP_TOP = {"build", "dist"}
#: OS package managers a setup.py must not run (Beam's CUSTOM_COMMANDS recipe runs apt-get from a cmdclass).
#: A string of setup.py that is such a command: the word alone (an argument list's first item) or a command line.
_OS_COMMAND = re.compile(r"""^(?:sudo\s+)?(?:(apt-get|aptitude)(?:\s|$)|(apt|yum|dnf|apk|zypper)(?:\s+-\S+)*"""
                         r"""\s+(?:install|add)\b|(apt|yum|dnf|apk|zypper)$)""")
#: pip's default build requirements for a project without [build-system] (PEP 518).
_LEGACY_REQUIRES = ("setuptools>=40.8.0", "wheel")

_lock = threading.Lock()
_memo: Dict[tuple, "Project"] = {}
register(_memo.clear)


@dataclass(frozen=True)
class Project:
    """A built project: its wheel, unpacked in the cache, and what the wheel says."""

    source: str  # the project directory
    name: str
    version: str
    wheel: str  # the built wheel (in the cache)
    requires: Tuple[str, ...]  # Requires-Dist, as written
    lib: Tuple[Tuple[str, str], ...]  # (file in the cache, path relative to site-packages)
    data: Tuple[Tuple[str, str], ...]  # (file in the cache, path relative to sys.prefix: the task sandbox)
    bin: Tuple[Tuple[str, str], ...]  # (file in the cache, name): its scripts and console_scripts wrappers
    extras: Tuple[str, ...] = ()  # Provides-Extra

    def dependencies(self, extras: Iterable[str] = (), markers: Optional[Dict[str, str]] = None) -> List[str]:
        """The requirement strings of the base: every ``Requires-Dist`` without an ``extra`` marker (its other
        markers kept, for the builder to evaluate), plus those of the requested *extras* (their markers evaluated
        here with *markers*, the target's marker environment)."""
        extras = {canonicalize_name(e) for e in extras}
        unknown = sorted(extras - {canonicalize_name(e) for e in self.extras})
        if unknown:
            # pip only warns, and the task would then fail on a worker with a ModuleNotFoundError.
            raise SpecError("project {} has no extra {} (its extras: {}); fix the name".format(
                self.source, ", ".join(repr(e) for e in unknown), ", ".join(self.extras) or "none"))
        out = []
        for text in self.requires:
            req = Requirement(text)
            if req.marker is None or "extra" not in str(req.marker):
                out.append(str(req))
                continue
            env = dict(markers or {})
            if any(req.marker.evaluate(dict(env, extra=e)) for e in extras):
                req.marker = None
                out.append(str(req))
        return list(dict.fromkeys(out))


def _check_project(path: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise InputMissing("project {} does not exist: give the directory holding its setup.py or "
                           "pyproject.toml".format(path))
    if not os.path.isdir(path):
        raise SpecError("project {} is not a directory: give the directory holding its setup.py or pyproject.toml "
                        "(a requirements file goes to Environment.from_requirements / --from-requirements)".format(
                            path))
    if not any(os.path.isfile(os.path.join(path, n)) for n in ("pyproject.toml", "setup.py")):
        raise SpecError("project {} has no pyproject.toml or setup.py: it is not a Python project; for a script, "
                        "use Environment.from_script (or PonchoTask's analysis)".format(path))
    return path


def check_os_installs(path: str) -> None:
    """Refuse a ``setup.py`` that runs an OS package manager, before it runs: the build would install OS packages
    on the manager, and nothing of them would reach the workers.

    What counts is a string of the code that *is* such a command (``"apt-get"`` as an argument list's first word,
    ``"apt-get install -y x"``, ``"sudo yum install gcc"``), as Beam's ``CUSTOM_COMMANDS`` recipe writes it;
    comments, docstrings and prose that merely mention ``apt-get`` (``description="... apt-get ..."``) are not
    steps. ``setup.cfg`` is declarative and cannot run anything, so it is not read."""
    file = os.path.join(path, "setup.py")
    if not os.path.isfile(file):
        return
    with open(file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    try:
        tree = ast.parse(text, file)
    except (SyntaxError, ValueError):
        return  # the build fails on it anyway, with Python's own message
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
                  and isinstance(node.value, ast.Constant)}
    lines = text.splitlines()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings:
            continue
        m = _OS_COMMAND.match(node.value.strip())
        if m:
            code = lines[node.lineno - 1].strip() if 0 < node.lineno <= len(lines) else node.value
            raise SpecError(
                "project {}: setup.py line {} runs {} ({}): OS packages cannot be installed by a Python build "
                "(it would run on the manager, and nothing of it reaches the workers); remove that step and "
                "list the packages in a conda spec (conda: packages: [...]) built with "
                "Environment.from_spec or poncho_package_create".format(
                    path, node.lineno, next(g for g in m.groups() if g), code[:80]))


def _source_files(path: str, skip: Iterable[str] = ()) -> Tuple[List[str], List[Tuple[str, str]]]:
    """``(directories, [(relative path, file)])`` of the project's sources: what is copied for the build and what
    its cache key covers, the one list for both (a file the key missed would be served stale from the cache).

    Left out: tool state and build output (:data:`_SKIP`, ``*.egg-info``, top-level ``build/`` and ``dist/``),
    virtual environments (a directory holding ``pyvenv.cfg``: thousands of files no build reads), and the
    directories in *skip* (the cache, when it lies inside the project: copying it into a scratch directory inside
    itself would never end, and hashing it would change the key with every build). Symbolic links are followed,
    as ``pip wheel DIR`` sees them (a link to a shared data file outside the project would dangle in the scratch
    copy, and the key would not see that file's edits); a link to a directory it is in (a loop) is left out."""
    skip = {os.path.realpath(d) for d in skip}
    dirs_out, files = [], []
    chains = {path: frozenset([os.path.realpath(path)])}  # each directory's real path and its parents' (topdown)
    for directory, dirs, names in os.walk(path, followlinks=True):
        rel_dir = os.path.relpath(directory, path)
        top = rel_dir == "."
        chain = chains.pop(directory)
        kept = []
        for d in sorted(dirs):
            full = os.path.join(directory, d)
            real = os.path.realpath(full)
            if d in _SKIP or d.endswith(".egg-info") or (top and d in _SKIP_TOP) or real in chain or real in skip \
                    or os.path.isfile(os.path.join(full, "pyvenv.cfg")):
                continue
            kept.append(d)
            chains[full] = chain | {real}
        dirs[:] = kept
        if not top:
            dirs_out.append(rel_dir)
        for n in sorted(names):
            full = os.path.join(directory, n)
            if n.endswith((".pyc", ".pyo")) or not os.path.isfile(full):  # dangling links, sockets, fifos
                continue
            files.append((os.path.normpath(os.path.join(rel_dir, n)), full))
    return dirs_out, files


def _build_requires(path: str) -> Tuple[Tuple[str, ...], str]:
    """(``[build-system] requires``, backend) of the project; pip's defaults without a ``[build-system]``."""
    file = os.path.join(path, "pyproject.toml")
    if not os.path.isfile(file):
        return _LEGACY_REQUIRES, "setuptools.build_meta:__legacy__"
    try:
        data = read_toml(file)
    except ImportError as e:
        raise SpecError("project {}: pyproject.toml cannot be read: {}".format(path, e)) from None
    except (OSError, ValueError) as e:
        raise SpecError("project {}: pyproject.toml cannot be read: {}; fix its TOML".format(path, e)) from None
    system = data.get("build-system")
    if not isinstance(system, dict) or "requires" not in system:
        return _LEGACY_REQUIRES, "setuptools.build_meta:__legacy__"
    requires = system.get("requires")
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        # A string would be read letter by letter as requirements 's', 'e', ... (PEP 518: a list of strings).
        raise SpecError("project {}: pyproject.toml [build-system] requires = {!r} is not a list of strings; write "
                        "it as requires = [\"setuptools>=61\"]".format(path, requires))
    return tuple(requires), str(system.get("build-backend") or
                                                                      "setuptools.build_meta:__legacy__")


def missing_build_requirements(path: str, python: Optional[str] = None) -> List[str]:
    """The project's build requirements the interpreter *python* does not have (empty: it can build without
    isolation, hence without network). setuptools before 70.1 needs ``wheel`` for ``bdist_wheel`` too."""
    requires, backend = _build_requires(path)
    env = installation(python)
    missing = []
    wants = list(requires)
    if backend.startswith("setuptools"):
        st = env.distribution("setuptools")
        if st is not None and _older(st.version, "70.1"):
            wants.append("wheel")
    for text in dict.fromkeys(wants):
        try:
            req = Requirement(text)
        except InvalidRequirement:
            missing.append(text)
            continue
        if req.marker is not None and not req.marker.evaluate(dict(env.markers, extra="")):
            continue
        dist = env.distribution(req.name)
        if dist is None or (req.specifier and not req.specifier.contains(dist.version, prereleases=True)):
            missing.append(text)
    return missing


def _older(version: str, than: str) -> bool:
    try:
        return Version(version) < Version(than)
    except InvalidVersion:
        return False


def _copy_sources(path: str, dest: str, skip: Iterable[str] = ()) -> None:
    dirs, files = _source_files(path, skip)
    os.makedirs(dest)
    for rel in dirs:
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
    for rel, full in files:
        shutil.copy2(full, os.path.join(dest, rel))


_GENERIC = re.compile(r"subprocess-exited-with-error|Failed (building|to build)|metadata-generation-failed|"
                      r"legacy-install-failure|Could not build wheels|exit code: \d+|See above for output|"
                      r"This error originates from a subprocess|ERROR: Failed")


def _one_line(output: str) -> str:
    """The line of a failed build's output that says why (the last error that is not pip's own framing)."""
    lines = [l.strip().lstrip("│╰─ ").strip() for l in output.splitlines()]
    lines = [l for l in lines if l and not _GENERIC.search(l)]
    for line in reversed(lines):
        if re.search(r"(Error|Exception)\b|^error:|^ERROR:", line):
            return line[:300]
    return (lines[-1] if lines else "no output")[:300]


def build_project(path: str, python: Optional[str] = None, build_isolation: Optional[bool] = None,
                  cache_dir: Optional[str] = None) -> Project:
    """Build the project at *path* into a wheel (cached) and return the :class:`Project`.

    Raises :class:`~poncho_wq.errors.InputMissing` (no such directory), :class:`~poncho_wq.errors.SpecError`
    (not a project, an ``apt-get`` step, unreadable pyproject.toml) or :class:`~poncho_wq.errors.BuildError`
    (the build failed: one line naming the project, the cause and the fix); nothing is left in the project
    nor in the cache on failure."""
    path = _check_project(path)
    check_os_installs(path)
    python = os.path.abspath(python) if python else sys.executable
    missing = missing_build_requirements(path, None if python == sys.executable else python)
    isolated = bool(missing) if build_isolation is None else bool(build_isolation)
    if missing and isolated:
        log.info("poncho: building %s with build isolation: pip downloads its build requirements (not installed "
                 "here: %s; install them to build without network)", path, ", ".join(missing))
    cache = os.path.abspath(cache_dir or default_cache_dir())
    root = os.path.join(cache, "projects")
    digest = tree_digest(path, files=_source_files(path, (cache,))[1])
    # The interpreter's version too: a compiled extension built by an interpreter upgraded in place is stale.
    version = installation(None if python == sys.executable else python).python_version
    key_doc = json.dumps([FORMAT, digest, python, version, isolated], separators=(",", ":"))
    key = hashlib.sha256(key_doc.encode()).hexdigest()[:32]
    final = os.path.join(root, key)
    memo_key = (path, digest, python, isolated, root)
    with _lock:
        hit = _memo.get(memo_key)
    if hit is not None and os.path.isfile(hit.wheel):
        return hit
    project = _load(final, path)
    if project is None:
        os.makedirs(root, exist_ok=True)
        sweep(root)
        # build_scratch: held under a lock for the build's life, so the next build anywhere in root removes what a
        # killed build left (the kernel frees the lock of a dead process); the backend dies with us (run_group).
        with build_scratch(root) as scratch:
            _build_into(path, python, isolated, scratch, missing, skip=(cache,))
            try:
                os.rename(os.path.join(scratch, "out"), final)
            except OSError:
                if not os.path.isdir(final):  # another process published the same build first: use that one
                    raise
        project = _load(final, path)
        if project is None:
            raise BuildError("project {}: the build in {} is incomplete; remove that directory and try "
                             "again".format(path, final))
    with _lock:
        _memo[memo_key] = project
    return project


#: Scratch builds older than this were left by a killed process (a build takes minutes at most).
STALE_SECONDS = 24 * 3600


def sweep(root: str, now: Optional[float] = None) -> List[str]:
    """Remove the scratch directories (``.tmp-*``) under *root* that a killed build left, older than
    :data:`STALE_SECONDS` (a younger one may belong to a build running now); return what was removed."""
    now = time.time() if now is None else now
    removed: list = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        try:
            if entry.name.startswith(".tmp-") and entry.is_dir(follow_symlinks=False) and \
                    now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
        except OSError:
            continue
    return removed


def _build_into(path: str, python: str, isolated: bool, scratch: str, missing: Sequence[str] = (),
                skip: Iterable[str] = ()) -> None:
    """Copy the sources, build the wheel, unpack it: ``<scratch>/out/{wheel/, tree/, project.json}``."""
    src = os.path.join(scratch, "src")
    out = os.path.join(scratch, "out")
    wheels = os.path.join(out, "wheel")
    os.makedirs(wheels)
    _copy_sources(path, src, skip)
    cmd = [python, "-m", "pip", "wheel", "--no-deps", "--no-input", "--disable-pip-version-check", "-w", wheels]
    if not isolated:
        cmd.append("--no-build-isolation")
    cmd.append(src)
    log.info("poncho: building project %s (%s)", path, "isolated" if isolated else "no build isolation")
    env = dict(os.environ, PIP_NO_INPUT="1")
    r = run_group(cmd, env=env, cwd=scratch)
    check_interrupted(r.returncode)
    if r.returncode != 0:
        if re.search(r"\bapt-get\b", r.stdout):
            # The cause stays in the message: a failed compile's hint ("apt-get install libpq-dev") mentions
            # apt-get too, without the build running it.
            raise BuildError("project {} failed to build a wheel: {}; its output mentions apt-get: OS packages "
                             "cannot be installed by a Python build, so if it runs apt-get, remove that step and list "
                             "them in a conda spec, else install what the message names here".format(
                                 path, _one_line(r.stdout)))
        offline = re.search(r"No matching distribution|Could not find a version|NewConnectionError|Network",
                            r.stdout)
        fix = ("install its build requirements here ({} -m pip install {}) to build without network, or fix the "
               "project".format(python, " ".join(repr(m) for m in missing)) if isolated and missing and offline
               else "fix the project")
        raise BuildError("project {} failed to build a wheel: {}; {} (see the whole output with: {} -m pip wheel "
                         "--no-deps {}{})".format(path, _one_line(r.stdout), fix, python,
                                                  "" if isolated else "--no-build-isolation ", path))
    built = [n for n in os.listdir(wheels) if n.endswith(".whl")]
    if len(built) != 1:
        raise BuildError("project {}: pip wheel made {} wheels ({}); expected one".format(
            path, len(built), ", ".join(built) or "none"))
    tree = os.path.join(out, "tree")
    with zipfile.ZipFile(os.path.join(wheels, built[0])) as z:
        for member in z.namelist():
            norm = os.path.normpath(member)
            if os.path.isabs(norm) or norm.startswith(".."):
                raise BuildError("project {}: its wheel has a member outside the wheel: {}".format(path, member))
        z.extractall(tree)
    for d, _dirs, files in os.walk(tree):
        for n in files:
            os.chmod(os.path.join(d, n), 0o444 | (os.stat(os.path.join(d, n)).st_mode & 0o111))
    info = _describe(tree, built[0])
    info["bin"] = _write_scripts(tree, info.pop("scripts"), info.pop("entry_points"), os.path.join(out, "bin"))
    info.update(format=FORMAT, source=path, wheel=built[0])
    with open(os.path.join(out, "project.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)


def _describe(tree: str, wheel_name: str) -> dict:
    """What the unpacked wheel holds: name, version, Requires-Dist, and its files sorted into lib / data."""
    infos = [n for n in os.listdir(tree) if n.endswith(".dist-info")]
    if len(infos) != 1:
        raise BuildError("wheel {} has {} .dist-info directories; expected one".format(wheel_name, len(infos)))
    with open(os.path.join(tree, infos[0], "METADATA"), encoding="utf-8") as f:
        meta = email.parser.Parser().parse(f, headersonly=True)
    data_dir = infos[0][:-len(".dist-info")] + ".data"
    lib, data, scripts = [], [], []
    for d, dirs, files in os.walk(tree):
        dirs.sort()
        for n in sorted(files):
            rel = os.path.relpath(os.path.join(d, n), tree)
            parts = rel.split(os.sep)
            if parts[0] == data_dir:
                kind, rest = parts[1], os.path.join(*parts[2:]) if len(parts) > 2 else ""
                if kind in ("purelib", "platlib"):
                    lib.append((rel, rest))
                elif kind == "data":
                    data.append((rel, rest))
                elif kind == "scripts":
                    scripts.append((rel, rest))
                continue
            if parts[0] == infos[0] and n in ("RECORD", "INSTALLER", "direct_url.json"):
                continue
            lib.append((rel, rel))
    entry_points = {}
    file = os.path.join(tree, infos[0], "entry_points.txt")
    if os.path.isfile(file):
        cp = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        cp.optionxform = str  # type: ignore
        cp.read(file, encoding="utf-8")
        if cp.has_section("console_scripts"):
            entry_points = dict(cp["console_scripts"])
    return {"name": meta["Name"], "version": meta["Version"], "requires": meta.get_all("Requires-Dist") or [],
            "extras": meta.get_all("Provides-Extra") or [],
            "lib": lib, "data": data, "scripts": scripts, "entry_points": entry_points}


_WRAPPER = """#!/usr/bin/env python3
import importlib
import sys

obj = importlib.import_module({module!r})
for name in {attrs!r}:
    obj = getattr(obj, name)
sys.exit(obj())
"""


def _write_scripts(tree: str, scripts, entry_points, bin_dir: str) -> List[Tuple[str, str]]:
    """``bin/`` of the code layer: the wheel's scripts (a ``#!python`` shebang becomes ``#!/usr/bin/env
    python3``, the base's interpreter on the worker's PATH) and a wrapper per console_scripts entry point, as
    ``(path relative to the build's directory, name)``."""
    out = []
    os.makedirs(bin_dir, exist_ok=True)
    for rel, name in scripts:
        with open(os.path.join(tree, rel), "rb") as f:
            data = f.read()
        if data.startswith(b"#!python"):
            rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
            data = b"#!/usr/bin/env python3\n" + rest
        out.append((name, data))
    for name, target in sorted(entry_points.items()):
        target = target.split("[", 1)[0].strip()
        module, _, attrs = target.partition(":")
        text = _WRAPPER.format(module=module.strip(), attrs=[a for a in attrs.strip().split(".") if a])
        out.append((name, text.encode()))
    result = []
    for name, data in out:
        if "/" in name or name in ("", ".", ".."):
            continue
        path = os.path.join(bin_dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o555)
        result.append((os.path.join("bin", name), name))
    return result


def _load(final: str, source: str) -> Optional[Project]:
    try:
        with open(os.path.join(final, "project.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if info.get("format") != FORMAT:
        return None
    tree = os.path.join(final, "tree")
    return Project(source=source, name=info["name"], version=info["version"],
                   wheel=os.path.join(final, "wheel", info["wheel"]), requires=tuple(info["requires"]),
                   lib=tuple((os.path.join(tree, s), a) for s, a in info["lib"]),
                   data=tuple((os.path.join(tree, s), a) for s, a in info["data"]),
                   bin=tuple((os.path.join(final, s), n) for s, n in info["bin"]),
                   extras=tuple(info.get("extras") or ()))


#: Names a project's scripts may not take in the code layer's ``bin/`` (first on PATH): the interpreter (a
#: ``python3`` wrapper, ``#!/usr/bin/env python3``, would exec itself forever, and every ``python3 job.py`` would run
#: it) and the activators the shims call.
_BIN_RESERVED = re.compile(r"^(python(\d+(\.\d+)?)?|run_in_env|run_in_layer|poncho_package_run)$")


def bin_members(project: Project) -> Tuple[Tuple[str, str], ...]:
    """``(arcname, source)`` of the project's scripts in the code layer's ``bin/``; a name that would shadow the
    interpreter or poncho_wq's activators is refused."""
    for _src, name in project.bin:
        if _BIN_RESERVED.match(name):
            raise SpecError("project {}: its script {!r} would shadow {} on the workers' PATH (the code layer's bin/ "
                            "comes first); rename that script or console_scripts entry".format(
                                project.source, name, "the interpreter" if name.startswith("python")
                                else "poncho_wq's own " + name))
    return tuple(("bin/" + name, src) for src, name in project.bin)


__all__ = ["Project", "bin_members", "build_project", "check_os_installs", "missing_build_requirements",
           "sweep"]
