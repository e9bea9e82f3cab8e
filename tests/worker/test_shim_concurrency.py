"""The shim under concurrency and crashes: one extraction for 16 simultaneous cold starts, and SIGKILL at any
point (extraction, relocation) never leaves something a later task takes for a ready environment."""

import os
import signal
import subprocess
import time

import pytest

from helpers.shimutil import (SHELLS, leftovers, make_prefix, missing_members, pack, pack_plain, run_shim, shim_env,
                              slow_tar, start_shim, unpack_count)

BIG_ID = "env-" + "b16" * 20 + "beef"
PLAIN_ID = "env-" + "9a1" * 20 + "beef"

pytestmark = pytest.mark.usefixtures("shells")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """~40 MB of incompressible files plus a 24 MB text file full of the prefix (a slow relocation)."""
    d = tmp_path_factory.mktemp("big")
    return pack(make_prefix(d, random_mb=40, prefix_text_mb=24), d / (BIG_ID + ".tar.gz"))


def _wait_all(procs, timeout=300):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


@pytest.mark.parametrize("shell,lock", [("dash", "flock"), ("bash-posix", "flock"), ("busybox", "flock"),
                                        ("dash", "mkdir"), ("busybox", "mkdir")])
def test_16_concurrent_cold_starts_unpack_once(big, tmp_path, shell, lock):
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_LOCK=lock)
    procs = [start_shim(["-e", big, "hello"], shell=SHELLS[shell], env=env) for _ in range(16)]
    results = _wait_all(procs)
    d = root / BIG_ID
    for rc, stdout, stderr in results:
        assert rc == 0, stderr
        assert stdout == "prefix={}\n".format(d)
        assert stderr == ""  # waiters say nothing (the mkdir lock once printed "cannot open .../pid")
    assert unpack_count(root / "unpack.log") == 1
    assert missing_members(big, d) == []
    assert leftovers(root) == []


def test_16_concurrent_unpack_to_the_same_dir(big, tmp_path):
    target = tmp_path / "shared-dir"
    env = shim_env(tmp_path / "unused")
    procs = [start_shim(["-d", target, "-e", big, "hello"], env=env) for _ in range(16)]
    for rc, stdout, stderr in _wait_all(procs):
        assert (rc, stdout) == (0, "prefix={}\n".format(target)), stderr
    assert unpack_count(target / ".poncho_unpack.log") == 1
    assert missing_members(big, target) == []


def _group_has(pgid, needle):
    """Whether a process of group ``pgid`` has ``needle`` in its command line (read from /proc)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(pid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            with open("/proc/{}/cmdline".format(pid), "rb") as f:
                if needle in f.read():
                    return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def _kill_when(proc, predicate, limit=120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if predicate():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    raise AssertionError("the shim never reached the point to kill it")


def _check_after_kill(big, root, shell, env):
    """Nothing half-made is published; the next run cleans up, unpacks and runs; the env is complete."""
    d = root / BIG_ID
    assert not d.exists() or (d / ".poncho_ready").is_file()
    before = unpack_count(root / "unpack.log")
    r = run_shim(["-e", big, "hello"], shell=SHELLS[shell], env=env)
    assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(d)), r.stderr
    assert missing_members(big, d) == []
    assert (d / "share" / "where.txt").read_text() == "{}\n".format(d)
    assert leftovers(root) == []
    return unpack_count(root / "unpack.log") - before


@pytest.mark.parametrize("shell,lock", [("dash", "flock"), ("busybox", "mkdir")])
def test_sigkill_during_extraction_and_relocation(big, tmp_path, shell, lock):
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_LOCK=lock)
    staging = lambda: [n for n in (os.listdir(root) if root.exists() else []) if ".tmp." in n]  # noqa: E731

    def extracted_mb(mb):
        def pred():
            for s in staging():
                rnd = root / s / "env" / "share" / "random"  # the shim extracts into <root>/.<id>.tmp.<pid>/env
                if rnd.is_dir() and len(os.listdir(rnd)) >= mb:
                    return True
            return False
        return pred

    points = [("extraction started", lambda: bool(staging())),
              ("extraction 25%", extracted_mb(10)),
              ("extraction 75%", extracted_mb(30)),
              ("relocation (conda-unpack records) running", lambda: _group_has(proc.pid, b"_prefix_records"))]
    killed = 0
    for name, pred in points:
        if (root / BIG_ID).exists():
            subprocess.run(["rm", "-rf", str(root / BIG_ID)], check=True)
        proc = start_shim(["-e", big, "hello"], shell=SHELLS[shell], env=env)
        if _kill_when(proc, pred):
            killed += 1
            assert not (root / BIG_ID).exists(), name
        assert _check_after_kill(big, root, shell, env) == 1, name
    assert killed == len(points)


def test_sigkill_of_an_unpack_to_run(big, tmp_path):
    target = tmp_path / "dir"
    env = shim_env(tmp_path / "unused")
    proc = start_shim(["-d", target, "-e", big, "hello"], env=env)
    # The archive is extracted (and checked) in DIR/.poncho_tmp.<pid>/env before it is moved up into DIR.
    assert _kill_when(proc, lambda: any(target.glob(".poncho_tmp.*/env/share/random")))
    assert not (target / ".poncho_ready").exists()
    r = run_shim(["-d", target, "-e", big, "hello"], env=env)
    assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(target)), r.stderr
    assert missing_members(big, target) == []
    assert unpack_count(target / ".poncho_unpack.log") == 1


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """40 MB in 2,000 files made by tar itself: nothing to relocate, so a tree is marked ready right after its
    extraction."""
    d = tmp_path_factory.mktemp("plain")
    return pack_plain(d, d / (PLAIN_ID + ".tar.gz"), files=2000)


def _wait_extracting(root, mb, proc, limit=120):
    """Wait until a shim extracting into ``root`` has written ``mb`` of the big tarball's random files."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for s in (os.listdir(root) if root.exists() else []):
            rnd = root / s / "env" / "share" / "random"
            if ".tmp." in s and rnd.is_dir() and len(os.listdir(rnd)) >= mb:
                return
        time.sleep(0.005)
    raise AssertionError("the first shim never got that far")


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_flock_and_mkdir_locking_never_mix_on_one_root(plain, tmp_path, shell):
    """A task with PONCHO_LOCK=mkdir unpacks; a task with flock (the default) starts meanwhile on the same root.
    The two locks did not exclude each other: the flock task took the other's live temp dir for a dead one and
    deleted it under its running tar, which went on and published a tree with files missing (3 of 3 in the issue).
    Now the root records the mode of its first lock (.poncho_lockmode) and every task uses that one."""
    root = tmp_path / "root"
    # Both read their archive slowly (4 s), so that the second steps in while the first's tar is still writing.
    path = "{}:{}".format(slow_tar(tmp_path), os.environ["PATH"])
    first = start_shim(["-e", plain, "hello"], shell=SHELLS[shell], env=shim_env(root, PONCHO_LOCK="mkdir", PATH=path))
    _wait_extracting(root, 200, first)
    second = start_shim(["-e", plain, "hello"], shell=SHELLS[shell], env=shim_env(root, PATH=path))
    d = root / PLAIN_ID
    results = _wait_all([first, second])
    assert missing_members(plain, d) == []
    for rc, stdout, stderr in results:
        assert (rc, stdout, stderr) == (0, "prefix={}\n".format(d), ""), stderr
    assert unpack_count(root / "unpack.log") == 1
    assert os.readlink(root / ".poncho_lockmode") == "mkdir"
    assert leftovers(root) == []


def test_a_task_asking_for_another_lock_mode_than_the_roots_is_refused(big, tmp_path):
    root = tmp_path / "root"
    assert run_shim(["-e", big, "true"], env=shim_env(root)).returncode == 0
    assert os.readlink(root / ".poncho_lockmode") == "flock"
    subprocess.run(["rm", "-rf", str(root / BIG_ID)], check=True)
    r = run_shim(["-e", big, "true"], env=shim_env(root, PONCHO_LOCK="mkdir"))
    assert (r.returncode, r.stdout) == (4, ""), r.stderr
    line = r.stderr.strip()
    assert line.startswith("poncho_package_run: PONCHO_LOCK=mkdir, but {}".format(root)), line
    assert "flock" in line and ".poncho_lockmode" in line
    assert not (root / BIG_ID).exists()
