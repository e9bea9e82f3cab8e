"""The sh run shim and run_in_env on real conda-pack tarballs, run as real processes under several shells.

The last section (from a hostile review of the worker scripts) counts the external commands of the warm paths of
the shim and run_in_env under dash and busybox sh: none."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sysconfig
import time

import pytest

from poncho_wq.shim import run_in_env_path, shim_path
from helpers.shimutil import (SHELLS, floor_tarballs, leftovers, make_prefix, missing_members, pack, run_shim, shim_env,
                              unpack_count)

ENV_ID = "env-" + "0123456789abcdef" * 4
SHELL_IDS = sorted(SHELLS)

pytestmark = pytest.mark.usefixtures("shells")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A conda-pack tarball named like poncho_wq's (env-<hex>.tar.gz) with data variables and run_in_env."""
    d = tmp_path_factory.mktemp("small")
    prefix = make_prefix(d, data_vars=("DATA_DIR",), run_in_env=True)
    return pack(prefix, d / (ENV_ID + ".tar.gz"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A tarball made by conda-pack's own command line from a prefix poncho_wq never saw (no run_in_env)."""
    d = tmp_path_factory.mktemp("plain")
    prefix = make_prefix(d, name="upstream")
    out = d / "my env.tar.gz"
    subprocess.run([os.path.join(sysconfig.get_path("scripts"), "conda-pack"), "-p", prefix, "-o", str(out),
                    "--ignore-missing-files", "-q"], check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return str(out)


def show_env_cmd():
    """A command printing what activation must have set, run with the environment's python."""
    code = ("import json, os, shutil, sys; print(json.dumps({k: os.environ.get(k) for k in ("
            "'CONDA_PREFIX', 'CONDA_DEFAULT_ENV', 'PYTHONPATH', 'PYTHONHOME', 'PONCHO_TEST_ACTIVATED', "
            "'DATA_DIR')} | {'path0': os.environ['PATH'].split(':')[0], 'python': shutil.which('python')}))")
    return ["python", "-c", code]


@pytest.mark.parametrize("shell", SHELL_IDS)
def test_cold_then_warm_run_activates_and_relocates(small, tmp_path, shell):
    root = tmp_path / "root"
    env = shim_env(root, PYTHONPATH="/nonexistent", PYTHONHOME="/nonexistent")
    first = run_shim(["-e", small, "hello"], shell=SHELLS[shell], env=env)
    assert first.returncode == 0, first.stderr
    d = str(root / ENV_ID)
    assert first.stdout == "prefix={}\n".format(d)
    second = run_shim(["-e", small] + show_env_cmd(), shell=SHELLS[shell], env=env)
    assert second.returncode == 0, second.stderr
    seen = json.loads(second.stdout)
    assert seen == {"CONDA_PREFIX": d, "CONDA_DEFAULT_ENV": d, "PYTHONPATH": None, "PYTHONHOME": None,
                    "PONCHO_TEST_ACTIVATED": d, "DATA_DIR": d + "/DATA_DIR", "path0": d + "/bin",
                    "python": d + "/bin/python"}
    with open(os.path.join(d, "DATA_DIR", "file.txt")) as f:
        assert f.read() == "data of DATA_DIR\n"
    with open(os.path.join(d, "share", "where.txt")) as f:
        assert f.read() == d + "\n"
    assert unpack_count(root / "unpack.log") == 1
    assert missing_members(small, d) == []
    assert leftovers(root) == []


@pytest.mark.parametrize("shell", SHELL_IDS)
def test_argv_is_preserved(small, tmp_path, shell):
    (tmp_path / "a.txt").write_text("x")  # a glob that would match if the shim re-split or expanded
    args = ["a b", "'single'", '"double"', "*", "*.txt", "", "$HOME", "`id`", "-e", "--", "back\\slash", "new\nline"]
    r = run_shim(["-e", small, "--", "python", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"] + args,
                 shell=SHELLS[shell], env=shim_env(tmp_path / "root"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == args


@pytest.mark.parametrize("shell", SHELL_IDS)
def test_exit_status_is_the_commands(small, tmp_path, shell):
    env = shim_env(tmp_path / "root")
    for status in (0, 1, 5, 42, 255):
        r = run_shim(["-e", small, "sh", "-c", "exit {}".format(status)], shell=SHELLS[shell], env=env)
        assert r.returncode == status, r.stderr
    notfound = run_shim(["-e", small, "no-such-command-xyz"], shell=SHELLS[shell], env=env)
    assert notfound.returncode == 127
    assert notfound.stderr.startswith("poncho_package_run: command not found: no-such-command-xyz")
    (tmp_path / "notexec").write_text("echo hi\n")
    noexec = run_shim(["-e", small, "./notexec"], shell=SHELLS[shell], env=env, cwd=tmp_path)
    assert noexec.returncode == 126


def test_usage_errors_exit_1(small, tmp_path):
    env = shim_env(tmp_path / "root")
    for args in ([], ["true"], ["-e"], ["-x", "-e", small, "true"], ["-e", small, "-w", "soon", "true"],
                 ["-w"]):
        r = run_shim(args, env=env)
        assert r.returncode == 1, (args, r.stderr)
        assert "poncho_package_run: " in r.stderr
    help_ = run_shim(["--help"], env=env)
    assert help_.returncode == 0 and "--unpack-to" in help_.stdout
    # A file where a directory is wanted is bad usage, as upstream says.
    (tmp_path / "file").write_text("")
    r = run_shim(["-d", tmp_path / "file", "-e", small, "true"], env=env)
    assert r.returncode == 1 and "not a directory" in r.stderr


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_wait_for_lock_with_leading_zeros_or_too_many_digits(small, tmp_path, shell):
    """-w 08 is bad octal to sh arithmetic: dash died with "Illegal number" (exit 2) under the mkdir lock; 25 digits
    made flock(1) time out at once.  Leading zeros are dropped; more than 9 digits are a usage error."""
    sh = {"dash": ["dash"], "busybox": ["busybox", "sh"]}[shell]
    for lock in ("mkdir", "flock"):
        root = tmp_path / lock
        r = run_shim(["-w", "08", "-e", small, "true"], shell=sh, env=shim_env(root, PONCHO_LOCK=lock))
        assert (r.returncode, r.stderr) == (0, ""), (lock, r.stderr)
        r = run_shim(["-w", "0" * 24 + "5", "-e", small, "true"], shell=sh, env=shim_env(root, PONCHO_LOCK=lock))
        assert (r.returncode, r.stderr) == (0, ""), (lock, r.stderr)
    r = run_shim(["-w", "1" + "0" * 24, "-e", small, "true"], shell=sh, env=shim_env(tmp_path / "root"))
    assert r.returncode == 1 and "at most 9 digits" in r.stderr, r.stderr


def test_missing_environment_exits_2(tmp_path):
    r = run_shim(["-e", tmp_path / "env-00ff.tar.gz", "true"], env=shim_env(tmp_path / "root"))
    assert r.returncode == 2
    assert r.stderr.startswith("poncho_package_run: environment file not found")


def test_corrupt_tarball_exits_3_and_leaves_nothing(small, tmp_path):
    bad = tmp_path / ("env-" + "e" * 64 + ".tar.gz")
    with open(small, "rb") as f:
        bad.write_bytes(f.read()[:3000])
    root = tmp_path / "root"
    r = run_shim(["-e", bad, "true"], env=shim_env(root))
    assert r.returncode == 3, r.stderr
    assert "could not extract" in r.stderr
    assert not (root / bad.name[:-7]).exists()
    assert leftovers(root) == []
    assert unpack_count(root / "unpack.log") == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_exits_3(tmp_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("big4")
    tarball = pack(make_prefix(d, random_mb=4), d / ("env-" + "4" * 64 + ".tar.gz"))
    root = tmp_path / "full"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], check=True)
    try:
        r = run_shim(["-e", tarball, "true"], env=shim_env(root))
        assert r.returncode == 3, r.stderr
        assert not (root / ("env-" + "4" * 64)).exists()
        assert leftovers(root) == []
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_relocation_failure_exits_4(tmp_path):
    prefix = make_prefix(tmp_path, broken_python=True)
    tarball = pack(prefix, tmp_path / ("env-" + "b" * 64 + ".tar.gz"))
    root = tmp_path / "root"
    r = run_shim(["-e", tarball, "true"], env=shim_env(root))
    assert r.returncode == 4, r.stderr
    assert "could not relocate" in r.stderr
    assert not (root / ("env-" + "b" * 64)).exists()
    assert leftovers(root) == []


@pytest.mark.parametrize("lock", ["flock", "mkdir"])
def test_lock_timeout_exits_4(small, tmp_path, lock):
    root = tmp_path / "root"
    root.mkdir()
    if lock == "flock":
        holder = subprocess.Popen(["flock", str(root / ("." + ENV_ID + ".lock")), "sleep", "30"])
    else:
        # A live owner (this very test process) holds the mkdir lock: it must not be broken.
        (root / ("." + ENV_ID + ".lockd")).mkdir()
        (root / ("." + ENV_ID + ".lockd") / "pid").write_text("{}\n".format(os.getpid()))
        holder = None
    try:
        r = run_shim(["-w", "1", "-e", small, "true"], env=shim_env(root, PONCHO_LOCK=lock))
        assert r.returncode == 4, r.stderr
        assert "timed out after 1 s" in r.stderr
    finally:
        if holder:
            holder.kill()
            holder.wait()


def test_stale_mkdir_lock_is_broken(small, tmp_path):
    root = tmp_path / "root"
    lockd = root / ("." + ENV_ID + ".lockd")
    lockd.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (lockd / "pid").write_text("{}\n".format(dead.pid))
    r = run_shim(["-w", "5", "-e", small, "hello"], env=shim_env(root, PONCHO_LOCK="mkdir"))
    assert r.returncode == 0, r.stderr
    assert leftovers(root) == []


def test_unpack_log_is_kept_small(small, tmp_path):
    """<root>/unpack.log got one line per extraction for the life of the root; past 1 MiB it is moved to
    unpack.log.1 now (one old generation kept), here with 1.2 MiB of old lines."""
    root = tmp_path / "root"
    root.mkdir()
    old = "1700000000 12345 env-{}\n".format("0" * 64) * 13000
    (root / "unpack.log").write_text(old)
    assert run_shim(["-e", small, "true"], env=shim_env(root)).returncode == 0
    assert unpack_count(root / "unpack.log") == 1
    assert (root / "unpack.log.1").read_text() == old


def test_debug_prints_phase_timings(small, tmp_path):
    r = run_shim(["-e", small, "true"], env=shim_env(tmp_path / "root", PONCHO_DEBUG=1))
    assert r.returncode == 0, r.stderr
    phases = [line.split(": ")[1] for line in r.stderr.splitlines()]
    assert phases == ["floor check", "lock wait", "extract", "relocate", "activate"]


def test_plain_conda_pack_tarball_in_the_worker_cache(plain, tmp_path):
    """A conda-pack tarball with an arbitrary name: identity from size + mtime + name; touching it changes it."""
    root = tmp_path / "root"
    env = shim_env(root)
    r1 = run_shim(["-e", plain, "hello"], env=env)
    assert r1.returncode == 0, r1.stderr
    (d,) = [n for n in os.listdir(root) if not n.startswith(".") and n != "unpack.log"]
    assert r1.stdout == "prefix={}\n".format(root / d)
    st = os.stat(plain)
    assert d.endswith("-{}-{}".format(st.st_size, int(st.st_mtime)))
    assert run_shim(["-e", plain, "true"], env=env).returncode == 0
    assert unpack_count(root / "unpack.log") == 1
    os.utime(plain, (st.st_atime, st.st_mtime + 10))
    assert run_shim(["-e", plain, "true"], env=env).returncode == 0
    assert unpack_count(root / "unpack.log") == 2


def test_unpack_to_follows_upstream(plain, tmp_path):
    env = shim_env(tmp_path / "unused-root")
    # A missing directory is created and the environment unpacked there, once.
    target = tmp_path / "new" / "dir"
    for _ in range(2):
        r = run_shim(["--unpack-to", target, "-e", plain, "hello"], env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "prefix={}\n".format(target)
    assert unpack_count(target / ".poncho_unpack.log") == 1
    assert missing_members(plain, target) == []
    # An existing empty directory is unpacked into (-u and -d are aliases).
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_shim(["-u", empty, "-e", plain, "hello"], env=env)
    assert r.returncode == 0 and r.stdout == "prefix={}\n".format(empty), r.stderr
    # An existing non-empty directory is used as is, whatever it holds.
    full = tmp_path / "full"
    (full / "bin").mkdir(parents=True)
    (full / "bin" / "hello").write_text("#!/bin/sh\necho not unpacked\n")
    (full / "bin" / "hello").chmod(0o755)
    r = run_shim(["-d", full, "-e", plain, "hello"], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "not unpacked\n"
    # Nothing added but the record of the lock mode taken there (.poncho_lockmode, see the shim: one per directory).
    assert sorted(os.listdir(full)) == [".poncho_lockmode", "bin"]
    assert not (tmp_path / "unused-root").exists()


def test_unpack_to_redoes_a_killed_attempt(plain, tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / ".poncho_unpacking").write_text("")
    (target / "bin").mkdir()
    (target / "bin" / "half-written").write_text("")
    r = run_shim(["-d", target, "-e", plain, "hello"], env=shim_env(tmp_path / "root"))
    assert r.returncode == 0 and r.stdout == "prefix={}\n".format(target), r.stderr
    assert not (target / "bin" / "half-written").exists()
    assert not (target / ".poncho_unpacking").exists()


def test_unpacked_directory_is_relocated_in_place_and_again_after_a_move(plain, tmp_path):
    d = tmp_path / "unpacked"
    d.mkdir()
    subprocess.run(["tar", "-xf", plain, "-C", str(d)], check=True)
    env = shim_env(tmp_path / "unused-root")
    r = run_shim(["-e", d, "hello"], env=env)
    assert r.returncode == 0 and r.stdout == "prefix={}\n".format(d), r.stderr
    moved = tmp_path / "elsewhere" / "moved-to-a-longer-name"
    moved.parent.mkdir()
    d.rename(moved)
    r = run_shim(["-e", moved, "hello"], env=env)
    assert r.returncode == 0 and r.stdout == "prefix={}\n".format(moved), r.stderr
    assert (moved / "share" / "where.txt").read_text() == "{}\n".format(moved)
    assert not (tmp_path / "unused-root").exists()


@pytest.mark.parametrize("shell", SHELL_IDS)
def test_run_in_env_taskvine_flow(small, tmp_path, shell):
    """TaskVine: unpack as `output`, call run_in_env once with no argument, move into the cache, run via a
    symlink from each task sandbox.  The environment must end up relocated for its physical cache path."""
    mini = tmp_path / "mini"
    (mini / "output").mkdir(parents=True)
    subprocess.run(["tar", "xf", small, "-C", str(mini / "output")], check=True)
    r = subprocess.run(SHELLS[shell] + ["output/bin/run_in_env"], cwd=mini, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    cache = tmp_path / "cache" / "poncho-1234"
    cache.parent.mkdir()
    (mini / "output").rename(cache)
    for task in ("t.1", "t.2"):
        sandbox = tmp_path / task
        sandbox.mkdir()
        os.symlink(cache, sandbox / "__vine_env_x")
        r = subprocess.run(SHELLS[shell] + ["__vine_env_x/bin/run_in_env", "hello"], cwd=sandbox,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(cache)), r.stderr
    r = subprocess.run(SHELLS[shell] + [str(cache / "bin" / "run_in_env")] + show_env_cmd(), capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)
    seen = json.loads(r.stdout)
    assert seen["CONDA_PREFIX"] == str(cache) and seen["DATA_DIR"] == str(cache / "DATA_DIR")
    assert seen["PONCHO_TEST_ACTIVATED"] == str(cache)
    args = ["a b", "", "*", "'q'"]
    r = subprocess.run([str(cache / "bin" / "run_in_env"), "python", "-c",
                        "import sys, json; print(json.dumps(sys.argv[1:]))"] + args,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert json.loads(r.stdout) == args
    r = subprocess.run([str(cache / "bin" / "run_in_env"), "sh", "-c", "exit 9"], stdin=subprocess.DEVNULL)
    assert r.returncode == 9


def test_installed_commands_are_the_package_file_and_run_without_poncho_wq(plain, tmp_path):
    scripts = sysconfig.get_path("scripts")
    with open(shim_path(), "rb") as f:
        data = f.read()
    for name in ("poncho_package_run", "python_package_run"):
        with open(os.path.join(scripts, name), "rb") as f:
            assert f.read() == data, "{} is stale: pip install -e . again".format(name)
    alone = tmp_path / "bin"
    alone.mkdir()
    shutil.copy(os.path.join(scripts, "python_package_run"), alone / "python_package_run")
    r = subprocess.run(["env", "-i", "PATH={}:/usr/bin:/bin".format(alone), "PONCHO_ENV_DIR={}".format(tmp_path / "r"),
                        "python_package_run", "-e", plain, "python", "-c",
                        "import importlib.util as u; print(u.find_spec('poncho_wq'))"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "None\n"), r.stderr


def test_default_roots(small, tmp_path):
    """On a worker the root is poncho-<uid> in the directory holding the worker's workspace (WORKER_TMPDIR is
    <workdir>/worker-<uid>-<pid>/cache/tmp for Work Queue, .../temp for TaskVine), which outlives the workspace
    (issue 27); TMPDIR gives poncho-<uid> elsewhere, and for a WORKER_TMPDIR of another shape."""
    base = shim_env()
    uid = os.getuid()
    for wt in (tmp_path / "wq" / "worker-{}-123".format(uid) / "cache" / "tmp",
               tmp_path / "vine" / "worker-{}-77".format(uid) / "temp"):
        wt.mkdir(parents=True)
        r = run_shim(["-e", small, "hello"], env=dict(base, WORKER_TMPDIR=str(wt), TMPDIR=str(tmp_path / "x")))
        root = (wt.parent.parent if wt.name == "tmp" else wt.parent).parent / "poncho-{}".format(uid)
        assert r.stdout == "prefix={}\n".format(root / ENV_ID), r.stderr
        assert oct(os.stat(root).st_mode & 0o777) == "0o700"
    (tmp_path / "x").mkdir()
    r = run_shim(["-e", small, "hello"], env=dict(base, WORKER_TMPDIR=str(tmp_path / "other"), TMPDIR=str(tmp_path / "x")))
    assert r.stdout == "prefix={}\n".format(tmp_path / "x" / "poncho-{}".format(uid) / ENV_ID), r.stderr
    td = tmp_path / "tmpdir"
    td.mkdir()
    (tmp_path / "worker").mkdir()
    r = run_shim(["-e", small, "hello"], env=dict(base, TMPDIR=str(td)), cwd=tmp_path / "worker")
    root = td / "poncho-{}".format(os.getuid())
    assert r.stdout == "prefix={}\n".format(root / ENV_ID), r.stderr
    assert oct(os.stat(root).st_mode & 0o777) == "0o700"


def test_keep_evicts_least_recently_used_but_never_one_in_use(small, tmp_path):
    root = tmp_path / "root"
    names = []
    for n in ("a", "b", "c"):
        names.append(str(tmp_path / "{}.tar.gz".format(n)))
        shutil.copy(small, names[-1])
    env = shim_env(root, PONCHO_ENV_KEEP=1)
    ready = tmp_path / "a-running"
    busy = subprocess.Popen(["dash", shim_path(), "-e", names[0], "sh", "-c", 'touch "$0"; sleep 30', str(ready)],
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(600):
            if ready.exists():
                break
            assert busy.poll() is None
            time.sleep(0.05)
        assert run_shim(["-e", names[1], "true"], env=env).returncode == 0
        assert run_shim(["-e", names[2], "true"], env=env).returncode == 0
        present = sorted(n.split(".")[0] for n in os.listdir(root) if n[0] in "abc")
        assert present == ["a", "c"]  # a is in use, b was least recently used
    finally:
        os.killpg(busy.pid, signal.SIGKILL)  # the shell and its sleep, which holds the use lock
        busy.wait()
    assert run_shim(["-e", names[1], "true"], env=env).returncode == 0
    present = sorted(n.split(".")[0] for n in os.listdir(root) if n[0] in "abc")
    assert present == ["b"]
    assert leftovers(root) == []


def test_gnu_tar_decompresses_with_pigz_when_the_worker_has_it(small, tmp_path):
    """With pigz on PATH, GNU tar extracts through it (threads of its own beside tar; bench/cold_start.py --codecs:
    0.79x the wall time of tar -xzf); a file named .tar.gz that is not gzip-compressed still unpacks (pigz is
    only used after the magic bytes say gzip), and without pigz plain gzip does the work."""
    real = shutil.which("pigz")
    assert real, "dev/setup.sh installs pigz"
    tools = tmp_path / "tools"
    tools.mkdir()
    log = tmp_path / "pigz.log"
    (tools / "pigz").write_text('#!/bin/sh\necho "$*" >> {}\nexec {} "$@"\n'.format(log, real))
    (tools / "pigz").chmod(0o755)
    env = shim_env(tmp_path / "root")
    env["PATH"] = "{}:{}".format(tools, env["PATH"])
    r = run_shim(["-e", small, "--", "hello"], env=env)
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == ["-d"]  # one decompression, through pigz

    plain_tar = tmp_path / "plain" / "named.tar.gz"
    plain_tar.parent.mkdir()
    subprocess.run("gzip -dc {} > {}".format(small, plain_tar), shell=True, check=True)
    r = run_shim(["-e", plain_tar, "--", "hello"], env=env)
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == ["-d"]  # not called for the uncompressed one

    # A worker without pigz: PATH = one directory mirroring every PATH entry's tools except pigz.
    no_pigz = tmp_path / "nopigz"
    no_pigz.mkdir()
    env2 = shim_env(tmp_path / "root2")
    for d in env2["PATH"].split(":"):
        for name in (os.listdir(d) if os.path.isdir(d) else ()):
            if name != "pigz" and not (no_pigz / name).exists():
                os.symlink(os.path.join(d, name), no_pigz / name)
    env2["PATH"] = str(no_pigz)
    r = run_shim(["-e", small, "--", "hello"], env=env2)
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == ["-d"]


# --- an environment with nothing to relocate starts no Python (issue 27) ------------------------------------------
def _spy_prefix(parent, name, with_record):
    """A prefix whose bin/python (the relocator's interpreter) notes every start in <parent>/python.log; with
    *with_record*, bin/hello holds the build prefix, so conda-pack records it for relocation."""
    prefix = os.path.join(str(parent), name + "_" + "p" * 40)
    for sub in ("bin", "conda-meta", "share"):
        os.makedirs(os.path.join(prefix, sub))
    with open(os.path.join(prefix, "conda-meta", "history"), "w") as f:
        f.write("# poncho_wq tests\n")
    with open(os.path.join(prefix, "bin", "python"), "w") as f:
        f.write('#!/bin/sh\necho "$0" >>{}\nexec /usr/bin/python3 "$@"\n'.format(os.path.join(str(parent), "python.log")))
    os.chmod(os.path.join(prefix, "bin", "python"), 0o755)
    with open(os.path.join(prefix, "share", "data.txt"), "w") as f:
        f.write("no prefix in here\n")
    if with_record:
        with open(os.path.join(prefix, "bin", "hello"), "w") as f:
            f.write('#!/bin/sh\necho "prefix={}"\n'.format(prefix))
        os.chmod(os.path.join(prefix, "bin", "hello"), 0o755)
    return prefix


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_an_environment_with_nothing_to_relocate_starts_no_python(tmp_path, shell):
    import tarfile

    from poncho_wq.archive.pack import NORELOCATE_MEMBER, pack_prefix

    log = tmp_path / "python.log"
    plain = str(tmp_path / ("env-" + "a" * 32 + ".tar.gz"))
    pack_prefix(_spy_prefix(tmp_path, "plain", False), plain, n_threads=1)
    recorded = str(tmp_path / ("env-" + "b" * 32 + ".tar.gz"))
    pack_prefix(_spy_prefix(tmp_path, "rec", True), recorded, n_threads=1)
    with tarfile.open(plain) as tf:
        assert NORELOCATE_MEMBER in tf.getnames()
    with tarfile.open(recorded) as tf:
        assert NORELOCATE_MEMBER not in tf.getnames()
    root = tmp_path / "root"
    # The shim's cache (cold), run_in_env in place (TaskVine's path), --unpack-to: no Python before the command.
    r = run_shim(["-e", plain, "sh", "-c", 'echo "$CONDA_PREFIX"'], shell=SHELLS[shell], env=shim_env(root))
    assert r.returncode == 0, r.stderr
    env_dir = root / ("env-" + "a" * 32)
    assert r.stdout.strip() == str(env_dir)
    assert (env_dir / ".poncho_ready").read_text() == str(env_dir) + "\n"
    inplace = tmp_path / "inplace"
    inplace.mkdir()
    subprocess.run(["tar", "-xzf", plain, "-C", str(inplace)], check=True)
    shutil.copy(run_in_env_path(), str(inplace / "bin" / "run_in_env"))
    r = subprocess.run(list(SHELLS[shell]) + [str(inplace / "bin" / "run_in_env"), "true"], env=shim_env(None),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert r.returncode == 0 and (inplace / ".poncho_ready").read_text() == str(inplace) + "\n", r.stderr
    r = run_shim(["--unpack-to", tmp_path / "to", "-e", plain, "true"], shell=SHELLS[shell], env=shim_env(root))
    assert r.returncode == 0, r.stderr
    assert not log.exists(), log.read_text()
    # With a record, the relocator (the environment's own Python) runs, as before.
    r = run_shim(["-e", recorded, "hello"], shell=SHELLS[shell], env=shim_env(root))
    assert r.stdout == "prefix={}\n".format(root / ("env-" + "b" * 32)), r.stderr
    assert log.read_text().count("\n") == 1


# ================================================ review of the worker scripts: the warm path runs no external command

REVIEW_SHELLS = {"dash": ("dash",), "busybox": ("busybox", "sh")}  # the review ran its cases under these two


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    """Tarballs of helpers.shimutil.floor_tarballs: "a" and "plain"."""
    return floor_tarballs(tmp_path_factory.mktemp("review"), ("a",))



TOOLS = ("id", "stat", "date", "mkdir", "mv", "rm", "tar", "gzip", "head", "tail", "find", "flock", "du", "ls",
         "touch", "uname", "getconf", "ldd", "cksum", "sleep", "cat", "python3", "python")


def _logging_path(tmp_path):
    """A PATH of wrappers that log their name, then run the real tool: what the scripts start, fork by fork."""
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    log = tmp_path / "exec.log"
    for tool in TOOLS:
        real = shutil.which(tool)
        if real:
            path = wrap / tool
            path.write_text('#!/bin/sh\necho {0} >>"{1}"\nexec {2} "$@"\n'.format(tool, log, real))
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(wrap), log


def _execs(log):
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize("shell", sorted(REVIEW_SHELLS))
def test_warm_paths_start_no_external_command(envs, tmp_path, shell):
    wrap, log = _logging_path(tmp_path)
    root = tmp_path / "root"
    for extra, expected in (({}, []), ({"PONCHO_ENV_BUDGET_MB": "100"}, ["flock"])):
        env = shim_env(root, PATH=wrap + ":" + os.environ["PATH"], **extra)
        assert run_shim(["-e", envs["a"], "true"], shell=REVIEW_SHELLS[shell], env=env).returncode == 0  # cold
        log.unlink()
        r = run_shim(["-e", envs["a"], "/bin/true"], shell=REVIEW_SHELLS[shell], env=env)
        assert r.returncode == 0 and _execs(log) == expected, (extra, r.stderr, _execs(log))
    # The default root (no PONCHO_ENV_DIR, no WORKER_TMPDIR) names itself with one `id -u`, and holds the use lock
    # of its default budget (issue 27) with one flock, unless the budget is off.
    os.mkdir(str(tmp_path / "tmp"))
    for extra, expected in (({}, ["id", "flock"]), ({"PONCHO_ENV_BUDGET_MB": "off"}, ["id"])):
        env = shim_env(None, PATH=wrap + ":" + os.environ["PATH"], TMPDIR=str(tmp_path / "tmp"), **extra)
        assert run_shim(["-e", envs["a"], "true"], shell=REVIEW_SHELLS[shell], env=env).returncode == 0
        log.unlink()
        assert run_shim(["-e", envs["a"], "/bin/true"], shell=REVIEW_SHELLS[shell], env=env).returncode == 0
        assert _execs(log) == expected, extra
    # run_in_env, warm (relocated for its place): nothing but the command.
    d = tmp_path / "env"
    d.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(d)], check=True)
    env = shim_env(None, PATH=wrap + ":" + os.environ["PATH"])
    argv = list(REVIEW_SHELLS[shell]) + [str(d / "bin" / "run_in_env"), "/bin/true"]
    assert subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode == 0
    log.unlink()
    assert subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode == 0
    assert _execs(log) == []
