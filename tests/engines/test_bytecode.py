"""Environments carry bytecode the worker's interpreter accepts as is (issue 14): checked-hash pycs compiled at
build time, read on import, never rewritten on the worker, and reproducible."""

import hashlib
import json
import os
import re

import pytest

from helpers.cli import run_cli
from helpers.archives import pyc_flags

SPEC = {"python": "{}.{}".format(*__import__("sys").version_info[:2]), "pip": ["six==1.16.0"]}


def _build(tmp_path, cache):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "{}.tar.gz".format(cache)
    r = run_cli("poncho_package_create", "--cache-dir", tmp_path / cache, spec, out)
    assert r.returncode == 0, r.stderr
    return out, r.stderr


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bytecode")
    return tmp, [_build(tmp, "cache-a"), _build(tmp, "cache-b")]


def _snapshot(root):
    return {os.path.join(d, f): (os.lstat(os.path.join(d, f)).st_size, os.lstat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(root) for f in files}


def test_tarball_holds_checked_hash_bytecode_for_stdlib_and_packages(two_builds):
    _, [(out, stderr), _] = two_builds
    flags = pyc_flags(str(out))
    assert set(flags.values()) == {3}
    assert any(n.endswith("site-packages/__pycache__/six.{}.pyc".format(
        __import__("sys").implementation.cache_tag)) for n in flags)
    assert any("/json/__pycache__/" in n for n in flags)
    assert "poncho: bytecode done in" in stderr


def test_same_spec_in_two_caches_gives_identical_bytes(two_builds):
    _, [(a, _), (b, _)] = two_builds
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert digest[0] == digest[1]


def test_imports_read_the_pycs_and_write_nothing(two_builds, tmp_path):
    _, [(out, _), _] = two_builds
    root = tmp_path / "root"
    run = ["poncho_package_run", "-e", str(out), "--"]
    env = {"PONCHO_ENV_DIR": str(root)}
    r = run_cli(*run, "true", env=env)
    assert r.returncode == 0, r.stderr
    before = _snapshot(root)
    r = run_cli(*run, "python3", "-v", "-c", "import six, json, email.parser", env=env)
    assert r.returncode == 0, r.stderr
    loaded = [line for line in r.stderr.splitlines() if line.startswith("# code object from")]
    assert any("six." in line for line in loaded) and any("/email/__pycache__/parser." in line for line in loaded)
    assert not [line for line in r.stderr.splitlines() if line.startswith(("# wrote", "# created"))]
    after = _snapshot(root)
    assert {k: v for k, v in after.items() if not k.endswith("unpack.log")} == \
        {k: v for k, v in before.items() if not k.endswith("unpack.log")}


def test_a_rewritten_source_is_not_run_from_its_stale_pyc(two_builds, tmp_path):
    """conda-unpack rewrites some sources on the worker; checked-hash pycs are trusted only for the very source
    they were compiled from (an unchecked pyc would run the old code)."""
    _, [(out, _), _] = two_builds
    root = tmp_path / "root"
    env = {"PONCHO_ENV_DIR": str(root)}
    r = run_cli("poncho_package_run", "-e", str(out), "--", "python3", "-c", "import six; print(six.__file__)",
                env=env)
    assert r.returncode == 0, r.stderr
    source = r.stdout.strip()
    os.chmod(source, 0o644)
    with open(source, "a") as f:
        f.write("\nREWRITTEN_ON_THE_WORKER = 1\n")
    r = run_cli("poncho_package_run", "-e", str(out), "--", "python3", "-c",
                "import six; print(six.REWRITTEN_ON_THE_WORKER)", env=env)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr


def test_a_second_spec_takes_shared_packages_from_the_pyc_cache(two_builds):
    """Compiling is most of a large build; a rebuild after adding a dependency takes the pycs of the packages it
    already had from the build cache's pyc cache, byte for byte what a compile gives."""
    tmp, [(first, _), _] = two_builds
    spec = tmp / "spec2.json"
    spec.write_text(json.dumps(dict(SPEC, pip=SPEC["pip"] + ["tabulate==0.9.0"])))
    out = tmp / "second.tar.gz"
    r = run_cli("poncho_package_create", "--cache-dir", tmp / "cache-a", spec, out)
    assert r.returncode == 0, r.stderr
    note = [line for line in r.stderr.splitlines() if "bytecode done" in line][0]
    compiled, cached = (int(x) for x in re.search(r"(\d+) module\(s\) compiled, (\d+) from the pyc cache",
                                                  note).groups())
    assert cached >= 1 and compiled >= 1, note  # six from the cache, tabulate compiled
    six = [n for n in pyc_flags(str(first)) if "/__pycache__/six." in n][0]
    assert _member(first, six) == _member(out, six)
    assert os.listdir(tmp / "cache-a" / "bytecode")


def _member(path, name):
    import tarfile

    with tarfile.open(str(path)) as tar:
        return tar.extractfile(name).read()


def test_the_skip_list_names_whole_paths_whatever_characters_they_hold(tmp_path):
    """compile_tree's skip list (the dropped test directories) reaches the compile script intact: a directory name
    holding a character str.splitlines splits at (U+2028 here, also \\x0b \\x0c \\x1c-\\x1e \\x85 \\r) must not turn
    into a skip of another directory (here the package 'pkg', which would be packed without its bytecode)."""
    import subprocess
    import sys

    from poncho_wq.engines.bytecode import compile_tree

    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = "lib/python{}.{}/site-packages".format(*sys.version_info[:2])
    for rel in ("pkg/__init__.py", "pkg\u2028x/__init__.py", "pkg\u2028x/tests/test_a.py"):
        path = prefix / site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("X = 1\n")
    compile_tree(str(prefix), skip={site + "/pkg\u2028x/tests"})
    assert os.listdir(str(prefix / site / "pkg" / "__pycache__"))
    assert os.listdir(str(prefix / site / "pkg\u2028x" / "__pycache__"))
    assert not os.path.exists(str(prefix / site / "pkg\u2028x" / "tests" / "__pycache__"))


def _venv(tmp_path):
    import subprocess
    import sys

    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    return prefix, prefix / "lib/python{}.{}/site-packages".format(*sys.version_info[:2])


def _waiting_for_input(pid, seconds=20):
    """Whether process *pid* is blocked reading its stdin pipe (its start is over), within *seconds*."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open("/proc/{}/wchan".format(pid)) as f:
                if "pipe" in f.read():
                    return True
        except OSError:
            return False
        time.sleep(0.02)
    return False


def test_a_compiler_started_before_the_install_sees_what_the_install_wrote(tmp_path):
    """start_early starts the compile script before the installer writes site-packages (issue 27: the start is
    hidden behind uv). What the installer writes afterwards is still seen: a package, and a directory that only a
    .pth file written after the start puts on sys.path. The script reads the site directories when its input
    comes (started with -S; site.main() then), not at its start."""
    from poncho_wq.engines import bytecode
    from poncho_wq.progress import as_progress

    prefix, site = _venv(tmp_path)
    with bytecode.early_compilers():
        bytecode.start_early(str(prefix))
        tool = bytecode._EARLY.get()[str(prefix)]
        assert _waiting_for_input(tool.proc.pid), "the compile script did not start and wait for its input"
        (site / "pkg").mkdir()
        (site / "pkg" / "__init__.py").write_text("X = 1\n")
        (prefix / "extra").mkdir()
        (prefix / "extra" / "mod.py").write_text("Y = 2\n")
        (site / "extra.pth").write_text(str(prefix / "extra") + "\n")
        bytecode.compile_prefix(str(prefix), as_progress(None), None)
        assert tool.proc is None  # taken and finished
    assert os.listdir(str(site / "pkg" / "__pycache__"))
    assert os.listdir(str(prefix / "extra" / "__pycache__"))


def test_a_compiler_started_for_a_build_that_fails_is_stopped(tmp_path):
    """A build that fails after start_early (uv could not install) leaves no compile script waiting."""
    from poncho_wq.engines import bytecode

    prefix, _ = _venv(tmp_path)
    with pytest.raises(RuntimeError):
        with bytecode.early_compilers():
            bytecode.start_early(str(prefix))
            tool = bytecode._EARLY.get()[str(prefix)]
            proc = tool.proc
            raise RuntimeError("the installer failed")
    assert proc.returncode is not None  # killed and reaped
    assert tool.proc is None
    with bytecode.early_compilers(enabled=False):  # a cross-architecture build compiles nothing: nothing starts
        bytecode.start_early(str(prefix))
        assert bytecode._EARLY.get() is None
