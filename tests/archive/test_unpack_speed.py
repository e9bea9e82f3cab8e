"""Smaller cold unpacks (issue 14): packages' test directories are left out of environments unless code that stays
imports them, the user's own (path/URL-installed) projects keep theirs, and PONCHO_WQ_KEEP_TESTS=1 keeps all.

Real portable prefix (six from PyPI) with hand-made packages added to its site-packages, real packer, real run
shim: the packages left in the archive still import on the unpacked environment."""

import os
import subprocess
import sys
import tarfile

import pytest

from poncho_wq.engines import build_prefix, cache_key
from poncho_wq.archive.pack import pack_prefix
from poncho_wq.shim import shim_path

PY = "python{}.{}".format(*sys.version_info[:2])


def write(root, rel, text=""):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    root = tmp_path_factory.mktemp("unpack") / "prefix"
    build_prefix({"pip": ["six"]}, str(root))
    site = "lib/{}/site-packages/".format(PY)
    # plain: its tests are never imported by its code -> left out (also a nested sub/test directory)
    write(root, site + "plain/__init__.py", "VALUE = 1\n")
    write(root, site + "plain/tests/__init__.py")
    write(root, site + "plain/tests/test_value.py", "import plain\n")
    write(root, site + "plain/sub/__init__.py")
    write(root, site + "plain/sub/test/test_sub.py", "")
    write(root, site + "plain/testing.py", "HELP = 2\n")  # not a test directory
    # uses: imports its own tests at import time (like mpmath) -> kept, and what that test dir imports is kept too
    write(root, site + "uses/__init__.py", "from .tests import runner\n")
    write(root, site + "uses/tests/__init__.py")
    write(root, site + "uses/tests/runner.py", "from uses.sub.tests import data\n")
    write(root, site + "uses/sub/__init__.py")
    write(root, site + "uses/sub/tests/__init__.py")
    write(root, site + "uses/sub/tests/data.py", "X = 3\n")
    write(root, site + "uses/other/__init__.py")
    write(root, site + "uses/other/tests/test_o.py", "")
    # mine: installed from a local path (direct_url.json): the user's own project keeps its tests
    write(root, site + "mine/__init__.py")
    write(root, site + "mine/tests/test_mine.py", "")
    write(root, site + "mine-1.0.dist-info/direct_url.json", '{"url": "file:///src/mine", "dir_info": {}}')
    write(root, site + "mine-1.0.dist-info/RECORD", "mine/__init__.py,,\nmine/tests/test_mine.py,,\n"
                                                    "mine-1.0.dist-info/RECORD,,\n")
    # a top-level package named tests is somebody's code
    write(root, site + "tests/__init__.py", "")
    return root


def members(path):
    with tarfile.open(path) as tar:
        return {m.name for m in tar}


def test_test_dirs_left_out_unless_imported_and_importable_after_unpack(prefix, tmp_path, monkeypatch):
    monkeypatch.delenv("PONCHO_WQ_KEEP_TESTS", raising=False)
    out = tmp_path / "env.tar.gz"
    pack_prefix(str(prefix), str(out))
    again = tmp_path / "again.tar.gz"
    pack_prefix(str(prefix), str(again), n_threads=1)
    assert out.read_bytes() == again.read_bytes()  # still reproducible
    names = members(out)
    site = "lib/{}/site-packages/".format(PY)
    for gone in ("plain/tests/test_value.py", "plain/tests/__init__.py", "plain/sub/test/test_sub.py",
                 "uses/other/tests/test_o.py"):
        assert site + gone not in names
    for kept in ("plain/__init__.py", "plain/testing.py", "uses/tests/runner.py", "uses/sub/tests/data.py",
                 "mine/tests/test_mine.py", "tests/__init__.py", "six.py"):
        assert site + kept in names
    # What stays imports on a worker, through the run shim (the relocation records name no dropped file).
    env = {"PATH": "/usr/bin:/bin", "PONCHO_ENV_DIR": str(tmp_path / "root"), "HOME": str(tmp_path)}
    r = subprocess.run(["sh", shim_path(), "-e", str(out), "--", "python3", "-c",
                        "import plain, plain.testing, uses, six; print(uses.runner.data.X)"],
                       env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"


def test_keep_tests_setting_keeps_everything_and_changes_the_cache_key(prefix, tmp_path, monkeypatch):
    spec = {"pip": ["six"]}
    monkeypatch.delenv("PONCHO_WQ_KEEP_TESTS", raising=False)
    default_key = cache_key(spec, engine="portable", python=sys.executable)
    pruned = tmp_path / "pruned.tar.gz"
    pack_prefix(str(prefix), str(pruned))
    monkeypatch.setenv("PONCHO_WQ_KEEP_TESTS", "1")
    assert cache_key(spec, engine="portable", python=sys.executable) != default_key
    full = tmp_path / "full.tar.gz"
    pack_prefix(str(prefix), str(full))
    site = "lib/{}/site-packages/".format(PY)
    assert members(full) - members(pruned) == {
        site + p for p in ("plain/tests/__init__.py", "plain/tests/test_value.py", "plain/sub/test/test_sub.py",
                           "uses/other/tests/test_o.py")}


def test_the_bytecode_step_leaves_the_dropped_test_dirs_alone(prefix, tmp_path, monkeypatch):
    """Issue 27: the test directories the packer leaves out are decided before the bytecode step, which does not
    compile them (pandas: half its bytecode time); the kept ones (imported by code) are compiled."""
    from poncho_wq.archive.pack import dropped_test_dirs
    from poncho_wq.engines.bytecode import compile_tree

    monkeypatch.delenv("PONCHO_WQ_KEEP_TESTS", raising=False)
    site = "lib/{}/site-packages/".format(PY)
    dropped = dropped_test_dirs(str(prefix))
    assert dropped == {site + d for d in ("plain/tests", "plain/sub/test", "uses/other/tests")}
    assert dropped_test_dirs(str(prefix), keep_tests=True) == set()
    compile_tree(str(prefix), skip=dropped)
    for d in dropped:
        assert not os.path.exists(os.path.join(str(prefix), d, "__pycache__")), d
    for d in ("uses/tests", "uses/sub/tests", "plain"):
        assert os.listdir(os.path.join(str(prefix), site, d, "__pycache__")), d
    # the packer handed that decision leaves out what it would have decided itself: the same bytes
    decided, given = tmp_path / "decided.tar.gz", tmp_path / "given.tar.gz"
    pack_prefix(str(prefix), str(decided))
    pack_prefix(str(prefix), str(given), dropped_tests=dropped)
    assert decided.read_bytes() == given.read_bytes()


@pytest.mark.parametrize("where", ["site-packages linked", "glob [characters]"])
def test_the_test_dirs_the_bytecode_step_skips_are_those_the_packer_drops(tmp_path, where, monkeypatch):
    """dropped_test_dirs decides on the files conda-pack lists, which follows no symlink below the prefix: a
    site-packages that is a symlink is one member to the packer, whose real files (here inside the prefix) are packed
    with their tests, so these must be compiled as before. A prefix path holding glob characters is a path."""
    from conda_pack.core import load_files

    from poncho_wq.archive.pack import _Listed, dropped_test_dirs, prune_tests

    monkeypatch.delenv("PONCHO_WQ_KEEP_TESTS", raising=False)
    root = tmp_path / ("a[1]" if where.startswith("glob") else "p") / "prefix"
    real = "lib/{}/site-packages/".format(PY) if where.startswith("glob") else "real/site/"
    write(root, real + "pkg/__init__.py", "X = 1\n")
    write(root, real + "pkg/tests/test_x.py", "import pkg\n")
    if not where.startswith("glob"):
        os.makedirs(str(root / "lib" / PY))
        os.symlink("../../real/site", str(root / "lib" / PY / "site-packages"))
    listed = [_Listed(os.path.join(str(root), t), t) for t in sorted(load_files(str(root)))]
    packer_drops = {os.path.dirname(f.target) for f in prune_tests(listed)[1]}
    assert dropped_test_dirs(str(root)) == packer_drops


def test_the_import_scan_finds_what_finditer_finds_and_reads_each_line_once():
    """pack._imports gives _IMPORT.finditer's matches (strings, comments, CRLF, parentheses across lines, ';') and
    looks at each byte a bounded number of times: a one-line module holding 'import' many times (a bundled script
    in a string) was scanned back to its start once per time (quadratic: 2 MB, 2.6 s; 10 MB, a minute)."""
    import random

    from poncho_wq.archive.pack import _IMPORT, _imports

    toks = [b"import", b"from", b" ", b"\t", b"\n", b"\r\n", b".", b"a", b"tests", b"(", b")", b"#", b";", b",",
            b"\\", b"importlib", b"from . import ", b"'''", b'"', b"\x0c"]
    rng = random.Random(27)
    for _ in range(20000):
        data = b"".join(rng.choice(toks) for _ in range(rng.randint(0, 30)))
        assert [m.span() for m in _imports(data)] == [m.span() for m in _IMPORT.finditer(data)], data

    class Counted(bytes):
        scanned = 0

        def find(self, sub, start=0, end=None):
            found = bytes.find(self, sub, start, end)
            Counted.scanned += (len(self) if found == -1 else found + len(sub)) - start
            return found

        def rfind(self, sub, start=0, end=None):
            found = bytes.rfind(self, sub, start, end)
            Counted.scanned += (len(self) if end is None else end) - max(found, start)
            return found

    line = b'JS = "' + b'import{a as b}from"./x.js";' * 20000 + b'"  # test\nimport tests\n'
    assert [m.group(0) for m in _imports(Counted(line))] == [b"import tests"]
    assert Counted.scanned <= 3 * len(line)
