"""Virtual environments the tests make on top of the test suite's own.

Why not ``python -m venv --system-site-packages``: the suite runs in a virtual environment (dev/test.sh's ``.venv``,
built from setup.cfg's declared dependencies), and a venv made by a venv's python takes the *base* interpreter's
site-packages as its system site, not the test venv's: poncho_wq (an editable install), humanize and the other test
dependencies would be missing. :func:`child_venv` adds the running interpreter's site directories with
``site.addsitedir`` from a ``.pth`` line, so their own ``.pth`` files (the editable install's among them) are read too.
"""

import os
import site
import subprocess
import sys


def child_venv(path, with_pip=True):
    """Make a venv at *path* that also sees the running interpreter's packages; return its python's path."""
    path = str(path)
    args = [sys.executable, "-m", "venv", "--system-site-packages", path]
    if not with_pip:
        args.insert(4, "--without-pip")
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    python = os.path.join(path, "bin", "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                             capture_output=True, text=True).stdout.strip()
    parents = [d for d in site.getsitepackages() if os.path.isdir(d)]
    with open(os.path.join(purelib, "_poncho_tests_parent_site.pth"), "w") as f:
        f.write("import site; " + "; ".join("site.addsitedir({!r})".format(d) for d in parents) + "\n")
    return python
