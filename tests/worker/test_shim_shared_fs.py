"""The shim's mkdir lock and temp-dir sweep when several hosts share one root (PONCHO_ENV_DIR on a shared file
system, poncho_wq's "shared" distribution mode).

Whether a lock's or a temp dir's owner is alive can only be asked (kill -0) on the owner's own host: a shim on
host B used to take host A's live lock for a dead one, break it and delete A's temp dir, and A's task then ended
with exit 3 when its rename failed.  Owners are now recorded as ``<host>:<pid>`` (temp dirs as
``.<id>.tmp.<pid>@<host>``) and only this host's dead ones are broken or swept; another host's lock is waited
for, until its pid file is older than twice the lock wait (at least 60 s).

Two hosts without two machines: each shim runs in its own UTS namespace (``unshare --uts``, then ``hostname``),
so ``uname -n`` differs while the file system is the same one.  The concurrent test also gives each host its
own pid namespace, so that, as between real machines, host A's pid means nothing on host B.  Needs root.
"""

import os
import subprocess
import time

import pytest

from helpers.shimutil import (leftovers, make_prefix, missing_members, pack, pack_plain, shim_cmd, shim_env, slow_tar,
                              unpack_count)

ENV_ID = "env-" + "fedcba9876543210" * 4
BIG_ID = "env-" + "0123456789abcdef" * 4
SHELLS = {"dash": ("dash",), "busybox": ("busybox", "sh")}

pytestmark = [pytest.mark.usefixtures("shells"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: unshare --uts to simulate a second host")]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    d = tmp_path_factory.mktemp("sharedfs")
    return pack(make_prefix(d, run_in_env=True), d / (ENV_ID + ".tar.gz"))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """40 MB in 2,000 files made by tar itself: an extraction long enough for another host to step in, with new
    files all along, and nothing to relocate (the tree is marked ready right after its extraction)."""
    d = tmp_path_factory.mktemp("sharedfs-big")
    return pack_plain(d, d / (BIG_ID + ".tar.gz"), files=2000)


def _on_host(host, argv, pid_ns=False, forks=0):
    """argv run with ``uname -n`` = host (and, with pid_ns, in a pid namespace of its own, after ``forks``
    other processes: the pids of two such hosts differ, as they would between machines)."""
    ns = ["unshare", "--uts"] + (["--pid", "--fork", "--kill-child"] if pid_ns else [])
    script = 'hostname "$0" || exit 99; ' + "/bin/true; " * forks + '"$@"; exit "$?"'
    return ns + ["sh", "-c", script, host] + [str(a) for a in argv]


def _run(host, args, env, shell="dash", pid_ns=False, forks=0, timeout=120):
    return subprocess.run(_on_host(host, shim_cmd(args, SHELLS[shell]), pid_ns, forks), env=env,
                          stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _plant_lock(root, owner, age=0):
    lockd = root / ("." + ENV_ID + ".lockd")
    lockd.mkdir(parents=True)
    (lockd / "pid").write_text(owner + "\n")
    if age:
        t = time.time() - age
        os.utime(str(lockd / "pid"), (t, t))
        os.utime(str(lockd), (t, t))
    return lockd


def _plant_tmp(root, suffix):
    d = root / ("." + ENV_ID + ".tmp." + suffix)
    (d / "env" / "lib").mkdir(parents=True)
    (d / "env" / "lib" / "blob").write_bytes(b"x" * 1024)
    return d


def test_a_shim_of_another_host_does_not_break_a_live_unpack(tarball, tmp_path):
    """Host A unpacks (its tar slowed by 3 s, so it holds the lock with its temp dir in place); host B, started
    meanwhile with the same root, waits for it and uses A's environment: one unpack, both runs succeed.  Before
    the fix B took A's pid (of another pid namespace) for dead, broke the lock and deleted A's temp dir: A's
    rename failed and its task exited 3."""
    root = tmp_path / "root"
    slow = tmp_path / "slowtar"
    slow.mkdir()
    real_tar = subprocess.run(["sh", "-c", "command -v tar"], capture_output=True, text=True).stdout.strip()
    (slow / "tar").write_text('#!/bin/sh\ncase " $* " in *" -x "*) sleep 3 ;; esac\nexec {} "$@"\n'.format(real_tar))
    (slow / "tar").chmod(0o755)
    env = shim_env(root, PONCHO_LOCK="mkdir")
    a = subprocess.Popen(_on_host("hostA", shim_cmd(["-e", tarball, "hello"]), pid_ns=True),
                         env=dict(env, PATH="{}:{}".format(slow, env["PATH"])), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lockd = root / ("." + ENV_ID + ".lockd")
        deadline = time.time() + 60
        while not (list(root.glob("." + ENV_ID + ".tmp.*")) and (lockd / "pid").exists()):
            assert a.poll() is None and time.time() < deadline, a.communicate()
            time.sleep(0.05)
        owner = (lockd / "pid").read_text()
        temp = [d.name for d in root.glob("." + ENV_ID + ".tmp.*")]
        b = _run("hostB", ["-w", "60", "-e", tarball, "hello"], env, pid_ns=True, forks=1)
        out, err = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert (a.returncode, out) == (0, "prefix={}\n".format(root / ENV_ID)), err
    assert (b.returncode, b.stdout, b.stderr) == (0, "prefix={}\n".format(root / ENV_ID), "")
    assert unpack_count(root / "unpack.log") == 1
    assert leftovers(root) == []
    assert owner.startswith("hostA:") and temp[0].split("~")[0].endswith("@hostA"), (owner, temp)


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_lock_of_another_host_is_waited_for_and_the_timeout_names_it(tarball, tmp_path, shell):
    """hostA:<pid>: a pid that is dead here says nothing about host A.  The wait times out (exit 4) naming the
    host, and the lock is left as it was."""
    root = tmp_path / "root"
    pid = _dead_pid()
    lockd = _plant_lock(root, "hostA:{}".format(pid))
    r = _run("hostB", ["-w", "1", "-e", tarball, "true"], shim_env(root, PONCHO_LOCK="mkdir"), shell)
    assert r.returncode == 4, r.stderr
    line = r.stderr.strip()
    assert line.startswith("poncho_package_run: timed out after 1 s waiting for the lock in"), line
    assert "pid {} on host hostA".format(pid) in line and "60 s old" in line, line
    assert (lockd / "pid").read_text() == "hostA:{}\n".format(pid)
    assert not (root / ENV_ID).exists()


@pytest.mark.parametrize("shell", sorted(SHELLS))
@pytest.mark.parametrize("form", ["host:pid", "pid only"])
def test_a_lock_of_this_host_with_a_dead_pid_is_broken(tarball, tmp_path, shell, form):
    """This host's dead owner, new format or old (a pid only, written by an older shim: taken as this host's):
    broken silently, and the environment is unpacked."""
    root = tmp_path / "root"
    pid = _dead_pid()
    _plant_lock(root, "hostB:{}".format(pid) if form == "host:pid" else str(pid))
    r = _run("hostB", ["-w", "5", "-e", tarball, "hello"], shim_env(root, PONCHO_LOCK="mkdir"), shell)
    assert (r.returncode, r.stdout, r.stderr) == (0, "prefix={}\n".format(root / ENV_ID), "")
    assert leftovers(root) == []


@pytest.mark.parametrize("form", ["host:pid", "pid only"])
def test_a_lock_of_this_host_with_a_live_pid_is_waited_for(tarball, tmp_path, form):
    root = tmp_path / "root"
    owner = "hostB:{}".format(os.getpid()) if form == "host:pid" else str(os.getpid())
    lockd = _plant_lock(root, owner)
    r = _run("hostB", ["-w", "1", "-e", tarball, "true"], shim_env(root, PONCHO_LOCK="mkdir"))
    assert r.returncode == 4, r.stderr
    assert r.stderr == "poncho_package_run: timed out after 1 s waiting for the lock in {} (another task " \
                       "unpacking?)\n".format(root)
    assert (lockd / "pid").read_text() == owner + "\n"


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_temp_dirs_of_another_host_are_not_swept(tarball, tmp_path, shell):
    """Under the mkdir lock, host B removes its own leftovers of dead pids (new and old names) and keeps host A's
    temp dir: A may be unpacking into it (a lock broken by mistake: its rename then still works or finds the
    environment ready) and only A can tell."""
    root = tmp_path / "root"
    root.mkdir()
    dead, live = _dead_pid(), os.getpid()
    foreign = _plant_tmp(root, "{}@hostA".format(dead))
    foreign_evict = _plant_tmp(root, "evict{}@hostA".format(dead))
    mine_live = _plant_tmp(root, "{}@hostB".format(live))
    gone = [_plant_tmp(root, "{}@hostB".format(dead)), _plant_tmp(root, str(dead)), _plant_tmp(root, "old{}".format(dead))]
    r = _run("hostB", ["-e", tarball, "hello"], shim_env(root, PONCHO_LOCK="mkdir"), shell)
    assert (r.returncode, r.stdout, r.stderr) == (0, "prefix={}\n".format(root / ENV_ID), "")
    assert [d.name for d in gone if d.exists()] == []
    for kept in (foreign, foreign_evict, mine_live):
        assert (kept / "env" / "lib" / "blob").exists(), kept.name


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_lock_of_another_host_older_than_the_limit_is_broken_with_a_warning(tarball, tmp_path, shell):
    """Host A went down holding the lock: once its pid file is older than twice the lock wait (at least 60 s),
    host B breaks it with one warning line, removes that owner's temp dirs of this id (and no other host's),
    and unpacks."""
    root = tmp_path / "root"
    pid = _dead_pid()
    _plant_lock(root, "hostA:{}".format(pid), age=3600)
    crashed = _plant_tmp(root, "{}@hostA".format(pid))
    other = _plant_tmp(root, "{}@hostC".format(pid))
    r = _run("hostB", ["-w", "5", "-e", tarball, "hello"], shim_env(root, PONCHO_LOCK="mkdir"), shell)
    assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(root / ENV_ID)), r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("poncho_package_run: warning: broke the lock"), r.stderr
    assert "pid {} on host hostA".format(pid) in lines[0] and "more than 60 s" in lines[0], lines[0]
    assert not crashed.exists()
    assert (other / "env" / "lib" / "blob").exists()
    assert unpack_count(root / "unpack.log") == 1


def test_a_lock_of_another_host_younger_than_the_limit_is_kept(tarball, tmp_path):
    """The limit is twice the lock wait: -w 40 makes a 70 s old lock of another host still a live one."""
    root = tmp_path / "root"
    lockd = _plant_lock(root, "hostA:{}".format(_dead_pid()), age=70)
    proc = subprocess.Popen(_on_host("hostB", shim_cmd(["-w", "40", "-e", tarball, "true"])),
                            env=shim_env(root, PONCHO_LOCK="mkdir"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(2.5)  # the age is checked once a second: two checks at least
        assert proc.poll() is None and lockd.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.communicate()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_lock_broken_for_its_age_never_publishes_a_half_environment(big, tmp_path, shell):
    """Host A unpacks; host B's clock runs an hour ahead of the file server's (here: A's pid file dated back an
    hour), so B takes A's live lock for a crashed host's, breaks it and removes A's temp dir while A's tar is still
    writing into it.  A's run went on with what was left (6 of 6 in the issue: a ready marker on an incomplete
    tree).  Now B moves A's temp dir away before deleting it, so A's next step on its own path fails, and only a
    tree whose rename won, checked by its own unpacker, is marked ready: what is published is complete."""
    root = tmp_path / "root"
    # Both read their archive slowly (4 s): B steps in while A's tar is still writing, and A renames first.
    env = shim_env(root, PONCHO_LOCK="mkdir", PATH="{}:{}".format(slow_tar(tmp_path), os.environ["PATH"]))
    a = subprocess.Popen(_on_host("hostA", shim_cmd(["-e", big, "hello"], SHELLS[shell]), pid_ns=True), env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not any(len(os.listdir(s / "env" / "share" / "random")) >= 200
                      for s in root.glob("." + BIG_ID + ".tmp.*") if (s / "env" / "share" / "random").is_dir()):
            assert a.poll() is None and time.time() < deadline, a.communicate()
            time.sleep(0.005)
        pid = root / ("." + BIG_ID + ".lockd") / "pid"
        t = time.time() - 3600
        os.utime(str(pid), (t, t))
        b = _run("hostB", ["-w", "5", "-e", big, "hello"], env, shell, pid_ns=True, forks=1)
        out, err = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
            a.communicate()
    d = root / BIG_ID
    assert (d / ".poncho_ready").is_file()
    assert missing_members(big, d) == []
    assert (b.returncode, b.stdout) == (0, "prefix={}\n".format(d)), b.stderr
    assert "warning: broke the lock" in b.stderr and "host hostA" in b.stderr
    assert a.returncode in (0, 3), err
    if a.returncode == 0:
        assert out == "prefix={}\n".format(d)
    assert leftovers(root) == []
