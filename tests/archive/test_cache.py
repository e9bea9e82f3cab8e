"""The content-addressed cache: hits without rebuilding, one build for concurrent requests, crash safety, CLI."""

import json
import os
import signal
import subprocess
import time

import pytest

from helpers.cli import run_cli, script, SCRIPTS
from helpers.paths import link_interpreter_bases, settled_listdir
from poncho_wq.engines import build_prefix, cache_key, create
from poncho_wq.archive.cache import Cache, default_cache_dir, tarball_name
from poncho_wq.errors import PonchoError
from poncho_wq.identity import content_mtime
from poncho_wq.archive.pack import pack_prefix

SPEC = {"pip": ["six"]}


def builds(cache_dir):
    path = os.path.join(str(cache_dir), "builds.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def tarballs(cache_dir):
    envs = os.path.join(str(cache_dir), "envs")
    return sorted(n for n in os.listdir(envs) if n.endswith(".tar.gz")) if os.path.isdir(envs) else []


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(SPEC))
    return p


def test_second_request_is_a_hit_without_building(tmp_path, spec_file, prepared_cache):
    cache = link_interpreter_bases(prepared_cache, tmp_path / "cache")  # what is counted: the environment's builds
    first = run_cli("poncho_package_create", "--cache-dir", cache, spec_file, tmp_path / "a.tar.gz")
    assert first.returncode == 0, first.stderr
    second = run_cli("poncho_package_create", "--cache-dir", cache, spec_file, tmp_path / "b.tar.gz")
    assert second.returncode == 0, second.stderr
    assert "cache hit" in second.stderr and "pip done" not in second.stderr
    assert len(builds(cache)) == 1
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    key = cache_key(SPEC, engine="portable")
    assert tarballs(cache) == [tarball_name(key)] == ["env-{}.tar.gz".format(key[:32])]


def test_api_hit_does_not_run_the_builder(tmp_path):
    prefix = tmp_path / "prefix"
    build_prefix(SPEC, str(prefix))
    calls = []

    def builder(tmp_output):
        calls.append(tmp_output)
        pack_prefix(str(prefix), tmp_output)

    cache = Cache(str(tmp_path / "cache"))
    key = cache_key(SPEC, engine="portable")
    path, hit = cache.build(key, builder, {"summary": "six"})
    assert not hit and len(calls) == 1 and cache.get(key) == path == cache.path_for(key)
    path2, hit2 = cache.build(key, builder, {"summary": "six"})
    assert hit2 and path2 == path and len(calls) == 1
    (entry,) = cache.entries()
    assert entry.key == key and entry.size == os.path.getsize(path) and entry.summary == "six"
    # The scratch is renamed away at once after publishing and removed in the background (fsutil.remove_later).
    assert [n for n in os.listdir(cache.tmp) if not n.startswith("trash-build-")] == []
    assert settled_listdir(cache.tmp) == []


def test_concurrent_requests_build_once(tmp_path, spec_file, prepared_cache):
    cache = link_interpreter_bases(prepared_cache, tmp_path / "cache")
    env = dict(os.environ, PATH=SCRIPTS + os.pathsep + os.environ["PATH"])
    procs = [subprocess.Popen([script("poncho_package_create"), "--cache-dir", str(cache), str(spec_file),
                               str(tmp_path / "out{}.tar.gz".format(i))],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    assert len(builds(cache)) == 1
    assert len(tarballs(cache)) == 1
    assert (tmp_path / "out0.tar.gz").read_bytes() == (tmp_path / "out1.tar.gz").read_bytes()


def test_build_killed_midway_leaves_nothing_used_later(tmp_path, spec_file):
    cache = tmp_path / "cache"
    env = dict(os.environ, PATH=SCRIPTS + os.pathsep + os.environ["PATH"])
    proc = subprocess.Popen([script("poncho_package_create"), "--cache-dir", str(cache), str(spec_file),
                             str(tmp_path / "out.tar.gz")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    scratch_lib = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        tmp = cache / "tmp"
        dirs = os.listdir(tmp) if tmp.is_dir() else []
        if dirs and (tmp / dirs[0] / "prefix" / "lib").is_dir():
            scratch_lib = tmp / dirs[0]
            break
        time.sleep(0.005)
    assert scratch_lib is not None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tarballs(cache) == [] and not (tmp_path / "out.tar.gz").exists()
    assert scratch_lib.exists()  # the dead build's leftovers, which no lookup reads

    again = run_cli("poncho_package_create", "--cache-dir", cache, spec_file, tmp_path / "out.tar.gz")
    assert again.returncode == 0, again.stderr
    assert "interrupted build" in again.stderr
    assert len(builds(cache)) == 1 and len(tarballs(cache)) == 1
    assert not scratch_lib.exists()
    unpacked = tmp_path / "env"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(tmp_path / "out.tar.gz"), "-C", str(unpacked)], check=True)
    r = subprocess.run([str(unpacked / "bin" / "python"), "-c", "import six; print(six.__file__)"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout.startswith(str(unpacked)), r.stderr


def test_failed_build_leaves_no_entry_and_frees_the_lock(tmp_path, prepared_cache):
    cache = Cache(str(link_interpreter_bases(prepared_cache, tmp_path / "cache")))
    with pytest.raises(PonchoError) as e:
        create({"pip": ["poncho-wq-no-such-dist==1.0"]}, cache_dir=cache.root)
    assert e.value.exit_code == 3 and "poncho-wq-no-such-dist" in str(e.value)
    assert cache.entries() == [] and os.listdir(cache.tmp) == []
    result = create(SPEC, cache_dir=cache.root)  # the same cache still builds (no stuck lock)
    assert not result.cache_hit and os.path.dirname(result.path) == cache.envs


def test_cache_cli_list_rm_prune(tmp_path, spec_file, prepared_cache):
    cache = link_interpreter_bases(prepared_cache, tmp_path / "cache")
    for spec in (SPEC, {"pip": ["attrs"]}):
        spec_file.write_text(json.dumps(spec))
        assert run_cli("poncho_package_create", "-q", "--cache-dir", cache, spec_file,
                       tmp_path / "o.tar.gz").returncode == 0
    listing = run_cli("poncho_wq", "cache", "--cache-dir", cache, "list")
    assert listing.returncode == 0, listing.stderr
    header, *lines, total = listing.stdout.splitlines()  # issue 25: a header and a total around the entries
    assert header.split() == ["HASH", "SIZE", "AGE", "FLOOR", "WHAT"] and total.startswith("total: 2 environments")
    assert len(lines) == 2 and "pip: six" in lines[0] and "pip: attrs" in lines[1]
    six_key = lines[0].split()[0]
    assert tarballs(cache)[0][4:20] == six_key or tarballs(cache)[1][4:20] == six_key

    rm = run_cli("poncho_wq", "cache", "--cache-dir", cache, "rm", six_key[:8])
    assert rm.returncode == 0, rm.stderr
    assert len(tarballs(cache)) == 1
    assert run_cli("poncho_wq", "cache", "--cache-dir", cache, "rm", six_key[:8]).returncode == 1

    os.makedirs(cache / "tmp" / "build-deadbeef")  # leftovers of a dead build: removed by prune
    assert run_cli("poncho_wq", "cache", "--cache-dir", cache, "prune", "--max-size", "1G").returncode == 0
    assert len(tarballs(cache)) == 1 and not (cache / "tmp" / "build-deadbeef").exists()
    r = run_cli("poncho_wq", "cache", "--cache-dir", cache, "prune", "--max-age", "0s")
    assert r.returncode == 0 and "removed 1 entry" in r.stderr
    assert tarballs(cache) == []
    assert run_cli("poncho_wq", "cache", "--cache-dir", cache, "prune", "--max-size", "lots").returncode == 1
    assert run_cli("poncho_wq", "cache", "--cache-dir", cache, "frobnicate").returncode == 1


def test_prune_by_size_removes_oldest_first(tmp_path):
    prefix = tmp_path / "prefix"
    build_prefix(SPEC, str(prefix))
    cache = Cache(str(tmp_path / "cache"))
    for key in ("a" * 64, "b" * 64):
        cache.build(key, lambda out: pack_prefix(str(prefix), out), {"summary": key[:1]})
        time.sleep(0.01)
    size = cache.entries()[0].size
    removed = cache.prune(max_bytes=size)
    assert [e.key for e in removed] == ["a" * 64] and [e.key for e in cache.entries()] == ["b" * 64]


def test_same_bytes_rebuilt_get_the_same_mtime_and_a_fresh_last_use(tmp_path):
    """A rebuild of the same bytes (after rm/prune) has the same mtime, derived from the content (issue 27: TaskVine
    names a workflow-level file by path, size and mtime), other bytes another; the last use `cache list` and
    `prune` go by is still the build (the atime), so a fresh entry is neither shown as old nor pruned."""
    cache = Cache(str(tmp_path / "cache"))
    key, other = "d" * 64, "e" * 64

    def build(k, data):
        start = time.time()
        path, hit = cache.build(k, lambda out: open(out, "wb").write(data), {"summary": k[:1]})
        assert not hit
        return path, start

    path, start = build(key, b"same bytes")
    mtime = os.stat(path).st_mtime_ns
    assert mtime == content_mtime(cache.read_meta(key)["sha256"]) * 10**9
    assert [e.key for e in cache.entries()] == [key] and cache.entries()[0].mtime >= start - 1
    assert cache.build(key, lambda out: pytest.fail("rebuilt a sound entry"))[1]  # still verified as published
    assert cache.prune(max_age_seconds=3600) == []
    cache.remove(key)
    again, start = build(key, b"same bytes")
    assert again == path and os.stat(path).st_mtime_ns == mtime and cache.entries()[0].mtime >= start - 1
    different, _ = build(other, b"other bytes")
    assert os.stat(different).st_mtime_ns != mtime


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == str(tmp_path / "explicit")
    monkeypatch.delenv("PONCHO_WQ_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "poncho_wq")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == str(tmp_path / "home" / ".cache" / "poncho_wq")
    assert cache_key(SPEC, engine="portable") != cache_key({"pip": ["six==1.16.0"]}, engine="portable")
    assert cache_key(SPEC, engine="portable") == cache_key({"pip": ["SIX"]}, engine=None)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a read-only tmpfs (the tests run as root: dev/test.sh)")
def test_rm_and_prune_on_a_read_only_cache_are_one_line_errors(tmp_path):
    # Issue 29: both printed a raw traceback (the key's lock file cannot be created there).
    ro = tmp_path / "ro-cache"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(ro)], check=True)
    try:
        cache = Cache(str(ro))
        key = "c" * 64
        cache.build(key, lambda out: open(out, "wb").write(b"not a real tarball"), {"summary": "x"})
        os.makedirs(os.path.join(str(ro), "code", "files", "d" * 32))
        open(os.path.join(str(ro), "code", "files", "d" * 32, "job.py"), "w").close()
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        for args in (["rm", key[:8]], ["prune", "--max-age", "0s"]):
            r = run_cli("poncho_wq", "cache", "--cache-dir", ro, *args)
            assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
            (line,) = r.stderr.strip().splitlines()
            assert str(ro) in line and "Read-only file system" in line, line
        assert tarballs(ro) == [tarball_name(key)]
    finally:
        subprocess.run(["umount", str(ro)], check=True)
