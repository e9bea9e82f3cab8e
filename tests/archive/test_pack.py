"""Packing with conda-pack's machinery and our deterministic tar writer: reproducible bytes, relocation records."""

import gzip
import hashlib
import os
import subprocess
import sys
import tarfile

import pytest

from poncho_wq.engines import build_prefix
from poncho_wq.errors import PonchoError
from poncho_wq.archive.pack import fixed_mtime, pack_prefix


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """A real portable prefix (six from PyPI), plus an unmanaged text file that mentions the build prefix."""
    root = tmp_path_factory.mktemp("pack") / "prefix"
    build_prefix({"pip": ["six"]}, str(root))
    (root / "share").mkdir()
    (root / "share" / "where.txt").write_text("installed at {}/lib\n".format(root))
    (root / "share" / "empty-dir").mkdir()
    return root


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_same_prefix_packed_twice_is_byte_identical(prefix, tmp_path):
    a, b, c = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz", tmp_path / "c.tar.gz"
    pack_prefix(str(prefix), str(a), n_threads=2)
    os.utime(prefix / "bin" / "run_in_env")  # a touched file must not change the archive
    pack_prefix(str(prefix), str(b), n_threads=1)
    assert sha256(a) == sha256(b)
    # The in-process compressor (no pigz) is reproducible too, for any thread count.
    pack_prefix(str(prefix), str(c), n_threads=2, use_pigz=False)
    d = tmp_path / "d.tar.gz"
    pack_prefix(str(prefix), str(d), n_threads=1, use_pigz=False)
    assert sha256(c) == sha256(d)
    assert gzip.decompress(a.read_bytes()) == gzip.decompress(c.read_bytes())


@pytest.mark.parametrize("use_pigz", [None, False])
def test_members_sorted_owner_root_fixed_mtime(prefix, tmp_path, use_pigz):
    out = tmp_path / "env.tar.gz"
    size = pack_prefix(str(prefix), str(out), use_pigz=use_pigz)
    assert size == os.path.getsize(out)
    raw = out.read_bytes()
    assert raw[:3] == b"\x1f\x8b\x08" and raw[4:8] == b"\0\0\0\0"  # no timestamp in the gzip header
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    # poncho/floor first (the run shim reads it before unpacking), poncho/lock.json second (poncho_wq inspect reads
    # it without decompressing the rest), then sorted.
    assert names[:2] == ["poncho/floor", "poncho/lock.json"] and names[2:] == sorted(names[2:])
    assert len(names) == len(set(names))
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert {m.mtime for m in members} == {fixed_mtime()}
    assert "share/empty-dir" in names and "bin/conda-unpack" in names
    assert not any(n.startswith("/") or ".." in n.split("/") for n in names)
    assert os.listdir(tmp_path) == ["env.tar.gz"]


def test_conda_unpack_rewrites_only_files_mentioning_prefix(prefix, tmp_path):
    out = tmp_path / "env.tar.gz"
    pack_prefix(str(prefix), str(out))
    with tarfile.open(out) as tar:
        script = tar.extractfile("bin/conda-unpack").read().decode()
    assert "share/where.txt" in script
    assert "os.py" not in script  # the stdlib does not mention the prefix: no records, nothing to rescan
    env = tmp_path / "moved"
    env.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(env)], check=True)
    r = subprocess.run([str(env / "bin" / "python"), str(env / "bin" / "conda-unpack")],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert (env / "share" / "where.txt").read_text() == "installed at {}/lib\n".format(env)


def test_missing_history_is_a_clear_error(tmp_path):
    p = tmp_path / "p"
    (p / "conda-meta").mkdir(parents=True)
    (p / "bin").mkdir()
    (p / "bin" / "tool").write_text("#!/bin/sh\n")
    with pytest.raises(PonchoError) as e:
        pack_prefix(str(p), str(tmp_path / "x.tar.gz"))
    assert "conda-meta/history" in str(e.value) and e.value.exit_code == 3
    assert not (tmp_path / "x.tar.gz").exists()


def test_not_a_prefix_is_a_clear_error(tmp_path):
    with pytest.raises(PonchoError) as e:
        pack_prefix(str(tmp_path / "nowhere"), str(tmp_path / "x.tar.gz"))
    assert "nowhere" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_pack_level_and_threads_are_honoured(prefix, tmp_path):
    fast, small = tmp_path / "fast.tar.gz", tmp_path / "small.tar.gz"
    pack_prefix(str(prefix), str(fast), compress_level=1, n_threads=2)
    pack_prefix(str(prefix), str(small), compress_level=9, n_threads=2)
    assert os.path.getsize(small) < os.path.getsize(fast)
    assert gzip.decompress(fast.read_bytes()) == gzip.decompress(small.read_bytes())


def test_conda_pack_loads_early_in_a_thread_of_a_fresh_process():
    """load_conda_pack_early (called while uv installs) leaves conda-pack and the formats module Packer.finish
    imports loaded, so that the pack step does not import them after the install."""
    code = ("import sys; from poncho_wq.archive.pack import load_conda_pack_early; "
            "assert 'conda_pack' not in sys.modules; t = load_conda_pack_early(); t.join(60); "
            "print(t.is_alive(), sorted(m for m in ('conda_pack.core', 'conda_pack.formats') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "['conda_pack.core',", "'conda_pack.formats']"]
