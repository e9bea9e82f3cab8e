"""Virtual environments the tests make on top of the test suite's own.

Why not ``python -m venv --system-site-packages``: the suite runs in a virtual environment (dev/test.sh's ``.venv``,
built from setup.cfg's declared dependencies), and a venv made by a venv's python takes the *base* interpreter's
site-packages as its system site, not the test venv's: poncho_wq (an editable install), humanize and the other test
dependencies would be missing. :func:`child_venv` adds the running interpreter's site directories with
``site.addsitedir`` from a ``.pth`` line, so their own ``.pth`` files (the editable install's among them) are read too.

:func:`tools_last` is for the tests that run ``python -m poncho_wq`` with *another* interpreter (the machine's base
python, a venv over it) whose own layout is what the test studies: poncho_wq and its dependencies must be importable
there without becoming part of that layout. A fresh machine's base python has neither (the suite passed on machines
where an earlier ``pip install`` had put them into the base, and failed on a fresh one).
"""

import ensurepip
import glob
import os
import site
import subprocess
import sys


def make_venv(path, system_site=False, with_pip=True):
    """``python -m venv [--system-site-packages] path`` with this interpreter; return its python's path.

    *with_pip*: the pip and setuptools ``venv`` would install (ensurepip's bundled wheels, the same versions), but
    installed by uv from those wheel files, offline: ensurepip runs pip in a subprocess to install pip, 6 s of CPU
    per venv here (24-31 s wall on the loaded 2-core machine, against 2 s this way)."""
    path = str(path)
    args = [sys.executable, "-m", "venv", "--without-pip"] + (["--system-site-packages"] if system_site else [])
    subprocess.run(args + [path], check=True, stdin=subprocess.DEVNULL, capture_output=True)
    python = os.path.join(path, "bin", "python")
    if with_pip:
        bundled = os.path.join(os.path.dirname(ensurepip.__file__), "_bundled")
        wheels = sorted(glob.glob(os.path.join(bundled, "*.whl")))
        assert any(os.path.basename(w).startswith("pip-") for w in wheels), "no bundled pip wheel in " + bundled
        r = subprocess.run([sys.executable, "-m", "uv", "pip", "install", "-q", "--offline", "--no-index", "--no-deps",
                            "--python", python] + wheels, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        assert r.returncode == 0, "uv could not install ensurepip's wheels {}: {}".format(wheels, r.stderr[-2000:])
    return python


def child_venv(path, with_pip=True):
    """Make a venv at *path* that also sees the running interpreter's packages; return its python's path."""
    path = str(path)
    python = make_venv(path, system_site=True, with_pip=with_pip)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                             capture_output=True, text=True).stdout.strip()
    parents = [d for d in site.getsitepackages() if os.path.isdir(d)]
    with open(os.path.join(purelib, "_poncho_tests_parent_site.pth"), "w") as f:
        f.write("import site; " + "; ".join("site.addsitedir({!r})".format(d) for d in parents) + "\n")
    return python


def tools_last(directory):
    """A directory to put on ``PYTHONPATH`` (returned as a str) whose only file is a ``sitecustomize.py`` that adds the
    running interpreter's site directories (poncho_wq's editable install, its declared dependencies) at the *end* of
    ``sys.path``, after the interpreter's own site-packages, user site and ``PYTHONPATH``: another interpreter of the
    same version then runs ``python -m poncho_wq`` while every distribution the test installed in its own layout still
    comes first. ``sitecustomize`` runs after ``site`` has added all the interpreter's own directories."""
    d = os.path.join(str(directory), "poncho-tools-last")
    os.makedirs(d, exist_ok=True)
    parents = [p for p in site.getsitepackages() if os.path.isdir(p)]
    with open(os.path.join(d, "sitecustomize.py"), "w") as f:
        f.write("import site\n" + "".join("site.addsitedir({!r})\n".format(p) for p in parents))
    return d
