"""What the build cache hands out and what the CLIs leave behind (issue 11): outputs never share an inode with a
cache entry, damaged entries are rebuilt, write failures are one-line errors, repeated hits and killed builds leave
nothing, numeric options cannot overflow, an output never replaces an input. Real builds, real processes, real
mounts (as root: small and read-only tmpfs), real signals."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from helpers.cli import SCRIPTS, run_cli, script
from helpers.paths import link_interpreter_bases, settled_listdir
from poncho_wq.archive.cache import Cache
from poncho_wq.identity import sha256_file

SPEC = {"pip": ["six"]}
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def builds(cache_dir):
    path = os.path.join(str(cache_dir), "builds.log")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.readlines())


def entry_of(cache_dir):
    (name,) = [n for n in os.listdir(os.path.join(str(cache_dir), "envs")) if n.endswith(".tar.gz")]
    return os.path.join(str(cache_dir), "envs", name)


def one_line_error(r, code, *words):
    """The command failed with *code* and one ``prog: error: ...`` line naming *words*, no traceback."""
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, r.stderr
    for w in words:
        assert w in errors[0], r.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real build of SPEC: ``(spec file, cache dir)``. Tests that damage the cache work on a copy of it."""
    d = tmp_path_factory.mktemp("built")
    spec = d / "spec.json"
    spec.write_text(json.dumps(SPEC))
    r = run_cli("poncho_package_create", "-q", "--cache-dir", d / "cache", spec, d / "first.tar.gz")
    assert r.returncode == 0, r.stderr
    # copied by the tests: not while the build's scratch is still being removed in the background
    assert settled_listdir(d / "cache" / "tmp") == []
    return spec, d / "cache"


@pytest.fixture
def own_cache(built, tmp_path):
    """A copy of the built cache (copy2 keeps modes and mtimes, but every file gets a new inode: the copied
    entry is not the published file, so its first hit is checked by sha256). The interpreter base is hard-linked
    instead, as it stands in the user's cache the damaged entry lives in: a copy gets new inodes, fails the base's
    fingerprint and is prepared again (about 10 s per rebuild here, 30-50 s on a loaded machine, for what
    tests/engines/test_build_speed.py tests on its own). Nothing here writes into the base (read-only files)."""
    cache = tmp_path / "cache"
    shutil.copytree(built[1], cache, ignore=shutil.ignore_patterns("interpreters"))
    return link_interpreter_bases(built[1], cache)


@pytest.fixture
def mounts():
    """Mount small tmpfs file systems for one test, unmounted afterwards (also when the test fails)."""
    done = []

    def mount(path, size="1m", read_only=False):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(path)], check=True)
        done.append(path)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        return path

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", str(path)], check=True)


# -- item 1: cache poisoning through the output ------------------------------------------------------------------

def test_overwriting_the_output_does_not_touch_the_cache_entry(built, own_cache, tmp_path):
    spec = built[0]
    out = tmp_path / "out.tar.gz"
    r = run_cli("poncho_package_create", "--cache-dir", own_cache, spec, out)
    assert r.returncode == 0 and "cache hit" in r.stderr, r.stderr
    entry = entry_of(own_cache)
    good = sha256_file(entry)
    assert os.stat(out).st_ino != os.stat(entry).st_ino and sha256_file(str(out)) == good
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o444
    meta = json.loads(open(entry[:-len(".tar.gz")] + ".json").read())
    assert meta["sha256"] == good and meta["size"] == os.path.getsize(entry)

    out.write_text("garbage\n")  # what `echo garbage > out.tar.gz` does

    assert sha256_file(entry) == good
    r = run_cli("poncho_package_create", "--cache-dir", own_cache, spec, out)
    assert r.returncode == 0 and "cache hit" in r.stderr and "damaged" not in r.stderr, r.stderr
    r = run_cli("poncho_package_create", "--cache-dir", own_cache, spec, tmp_path / "second.tar.gz")
    assert r.returncode == 0, r.stderr
    assert sha256_file(str(out)) == sha256_file(str(tmp_path / "second.tar.gz")) == sha256_file(entry) == good
    assert builds(own_cache) == 1


@root_only  # root writes through the read-only mode: the check on the next hit must catch it
@pytest.mark.parametrize("damage", ["overwrite", "truncate", "same size", "no metadata", "writable"])
def test_damaged_entry_is_rebuilt(built, own_cache, tmp_path, damage):
    spec = built[0]
    entry = entry_of(own_cache)
    good = sha256_file(entry)
    size = os.path.getsize(entry)
    if damage == "overwrite":
        with open(entry, "w") as f:
            f.write("garbage\n")
    elif damage == "truncate":
        os.truncate(entry, size // 2)
    elif damage == "same size":
        with open(entry, "r+b") as f:
            f.seek(size // 2)
            f.write(b"\0" * 4096)
    elif damage == "no metadata":
        os.unlink(entry[:-len(".tar.gz")] + ".json")
    else:
        os.chmod(entry, 0o644)
    r = run_cli("poncho_package_create", "--cache-dir", own_cache, spec, tmp_path / "out.tar.gz")
    assert r.returncode == 0, r.stderr
    assert "is damaged" in r.stderr and "rebuilding" in r.stderr, r.stderr
    assert builds(own_cache) == 2
    # Archives are reproducible: the rebuilt entry has the bytes the name stood for.
    assert sha256_file(entry) == sha256_file(str(tmp_path / "out.tar.gz")) == good
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o444


def test_published_entry_skips_hashing_until_it_changes(tmp_path):
    """A hit on the very file that was published (inode and mtime as recorded) is trusted without reading it;
    any other file - here a copy, as from a backup - is hashed. The fast path's limit, stated in
    Cache.verify: a same-size write that also forges the mtime back is seen only by force_digest."""
    cache = Cache(str(tmp_path / "cache"))
    key = "c" * 64

    def builder(out):
        with open(out, "wb") as f:
            f.write(os.urandom(1 << 20))

    path, hit = cache.build(key, builder, {"summary": "random"})
    assert not hit and cache.verify(key, digest=True) == (path, None)
    original = os.stat(path)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"\0" * 512)
    os.chmod(path, 0o444)
    os.utime(path, ns=(original.st_atime_ns, original.st_mtime_ns))
    assert cache.verify(key, digest=True) == (path, None)  # trusted: same inode, size and mtime
    assert "sha256" in cache.verify(key, force_digest=True)[1]
    copy = tmp_path / "copy"
    assert settled_listdir(cache.tmp) == []  # the build's scratch, removed in the background, is gone
    shutil.copytree(cache.root, copy)  # copy2: same mode, size and mtime, another inode
    assert "sha256" in Cache(str(copy)).verify(key, digest=True)[1]
    assert Cache(str(copy)).verify(key)[0] is not None  # the cheap checks alone cannot see it
    path2, hit = Cache(str(copy)).build(key, builder, {"summary": "random"}, verify_digest=True)
    assert not hit and Cache(str(copy)).verify(key, force_digest=True) == (path2, None)


def test_environment_build_serves_a_checked_entry(built, own_cache, monkeypatch):
    """Environment.build() returns the cache entry itself (tasks attach it): a changed entry is checked again
    and rebuilt, not served from the memo."""
    from poncho_wq import Environment

    monkeypatch.setenv("PONCHO_WQ_CACHE", str(own_cache))
    # python= makes this Environment's memo key its own (the cache key does not depend on it).
    env = Environment.from_spec(SPEC, engine="portable", python=sys.executable)
    path = env.build()
    assert path == entry_of(own_cache)
    good = sha256_file(path)
    assert env.build() == path and builds(own_cache) == 1
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        f.write("garbage\n")
    assert env.build() == path
    assert sha256_file(path) == good and builds(own_cache) == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444


@root_only
def test_read_only_cache_serves_hits_and_refuses_builds_in_one_line(built, tmp_path, mounts):
    """A hit only reads the cache (a shared read-only cache works); a miss that needs to write there is a
    one-line error naming the cache and the fix, exit 3."""
    spec, cache = built
    ro_cache = mounts(tmp_path / "ro-cache", size="64m")
    shutil.copytree(cache, ro_cache, dirs_exist_ok=True)
    subprocess.run(["mount", "-o", "remount,ro", str(ro_cache)], check=True)
    r = run_cli("poncho_package_create", "--cache-dir", ro_cache, spec, tmp_path / "hit.tar.gz")
    assert r.returncode == 0 and "cache hit" in r.stderr, r.stderr
    assert sha256_file(str(tmp_path / "hit.tar.gz")) == sha256_file(entry_of(ro_cache))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"pip": ["attrs"]}))
    r = run_cli("poncho_package_create", "--cache-dir", ro_cache, other, tmp_path / "miss.tar.gz")
    one_line_error(r, 3, str(ro_cache), "Read-only file system", "--cache-dir")
    assert not (tmp_path / "miss.tar.gz").exists()


# -- item 7: repeated hits leave nothing behind ----------------------------------------------------------------

def test_repeated_hits_into_one_output_leave_only_the_output(built, tmp_path):
    spec, cache = built
    out_dir = tmp_path / "out"
    for _ in range(5):
        r = run_cli("poncho_package_create", "-q", "--cache-dir", cache, spec, out_dir / "env.tar.gz")
        assert r.returncode == 0, r.stderr
        assert os.listdir(out_dir) == ["env.tar.gz"]
        assert os.stat(out_dir / "env.tar.gz").st_ino != os.stat(entry_of(cache)).st_ino


# -- item 6: a hit that cannot be written ----------------------------------------------------------------------

@pytest.mark.parametrize("no_cache", [False, True])
def test_output_that_is_a_directory_exits_3(built, tmp_path, no_cache):
    spec, cache = built
    target = tmp_path / "target"
    target.mkdir()
    args = ["--no-cache"] if no_cache else []
    r = run_cli("poncho_package_create", *args, "--cache-dir", cache, spec, target)
    one_line_error(r, 3, str(target), "Is a directory", "env.tar.gz")
    assert os.listdir(target) == [] and os.listdir(tmp_path) == ["target"]


@root_only
@pytest.mark.parametrize("no_cache", [False, True])
def test_read_only_output_dir_exits_3(built, tmp_path, mounts, no_cache):
    spec, cache = built
    ro = mounts(tmp_path / "ro", read_only=True)
    args = ["--no-cache"] if no_cache else []
    r = run_cli("poncho_package_create", *args, "--cache-dir", cache, spec, ro / "env.tar.gz")
    one_line_error(r, 3, str(ro / "env.tar.gz"), "Read-only file system")
    assert os.listdir(ro) == []


@root_only
def test_full_disk_on_a_hit_exits_3_and_leaves_nothing(built, tmp_path, mounts):
    spec, cache = built
    full = mounts(tmp_path / "full", size="1m")
    r = run_cli("poncho_package_create", "--cache-dir", cache, spec, full / "env.tar.gz")
    one_line_error(r, 3, str(full / "env.tar.gz"), "No space left on device")
    assert os.listdir(full) == []
    assert sha256_file(entry_of(cache)) == sha256_file(str(built[0].parent / "first.tar.gz"))


@root_only
def test_full_disk_during_a_build_gives_a_short_message(built, tmp_path, mounts):
    """The interpreter copy fails for every stdlib file: the message keeps the count and the last failure
    (it was 132 KB), and the scratch directory is gone."""
    full = mounts(tmp_path / "full", size="1m")
    r = run_cli("poncho_package_create", "--no-cache", built[0], full / "env.tar.gz")
    one_line_error(r, 3, "No space left on device")
    assert len(r.stderr) < 6000, len(r.stderr)
    assert os.listdir(full) == []


# -- item 8: signals ---------------------------------------------------------------------------------------------

def start_create(*args):
    env = dict(os.environ, PATH=SCRIPTS + os.pathsep + os.environ["PATH"])
    return subprocess.Popen([script("poncho_package_create")] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def wait_for_scratch(proc, parent, prefix):
    """The scratch directory (name starting with *prefix* in *parent*) once the build has started filling its
    prefix; fails when the build ends first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        names = sorted(n for n in os.listdir(parent) if n.startswith(prefix)) if parent.is_dir() else []
        if names and (parent / names[0] / "prefix" / "lib").is_dir():
            return parent / names[0]
        time.sleep(0.005)
    raise AssertionError("the build ended before it could be signalled: {}".format(proc.communicate()))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signalled_no_cache_build_leaves_nothing(tmp_path, sig):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = start_create("--no-cache", spec, out_dir / "env.tar.gz")
    wait_for_scratch(proc, out_dir, ".poncho-build-")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "interrupted by " + signal.Signals(sig).name in err and "Traceback" not in err, err
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signalled_cached_build_leaves_nothing(tmp_path, sig):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    cache = tmp_path / "cache"
    proc = start_create("--cache-dir", cache, spec, tmp_path / "env.tar.gz")
    wait_for_scratch(proc, cache / "tmp", "build-")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert os.listdir(cache / "tmp") == [] and os.listdir(cache / "envs") == []
    assert not (tmp_path / "env.tar.gz").exists()


def test_killed_no_cache_build_is_cleaned_by_the_next_build(tmp_path):
    """SIGKILL cannot be handled: the scratch stays, and the next build into that directory removes it (its
    flock died with its builder) while it leaves the scratch of a live build (here: this test process) alone."""
    from poncho_wq.fsutil import build_scratch

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = start_create("--no-cache", spec, out_dir / "env.tar.gz")
    dead = wait_for_scratch(proc, out_dir, ".poncho-build-")
    proc.kill()
    proc.communicate()
    assert dead.exists() and (dead / "prefix").exists()
    with build_scratch(str(out_dir)) as alive:
        r = run_cli("poncho_package_create", "-q", "--no-cache", spec, out_dir / "env.tar.gz")
        assert r.returncode == 0, r.stderr
        assert not dead.exists() and os.path.isdir(alive)
    assert os.listdir(out_dir) == ["env.tar.gz"]


def test_killed_cached_build_is_cleaned_by_the_next_build_of_any_key(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    cache = tmp_path / "cache"
    proc = start_create("--cache-dir", cache, spec, tmp_path / "env.tar.gz")
    dead = wait_for_scratch(proc, cache / "tmp", "build-")
    proc.kill()
    proc.communicate()
    assert dead.exists()
    r = run_cli("poncho_package_create", "--cache-dir", cache, "-", tmp_path / "other.tar.gz", input="{}")
    assert r.returncode == 0 and "interrupted build" in r.stderr, r.stderr
    # the interrupted build's scratch went before the build; the new build's own goes in the background
    assert settled_listdir(cache / "tmp") == [] and not (tmp_path / "env.tar.gz").exists()


# -- item 12: numeric options of `cache` --------------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [
    ("--max-size", "1" + "0" * 400), ("--max-size", "-1"), ("--max-size", "nan"), ("--max-size", "inf"),
    ("--max-size", "1e999"), ("--max-size", "9E"), ("--max-age", "1" + "0" * 400), ("--max-age", "-5d"),
    ("--max-age", "nan"), ("--max-age", "inf"), ("--max-age", "2y"),
])
def test_cache_prune_bad_numbers_exit_1(tmp_path, option, value):
    # --opt=value: argparse itself refuses a separate "-5d" as "expected one argument" (exit 1 too, below).
    r = run_cli("poncho_wq", "cache", "--cache-dir", tmp_path / "cache", "prune", "{}={}".format(option, value))
    one_line_error(r, 1, option, value[:20])
    assert len(r.stderr) < 300
    r = run_cli("poncho_wq", "cache", "--cache-dir", tmp_path / "cache", "prune", option, value)
    one_line_error(r, 1, option)
    assert not (tmp_path / "cache" / "envs").exists()


# -- item 13: output = input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["same", "dot", "symlink", "hardlink"])
def test_create_refuses_to_write_over_its_spec(tmp_path, how):
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(SPEC))
    out = {"same": spec, "dot": tmp_path / "." / "s.json", "symlink": tmp_path / "link.json",
           "hardlink": tmp_path / "hard.json"}[how]
    if how == "symlink":
        out.symlink_to(spec)
    elif how == "hardlink":
        os.link(spec, out)
    r = run_cli("poncho_package_create", "--cache-dir", tmp_path / "cache", spec, out)
    one_line_error(r, 1, str(out), str(spec))
    assert json.loads(spec.read_text()) == SPEC and not (tmp_path / "cache").exists()


# -- Low: bounded tails of tool output ------------------------------------------------------------------------

def test_tail_keeps_the_last_lines_and_says_what_was_cut():
    from poncho_wq.tools import STDERR_TAIL, TAIL_LINES, tail

    flood = "\n".join("cp: cannot write file{}: No space left on device".format(i) for i in range(3000))
    short = tail(flood)
    assert short.startswith("[... {} earlier line(s) cut]".format(3000 - TAIL_LINES))
    assert short.endswith("file2999: No space left on device") and len(short) < STDERR_TAIL + 100
    assert len(tail("x" * 100000)) <= STDERR_TAIL + 5
    assert tail("one\ntwo\n") == "one\ntwo"
