"""Code layers on the worker side: the real sh shim stacks a real code layer (poncho_wq.assemble.layers) on a real conda-pack
base, under every shell; the base is unpacked once however often the code changes."""

import json
import os

import pytest

from poncho_wq.assemble.layers import CodeLayer
from helpers.shimutil import SHELLS, make_prefix, pack, run_shim, shim_env, unpack_count

ENV_ID = "env-" + "fedcba9876543210" * 4

pytestmark = pytest.mark.usefixtures("shells")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    return pack(make_prefix(d, run_in_env=True), d / (ENV_ID + ".tar.gz"))


def _layer(tmp_path, version, cache):
    """A code layer with a module (lib/mymod.py) and a console script (bin/mytool) that print *version*."""
    src = tmp_path / "src{}".format(version)
    src.mkdir(exist_ok=True)
    (src / "mymod.py").write_text("VERSION = {!r}\n".format(version))
    tool = src / "mytool"
    tool.write_text("#!/bin/sh\necho tool {}\n".format(version))
    tool.chmod(0o755)
    layer = CodeLayer([("lib/mymod.py", str(src / "mymod.py")), ("bin/mytool", str(tool))])
    return layer.build(str(cache))


SHOW = ["python", "-c", "import json, os, mymod; print(json.dumps({'v': mymod.VERSION, 'pp': os.environ['PYTHONPATH'],"
        " 'path0': os.environ['PATH'].split(':')[0], 'prefix': os.environ['CONDA_PREFIX']}))"]


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_code_layer_is_stacked_and_unpacked_once_per_content(base, tmp_path, shell):
    root = tmp_path / "root"
    env = shim_env(root, PYTHONPATH="/nonexistent")
    one = _layer(tmp_path, "one", tmp_path / "cache")
    r = run_shim(["-e", base, "--code", one] + SHOW, shell=SHELLS[shell], env=env)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    cdir = str(root / os.path.basename(one)[: -len(".tar.gz")])
    # Ahead of the base on sys.path and PATH; the caller's PYTHONPATH is dropped (activation unsets it).
    assert seen == {"v": "one", "pp": cdir + "/lib", "path0": cdir + "/bin", "prefix": str(root / ENV_ID)}
    r = run_shim(["-e", base, "--code", one, "mytool"], shell=SHELLS[shell], env=env)
    assert (r.returncode, r.stdout) == (0, "tool one\n"), r.stderr
    two = _layer(tmp_path, "two", tmp_path / "cache")
    assert two != one
    r = run_shim(["-e", base, "--code", two] + SHOW, shell=SHELLS[shell], env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["v"] == "two", r.stderr
    # base once, each code layer once; the code layer wrote nothing into the shared base.
    with open(root / "unpack.log") as f:
        ids = [line.split()[2] for line in f]
    assert sorted(ids) == sorted([ENV_ID, os.path.basename(one)[:-7], os.path.basename(two)[:-7]])
    assert not os.path.exists(root / ENV_ID / "lib" / "mymod.py")
    # Without --code the same base runs as before (upstream CLI unchanged).
    r = run_shim(["-e", base, "python", "-c", "import mymod"], shell=SHELLS[shell], env=env)
    assert r.returncode == 1 and "No module named 'mymod'" in r.stderr
    assert unpack_count(root / "unpack.log") == 3


def test_code_layer_named_otherwise_is_refused(base, tmp_path):
    one = _layer(tmp_path, "one", tmp_path / "cache")
    other = tmp_path / "mine.tar.gz"
    other.write_bytes(open(one, "rb").read())
    r = run_shim(["-e", base, "--code", other, "true"], env=shim_env(tmp_path / "root"))
    assert r.returncode == 1 and "code-<hex>.tar.gz" in r.stderr
    r = run_shim(["-e", base, "--code", tmp_path / ("code-" + "0" * 32 + ".tar.gz"), "true"],
                 env=shim_env(tmp_path / "root"))
    assert r.returncode == 2 and "code layer not found" in r.stderr


def test_code_layer_dir_of_another_kind_is_not_trusted(base, tmp_path):
    """A planted code-<hex> link in a root of the shim's own is refused, as an env dir would be."""
    one = _layer(tmp_path, "one", tmp_path / "cache")
    tmpdir = tmp_path / "tmp"
    root = tmpdir / "poncho-{}".format(os.getuid())
    root.mkdir(parents=True, mode=0o700)
    (root / os.path.basename(one)[:-7]).symlink_to(tmp_path)
    env = shim_env(None, TMPDIR=str(tmpdir))
    work = tmp_path / "work"  # not above TMPDIR: the shim ignores a TMPDIR inside the current directory
    work.mkdir()
    r = run_shim(["-e", base, "--code", one, "true"], env=env, cwd=str(work))
    assert r.returncode == 4 and "not trusted" in r.stderr, r.stderr
