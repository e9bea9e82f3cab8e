"""Environments on a real older system (issue 19): a Debian 11 root (glibc 2.31, made by dev/debian11-root.sh with
debootstrap from the Debian registry, cached under ~/.cache) entered with chroot.

(i) An environment built here (the portable engine copies this machine's interpreter, which needs a newer glibc)
is refused by the run shim inside the root before anything is unpacked: exit 4 and one line naming what the
environment needs, what the worker has and how to build for it. (ii) An environment built for the root's floor
(``--target manylinux_2_31_x86_64`` with ``--python`` the CPython compiled inside the root) runs there and imports
a wheel's compiled extension.

The root is built once (about 5 minutes on a fresh machine, most of it compiling CPython) and reused. These tests
skip, loudly, only when the Debian registry cannot be reached; a missing debootstrap is installed by the script.
Each chroot runs in its own mount namespace with its own /proc (``unshare --mount-proc``): the mount disappears
with the process, so nothing is left mounted in the cached root whatever happens to the test.
"""

import os
import shutil
import subprocess
import sys
import uuid
import warnings

import pytest

from helpers.paths import REPO as TOP
from poncho_wq.engines import create
from poncho_wq.shim import shim_path

ROOT_GLIBC = "2.31"
TARGET = "manylinux_2_31_x86_64"

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64" or not sys.platform.startswith("linux"),
                                reason="the Debian 11 root is made for x86_64 Linux")


@pytest.fixture(scope="module")
def root():
    """The Debian 11 root's path (built by dev/debian11-root.sh when missing or outdated)."""
    if os.geteuid() != 0:
        pytest.fail("tests/worker/test_old_glibc.py needs root (debootstrap, chroot); run the suite as root as CI does")
    r = subprocess.run(["bash", os.path.join(TOP, "dev", "debian11-root.sh")], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=1800)
    if r.returncode == 75:
        message = ("SKIPPED: the Debian registry cannot be reached, so the tests on a real Debian 11 system did not "
                   "run: {}".format(r.stderr.strip()))
        warnings.warn(message)
        print("\n" + "!" * 100 + "\n" + message + "\n" + "!" * 100, file=sys.stderr)
        pytest.skip(message)
    assert r.returncode == 0, "dev/debian11-root.sh failed:\n" + r.stderr[-4000:]
    path = r.stdout.strip().splitlines()[-1]
    assert os.path.isfile(os.path.join(path, "opt/python3.9/bin/python3.9")), r.stderr
    return path


@pytest.fixture
def inside(root):
    """A fresh directory inside the root: (its path here, its path as seen inside the chroot); removed after."""
    name = "poncho-test-" + uuid.uuid4().hex[:12]
    here = os.path.join(root, "tmp", name)
    os.makedirs(here)
    yield here, "/tmp/" + name
    shutil.rmtree(here, ignore_errors=True)


def _tool(name):
    """util-linux's unshare, coreutils' chroot: also where a PATH without the sbin directories would miss them."""
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    assert path, "{} is missing (Debian: util-linux / coreutils)".format(name)
    return path


def in_root(root, argv, env=None, timeout=300):
    """Run *argv* inside the root (chroot, own mount namespace and /proc), with a clean environment."""
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    base.update(env or {})
    cmd = [_tool("unshare"), "--mount", "--fork", "--pid", "--mount-proc=" + os.path.join(root, "proc"),
           _tool("chroot"), root, "/usr/bin/env", "-i"] + ["{}={}".format(k, v) for k, v in base.items()] + list(argv)
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _place(result, here, inner):
    """Copy the built tarball and the run shim into the root; return their paths inside the chroot."""
    name = os.path.basename(result.path)
    shutil.copyfile(result.path, os.path.join(here, name))
    shutil.copyfile(shim_path(), os.path.join(here, "poncho_package_run"))
    return inner + "/" + name, inner + "/poncho_package_run"


def test_the_root_is_the_older_system(root):
    r = in_root(root, ["getconf", "GNU_LIBC_VERSION"])
    assert r.stdout.strip() == "glibc " + ROOT_GLIBC, r.stderr
    from poncho_wq.engines.interpreter import interpreter_floor

    floor = interpreter_floor(os.path.join(root, "opt/python3.9/bin/python3.9"))
    assert floor["machine"] == "x86_64" and tuple(map(int, floor["glibc"].split("."))) <= (2, 31)


def test_an_environment_built_here_is_refused_before_it_is_unpacked(root, inside, tmp_path):
    here, inner = inside
    result = create({"pip": []}, cache_dir=str(tmp_path / "cache"))
    assert tuple(map(int, result.floor["glibc"].split("."))) > (2, 31), "this test needs a newer build machine"
    tarball, shim = _place(result, here, inner)
    r = in_root(root, ["/bin/sh", shim, "-e", tarball, "--", "python3", "-c", "print('ran')"],
                env={"PONCHO_ENV_DIR": inner + "/envs"})
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert "ran" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poncho_package_run: "), r.stderr
    line = lines[0]
    assert "needs glibc {}".format(result.floor["glibc"]) in line and result.floor["glibc_by"] in line
    assert "has glibc {}".format(ROOT_GLIBC) in line
    assert "--target {}".format(TARGET) in line
    # nothing unpacked, not even half: no environment directory, no temporary one
    envs = os.path.join(here, "envs")
    assert not os.path.isdir(envs) or [n for n in os.listdir(envs) if not n.endswith(".lock")] == []


def test_an_environment_built_for_the_floor_runs_there(root, inside, tmp_path):
    here, inner = inside
    python = os.path.join(root, "opt/python3.9/bin/python3.9")
    result = create({"pip": ["markupsafe==2.1.5"]}, python=python, target=TARGET, cache_dir=str(tmp_path / "cache"))
    assert result.floor["machine"] == "x86_64"
    assert tuple(map(int, result.floor["glibc"].split("."))) <= (2, 31)
    tarball, shim = _place(result, here, inner)
    code = ("import sys, markupsafe, markupsafe._speedups as s; "
            "print(sys.version_info[:2], s.__file__.startswith(sys.prefix), markupsafe.escape('<a>'), sys.prefix)")
    r = in_root(root, ["/bin/sh", shim, "-e", tarball, "--", "python3", "-c", code],
                env={"PONCHO_ENV_DIR": inner + "/envs"})
    assert r.returncode == 0, (r.stdout, r.stderr)
    version, inside_env, escaped, prefix = r.stdout.strip().rsplit(" ", 3)
    assert (version, inside_env, escaped) == ("(3, 9)", "True", "&lt;a&gt;"), r.stdout
    assert prefix.startswith(inner + "/envs/"), prefix  # the environment's interpreter, not one of the root's
