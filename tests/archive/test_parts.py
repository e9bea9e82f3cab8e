"""Cutting a packed environment into content-addressed parts (poncho_wq/archive/parts.py, issue 28): which member
goes where, reproducible names and bytes, the same distribution in two environments giving the same part, the
build prefix replaced by a placeholder (and RECORD rows re-hashed to match), the index."""

import base64
import hashlib
import json
import os
import shutil
import tarfile

import pytest

from helpers.partenv import make_env
from poncho_wq.archive.parts import cut_parts, indexed_part_names, load_index, placeholder_for

BIG = 5_000_000


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    d = tmp_path_factory.mktemp("envs")
    return {
        "a": make_env(d, "a1", {"bigpkg": ("1.0", BIG), "small": ("2.0", 1000), "tiny": ("0.1", 10)}),
        "b": make_env(d, "b2", {"bigpkg": ("1.0", BIG), "small": ("2.1", 1000)}),
        "c": make_env(d, "c3", {"bigpkg": ("1.1", BIG), "small": ("2.0", 1000), "tiny": ("0.1", 10)}),
    }


def _members(path):
    with tarfile.open(path) as tf:
        return [m.name for m in tf]


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_parts_partition_the_tarball_by_role(envs, tmp_path):
    parts = cut_parts(envs["a"], str(tmp_path), part_mb=4)
    assert [p.role for p in parts] == ["env", "interpreter", "dist:bigpkg", "group"]
    own, interp, big, group = (_members(p.path) for p in parts)
    assert own[0] == "poncho/floor"  # the shim's floor check reads the start of the own part
    assert "bin/conda-unpack" in own and "bin/bigpkg-cli" in own and "conda-meta/history" in own
    assert set(interp) == {"bin/python", "lib/libpython3.11.so.1.0", "lib/python3.11/os_stub.py",
                           "lib/python3.11/encodings/stub.py"}
    assert all(m.startswith(("lib/python3.11/site-packages/bigpkg/", "lib/python3.11/site-packages/bigpkg-1.0"))
               for m in big) and len(big) == 6
    assert {m.split("/")[3].split("-")[0] for m in group} == {"small", "tiny"}
    every = own + interp + big + group
    assert sorted(every) == sorted(_members(envs["a"])) and len(set(every)) == len(every)
    for p in parts:
        assert p.name == "part-{}.tar.gz".format(_tar_sha(p.path)[:32])
        assert not os.stat(p.path).st_mode & 0o222


def _tar_sha(path):
    import gzip

    with gzip.open(path) as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("use_pigz", [None, False])
def test_cutting_is_reproducible(envs, tmp_path, use_pigz, monkeypatch):
    one = cut_parts(envs["a"], str(tmp_path / "one"), use_pigz=use_pigz)
    if hasattr(os, "sched_getaffinity"):  # pigz's bytes must not depend on its thread count either
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    two = cut_parts(envs["a"], str(tmp_path / "two"), use_pigz=use_pigz)
    assert [p.name for p in one] == [p.name for p in two]
    assert [_sha(p.path) for p in one] == [_sha(p.path) for p in two]
    for p in one:  # a plain gzip file: no name, no time (a stored time would make the bytes depend on the clock)
        with open(p.path, "rb") as f:
            header = f.read(10)
        assert header[:3] == b"\x1f\x8b\x08" and header[3] == 0 and header[4:8] == b"\0\0\0\0", header


@pytest.mark.skipif(not shutil.which("pigz"), reason="pigz not installed")
def test_parts_are_compressed_by_pigz_when_present(envs, tmp_path):
    """pigz and zlib give different bytes for the same tar: the parts are pigz's, named by the same content."""
    fast = cut_parts(envs["a"], str(tmp_path / "pigz"))
    slow = cut_parts(envs["a"], str(tmp_path / "zlib"), use_pigz=False)
    assert [p.name for p in fast] == [p.name for p in slow]
    assert [_sha(p.path) for p in fast] != [_sha(p.path) for p in slow]
    for p in fast:
        assert _tar_sha(p.path)[:32] == p.name[len("part-"):][:32]


def test_the_same_distribution_in_two_environments_is_the_same_part(envs, tmp_path):
    a, b, c = (cut_parts(envs[k], str(tmp_path)) for k in "abc")
    name = {k: {p.role: p.name for p in parts} for k, parts in zip("abc", (a, b, c))}
    assert name["a"]["dist:bigpkg"] == name["b"]["dist:bigpkg"] != name["c"]["dist:bigpkg"]
    assert name["a"]["interpreter"] == name["b"]["interpreter"] == name["c"]["interpreter"]
    assert name["a"]["group"] == name["c"]["group"] != name["b"]["group"]
    # The own part holds the console scripts and conda-unpack's records: b has no tiny, so its own part differs
    # (a and c list the same files: theirs may well be one part, content-addressed like any other).
    assert name["a"]["env"] != name["b"]["env"]


def test_a_part_already_in_the_cache_is_not_compressed_again(envs, tmp_path, monkeypatch):
    """b shares a's bigpkg part (5 MB, the bulk): cutting b after a compresses b's other parts only."""
    import gzip

    from poncho_wq.archive import parts as parts_mod

    cut_parts(envs["a"], str(tmp_path), use_pigz=False)
    compressed = []

    class Counting(gzip.GzipFile):
        def write(self, data):
            compressed.append(len(data))
            return super().write(data)

    monkeypatch.setattr(parts_mod.gzip, "GzipFile", Counting)
    b = cut_parts(envs["b"], str(tmp_path), use_pigz=False)
    assert 0 < sum(compressed) < BIG // 2
    assert sum(p.bytes for p in b) > BIG
    assert not [n for n in os.listdir(parts_mod.parts_dir(str(tmp_path))) if n.endswith(".tmp")]


def test_files_of_conda_packages_go_to_their_package_s_part_not_the_own_part(tmp_path):
    """conda's shared libraries outside site-packages: a large package's in a part of its own, a small one's in
    the group part, those of a package that installs a Python distribution in that distribution's part, python's
    in the interpreter part; the conda-meta records themselves stay in the own part."""
    site = "lib/python3.11/site-packages/"
    tarball = make_env(tmp_path, "d4", {"bigpkg": ("1.0", BIG), "small": ("2.0", 1000)}, conda={
        "libbig": {"lib/libbig.so.1": BIG, "include/big.h": 100},
        "libsmall": {"lib/libsmall.so": 1000},
        "bigpkg": {site + "bigpkg/__init__.py": None, "lib/libbigpkg_helper.so": 2000},
        "python": {"bin/python": None, "share/man/man1/python3.1": 50},
    })
    parts = cut_parts(tarball, str(tmp_path / "cache"))
    where = {m: p.role for p in parts for m in _members(p.path)}
    assert where["lib/libbig.so.1"] == where["include/big.h"] == "dist:libbig"
    assert where["lib/libsmall.so"] == "group"
    assert where["lib/libbigpkg_helper.so"] == where[site + "bigpkg/blob.bin"] == "dist:bigpkg"
    assert where["share/man/man1/python3.1"] == where["bin/python"] == "interpreter"
    assert {where[m] for m in where if m.startswith("conda-meta/")} == {"env"}
    assert where["bin/conda-unpack"] == "env"
    own = next(p for p in parts if p.role == "env")
    assert own.bytes < 100_000  # the 5 MB library is not in it


@pytest.mark.parametrize("use_pigz", [None, False])
def test_a_failed_cut_leaves_no_temp_file_and_no_compressor(envs, tmp_path, monkeypatch, use_pigz):
    """A write failing half-way through the second pass (a full disk, say): BuildError, and no part, temp tar
    or temp gzip left in the cache, no index."""
    from poncho_wq.archive import parts as parts_mod
    from poncho_wq.errors import BuildError

    real, calls = parts_mod._copy_info, []

    def failing(info):
        calls.append(info.name)
        if len(calls) == 12:
            raise OSError(28, "No space left on device")
        return real(info)

    monkeypatch.setattr(parts_mod, "_copy_info", failing)
    with pytest.raises(BuildError, match="No space left"):
        cut_parts(envs["a"], str(tmp_path), use_pigz=use_pigz)
    assert os.listdir(parts_mod.parts_dir(str(tmp_path))) == []


def test_a_failing_pigz_fails_the_cut_cleanly(envs, tmp_path, monkeypatch):
    """A pigz that fails (here: a broken pigz first on PATH, a real process) is a BuildError naming it, with its
    message; no temp file is left (neither the parts' tars nor the gzip being written), no index written."""
    from poncho_wq.archive import parts as parts_mod
    from poncho_wq.errors import BuildError

    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pigz"
    fake.write_text("#!/bin/sh\ncat >/dev/null\necho 'pigz: write error (No space left on device)' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "{}:{}".format(bindir, os.environ["PATH"]))
    with pytest.raises(BuildError, match="pigz failed: pigz: write error"):
        cut_parts(envs["a"], str(tmp_path / "cache"))
    assert os.listdir(parts_mod.parts_dir(str(tmp_path / "cache"))) == []


def test_the_build_prefix_becomes_a_placeholder_of_its_length(envs, tmp_path):
    parts = {p.role: p for p in cut_parts(envs["a"], str(tmp_path))}
    with tarfile.open(envs["a"]) as tf:
        original = tf.extractfile("lib/python3.11/site-packages/bigpkg/where.txt").read().decode().strip()
    holder = placeholder_for(original)
    assert len(holder) == len(original) and "build-" not in holder
    with tarfile.open(parts["dist:bigpkg"].path) as tf:
        where = tf.extractfile("lib/python3.11/site-packages/bigpkg/where.txt").read()
        record = tf.extractfile("lib/python3.11/site-packages/bigpkg-1.0.dist-info/RECORD").read().decode()
    assert where.decode().strip() == holder
    row = [r for r in record.splitlines() if r.startswith("bigpkg/where.txt,")][0]
    digest = base64.urlsafe_b64encode(hashlib.sha256(where).digest()).rstrip(b"=").decode()
    assert row == "bigpkg/where.txt,sha256={},{}".format(digest, len(where))
    with tarfile.open(parts["env"].path) as tf:
        unpack = tf.extractfile("bin/conda-unpack").read().decode()
    assert original not in unpack and repr(holder) in unpack


def test_small_distributions_share_the_group_part_below_the_threshold(envs, tmp_path):
    parts = cut_parts(envs["a"], str(tmp_path), part_mb=100)
    assert [p.role for p in parts] == ["env", "interpreter", "group"]


def test_the_index_lists_parts_in_order_and_is_reused(envs, tmp_path):
    parts = cut_parts(envs["a"], str(tmp_path))
    env_id = os.path.basename(envs["a"])[:-len(".tar.gz")]
    with open(tmp_path / "parts" / (env_id + ".parts.json")) as f:
        doc = json.load(f)
    assert [r["name"] for r in doc["parts"]] == [p.name for p in parts]
    assert load_index(str(tmp_path), env_id) == parts
    assert indexed_part_names(str(tmp_path)) == {env_id: [p.name for p in parts]}
    # A part gone: the index no longer stands, and cutting again makes it again.
    os.chmod(parts[2].path, 0o644)
    os.unlink(parts[2].path)
    assert load_index(str(tmp_path), env_id) is None
    assert cut_parts(envs["a"], str(tmp_path)) == parts and os.path.isfile(parts[2].path)


def test_cache_lists_parts_and_prune_never_removes_a_listed_one(envs, tmp_path):
    from poncho_wq.archive.cache import Cache

    cache = Cache(str(tmp_path))
    os.makedirs(cache.envs)
    owned = {}
    for k in "ab":
        entry = os.path.join(cache.envs, os.path.basename(envs[k]))
        with open(envs[k], "rb") as src, open(entry, "wb") as dst:
            dst.write(src.read())
        owned[k] = {p.name[:-len(".tar.gz")] for p in cut_parts(entry, str(tmp_path))}
    old = 1_000_000_000
    for p in os.listdir(os.path.join(str(tmp_path), "parts")):
        os.utime(os.path.join(str(tmp_path), "parts", p), (old, old))  # every part long unused
    parts = {e.key for e in cache.layer_entries() if e.key.startswith("part-")}
    assert parts == owned["a"] | owned["b"]
    assert cache.prune(max_age_seconds=3600, dry_run=True) == []  # old, but listed by live environments
    a_entry = os.path.join(cache.envs, os.path.basename(envs["a"]))
    os.utime(a_entry, (old, old))
    removed = {e.key for e in cache.prune(max_age_seconds=3600)}
    a_key = os.path.basename(envs["a"])[len("env-"):-len(".tar.gz")]
    assert removed == {a_key} | (owned["a"] - owned["b"])
    left = {e.key for e in cache.layer_entries() if e.key.startswith("part-")}
    assert left == owned["b"]  # the shared ones stay: b's index lists them
    assert indexed_part_names(str(tmp_path)).keys() == {os.path.basename(envs["b"])[:-len(".tar.gz")]}


def test_the_task_plan_sends_parts_in_direct_and_url_mode(envs, tmp_path, monkeypatch):
    from poncho_wq.assemble.environment import Environment
    from poncho_wq.deliver.publish import Distribution
    from poncho_wq.task import plan_distribution, wrap_command

    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    env = Environment.from_tarball(envs["a"])
    name = os.path.basename(envs["a"])
    assert plan_distribution(env, None, "direct").parts == ()  # off by default: the tarball
    monkeypatch.setenv("PONCHO_WQ_PARTS", "1")
    direct = plan_distribution(env, None, "direct")
    parts = cut_parts(envs["a"], str(tmp_path / "cache"))
    assert direct.parts == tuple(p.name for p in parts) and direct.env == name
    assert direct.files == {p.name: p.path for p in parts}
    cmd = wrap_command("true", direct.env, None, None, (), parts=direct.parts)
    assert cmd.startswith("./poncho_package_run -e {} --part {}".format(name, parts[0].name))
    url = plan_distribution(env, None, Distribution("url", str(tmp_path / "pub"), "http://h:1/p"))
    assert url.parts == direct.parts and set(url.urls) == set(direct.files) and url.files == {}
    assert sorted(os.listdir(tmp_path / "pub")) == sorted(direct.files)  # each part published by its name
    shared = plan_distribution(env, None, Distribution("shared", str(tmp_path / "shared"), "file:///mnt/s"))
    # shared: each part published by its name; the shim gets their shared paths and assembles in the shared root
    assert shared.env == name and shared.parts == tuple("/mnt/s/" + p for p in direct.parts)
    assert shared.env_dir == "/mnt/s/envs" and shared.files == {} and shared.urls == {}
    assert sorted(os.listdir(tmp_path / "shared")) == sorted(direct.files)
    cmd = wrap_command("true", shared.env, None, shared.env_dir, (), parts=shared.parts)
    assert "PONCHO_ENV_DIR=/mnt/s/envs " in cmd and " -e {} --part /mnt/s/{}".format(name, parts[0].name) in cmd
    monkeypatch.delenv("PONCHO_WQ_PARTS")
    whole = plan_distribution(env, None, Distribution("shared", str(tmp_path / "shared2"), "file:///mnt/s"))
    assert whole.parts == () and whole.env == "/mnt/s/" + name  # off: the single tarball
