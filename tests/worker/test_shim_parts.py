"""The run shim assembling an environment from content-addressed parts (``--part``, issue 28): the same tree as
the tarball's unpack, parts unpacked once per worker and shared by hard links, untouched by relocation, atomic
under SIGKILL, concurrent assemblies, and a budget that never removes a part an environment or an assembly uses.
Real shim runs under dash, bash --posix and busybox sh, on environments packed by poncho_wq's packer."""

import fcntl
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from helpers.partenv import make_env
from helpers.shimutil import SHELLS, leftovers, run_shim, shim_env, start_shim, tar_members, unpack_count
from poncho_wq.archive.parts import cut_parts
from poncho_wq.shim import RUN_IN_ENV, shim_error_from, shim_path

pytestmark = pytest.mark.usefixtures("shells")

BIG = 5_000_000
SITE = "lib/python3.11/site-packages/"


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    """Environments a and b share bigpkg 1.0 (a part of its own) and differ in a small distribution; their parts."""
    d = tmp_path_factory.mktemp("partenvs")
    out = {}
    for name, key, dists in (("a", "a1", {"bigpkg": ("1.0", BIG), "small": ("2.0", 1000)}),
                             ("b", "b2", {"bigpkg": ("1.0", BIG), "small": ("2.1", 1000)})):
        tarball = make_env(d, key, dists)
        out[name] = (tarball, cut_parts(tarball, str(d)))
    return out


def _args(env):
    tarball, parts = env
    args = ["-e", os.path.basename(tarball)]
    for p in parts:
        args += ["--part", p.path]
    return args


def _tree(d):
    out = set()
    for top, dirs, files in os.walk(d):
        for n in files + [x for x in dirs if os.path.islink(os.path.join(top, x))]:
            rel = os.path.relpath(os.path.join(top, n), d)
            if not rel.startswith(".poncho_"):
                out.add(rel)
    return out


def _env_dir(root, env):
    return os.path.join(str(root), os.path.basename(env[0])[:-len(".tar.gz")])


def _part_dir(root, env, role):
    (p,) = [p for p in env[1] if p.role == role]
    return os.path.join(str(root), p.name[:-len(".tar.gz")])


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_assembled_env_is_the_tarball_relocated_and_parts_stay_untouched(envs, tmp_path, shell):
    root = tmp_path / "root"
    r = run_shim(_args(envs["a"]) + ["sh", "-c", 'cat "$CONDA_PREFIX/' + SITE + 'bigpkg/where.txt"'],
                 shell=SHELLS[shell], env=shim_env(root))
    assert r.returncode == 0, r.stderr
    d = _env_dir(root, envs["a"])
    assert r.stdout.strip() == d  # relocated: the placeholder replaced by the final prefix
    assert _tree(d) == set(tar_members(envs["a"][0]))
    big = _part_dir(root, envs["a"], "dist:bigpkg")
    with open(os.path.join(big, SITE, "bigpkg/where.txt")) as f:
        assert "poncho_wq_part_prefix" in f.read()  # the part kept its placeholder
    # One inode for the unchanged files (hard links), another for the relocated one.
    assert os.stat(os.path.join(d, SITE, "bigpkg/blob.bin")).st_ino == \
        os.stat(os.path.join(big, SITE, "bigpkg/blob.bin")).st_ino
    assert os.stat(os.path.join(d, SITE, "bigpkg/where.txt")).st_ino != \
        os.stat(os.path.join(big, SITE, "bigpkg/where.txt")).st_ino
    # Warm: nothing unpacked again.
    assert run_shim(_args(envs["a"]) + ["true"], shell=SHELLS[shell], env=shim_env(root)).returncode == 0
    assert unpack_count(root / "unpack.log") == len(envs["a"][1]) + 1


def test_a_shared_part_is_unpacked_once_for_two_environments(envs, tmp_path):
    root = tmp_path / "root"
    for name in "ab":
        r = run_shim(_args(envs[name]) + ["true"], env=shim_env(root))
        assert r.returncode == 0, r.stderr
    with open(root / "unpack.log") as f:
        ids = [line.split()[2] for line in f]
    big = os.path.basename(_part_dir(root, envs["a"], "dist:bigpkg"))
    assert ids.count(big) == 1 and ids.count(os.path.basename(_part_dir(root, envs["a"], "interpreter"))) == 1
    assert os.stat(os.path.join(_env_dir(root, envs["a"]), SITE, "bigpkg/blob.bin")).st_ino == \
        os.stat(os.path.join(_env_dir(root, envs["b"]), SITE, "bigpkg/blob.bin")).st_ino


def _slow_cp(tmp_path):
    """A PATH directory whose cp, for a hard-link copy, touches <dir>/linking and sleeps 30 s first."""
    d = tmp_path / "slowcp"
    d.mkdir()
    (d / "cp").write_text('#!/bin/sh\ncase "$1" in -al) touch "{0}/linking"; sleep 30 ;; esac\nexec /bin/cp "$@"\n'
                          .format(d))
    (d / "cp").chmod(0o755)
    return d


def _wait_for(path, proc):
    for _ in range(600):
        if os.path.exists(path):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("{} never appeared".format(path))


def test_sigkill_mid_assembly_leaves_no_ready_environment(envs, tmp_path):
    root = tmp_path / "root"
    slow = _slow_cp(tmp_path)
    env = shim_env(root)
    env["PATH"] = "{}:{}".format(slow, env["PATH"])
    proc = start_shim(_args(envs["a"]) + ["true"], env=env)
    _wait_for(slow / "linking", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    d = _env_dir(root, envs["a"])
    assert not os.path.exists(os.path.join(d, ".poncho_ready"))
    r = run_shim(_args(envs["a"]) + ["sh", "-c", 'cat "$CONDA_PREFIX/' + SITE + 'small/__init__.py"'],
                 env=shim_env(root))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "VERSION = '2.0'\n"
    assert _tree(d) == set(tar_members(envs["a"][0]))
    assert leftovers(root) == []


def test_two_environments_assembled_concurrently(envs, tmp_path):
    root = tmp_path / "root"
    procs = [start_shim(_args(envs[n]) + ["sh", "-c", 'cat "$CONDA_PREFIX/' + SITE + 'small/__init__.py"'],
                        env=shim_env(root)) for n in "abab"]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1] for o in outs]
    assert [o[0] for o in outs] == ["VERSION = '2.0'\n", "VERSION = '2.1'\n"] * 2
    with open(root / "unpack.log") as f:
        ids = [line.split()[2] for line in f]
    assert len(ids) == len(set(ids))  # every part and environment once
    for n in "ab":
        assert _tree(_env_dir(root, envs[n])) == set(tar_members(envs[n][0]))
    assert leftovers(root) == []


def test_budget_never_removes_a_part_in_use(envs, tmp_path):
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_ENV_BUDGET_MB=1)  # bigpkg alone is 5 MB: always over budget
    assert run_shim(_args(envs["a"]) + ["true"], env=env).returncode == 0
    big = _part_dir(root, envs["a"], "dist:bigpkg")
    a_small = _part_dir(root, envs["a"], "group")
    # a is idle once b runs: a goes, and so do a's parts no environment lists, but not the parts b links...
    # ...as long as no assembly holds the parts lock (shared, as an assembling shim holds it).
    with open(root / ".parts.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        r = run_shim(_args(envs["b"]) + ["true"], env=env)
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(_env_dir(root, envs["a"]))
        assert os.path.isdir(big) and os.path.isdir(a_small)  # an assembly is running: no part goes
    # a again (cold: it was evicted; its parts were kept, so it is only assembled): b is idle and goes, and with
    # no assembly running, so does b's small part, which no environment lists any more.
    b_small = _part_dir(root, envs["b"], "group")
    r = run_shim(_args(envs["a"]) + ["true"], env=env)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(_env_dir(root, envs["b"])) and not os.path.exists(b_small)
    assert os.path.isdir(a_small) and os.path.isfile(os.path.join(big, ".poncho_ready"))  # a lists them
    assert os.path.isfile(os.path.join(_env_dir(root, envs["a"]), ".poncho_ready"))
    # The environment's recorded size is what it adds to its parts (hard links counted once).
    with open(os.path.join(_env_dir(root, envs["a"]), ".poncho_size")) as f:
        assert int(f.read()) < 1000
    assert leftovers(root) == []


def test_part_named_otherwise_is_refused(envs, tmp_path):
    r = run_shim(["-e", os.path.basename(envs["a"][0]), "--part", envs["a"][0], "true"],
                 env=shim_env(tmp_path / "root"))
    assert r.returncode == 1 and "part-<hex>.tar.gz" in r.stderr


@pytest.fixture(scope="module")
def glibc999(tmp_path_factory):
    """An environment whose poncho/floor needs glibc 9.99 (no worker has it), and its parts."""
    d = tmp_path_factory.mktemp("floorparts")
    tarball = make_env(d, "f9", {"small": ("1.0", 1000)}, floor="libc=glibc\nglibc=9.99\n")
    return tarball, cut_parts(tarball, str(d))


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_floor_of_an_environment_from_parts_is_checked_before_any_part_is_unpacked(glibc999, tmp_path, shell):
    """The own part's poncho/floor is checked before anything is unpacked: exit 4 and the floor line, the root left
    empty; also on a worker whose getconf and ldd fail, where the worker's glibc is found by a glob over the
    loader's names (/lib64/ld-linux*.so.*).  The shim's loop over the parts ran the check with globbing off (set -f),
    so there the worker's libc was unknown and the environment ran."""
    nolibc = tmp_path / "nolibc"  # getconf and ldd that fail, first on PATH
    nolibc.mkdir()
    for name in ("getconf", "ldd"):
        (nolibc / name).write_text("#!/bin/sh\nexit 1\n")
        (nolibc / name).chmod(0o755)
    glibc = os.confstr("CS_GNU_LIBC_VERSION").split()[1]
    for i, path in enumerate((os.environ["PATH"], "{}:{}".format(nolibc, os.environ["PATH"]))):
        root = tmp_path / "root{}".format(i)
        root.mkdir()
        r = run_shim(_args(glibc999) + ["echo", "ran"], shell=SHELLS[shell], env=shim_env(root, PATH=path))
        assert (r.returncode, r.stdout) == (4, ""), (path, r.stderr)
        assert "needs glibc 9.99 or newer, this worker" in r.stderr and "has glibc " + glibc in r.stderr, r.stderr
        assert os.listdir(str(root)) == []


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_part_that_cannot_be_linked_stops_the_assembly_there(envs, tmp_path, shell):
    """_pr_assemble's walk over the parts stops at the first part whose files cannot be hard-linked (its status 1
    and _pr_why are the run's exit 3 and message): no other part is linked, no environment is left, no temp dir;
    the parts stay ready. The same with --extract-to: NEWDIR is not made."""
    bin_dir = tmp_path / "failcp"  # cp -al logs its call and fails; any other cp is the real one
    bin_dir.mkdir()
    log = tmp_path / "cp.log"
    (bin_dir / "cp").write_text('#!/bin/sh\ncase "$1" in -al) echo "$*" >>"{}"; exit 1 ;; esac\nexec /bin/cp "$@"\n'
                                .format(log))
    (bin_dir / "cp").chmod(0o755)
    path = "{}:{}".format(bin_dir, os.environ["PATH"])
    tarball, parts = envs["a"]
    first = parts[0].name[:-len(".tar.gz")]
    for i, extra in enumerate(([], ["--extract-to", str(tmp_path / "newdir")])):
        root = tmp_path / "root{}".format(i)
        if log.exists():
            log.unlink()
        r = run_shim(extra + _args(envs["a"]) + ([] if extra else ["echo", "ran"]), shell=SHELLS[shell],
                     env=shim_env(root, PATH=path))
        assert (r.returncode, r.stdout) == (3, ""), r.stderr
        assert "could not link the files of part {} (another file system? disk full?)".format(first) in r.stderr
        with open(str(log)) as f:
            assert len(f.readlines()) == 1  # the walk stopped at the first part
        assert not os.path.exists(_env_dir(root, envs["a"])) and leftovers(root) == []
        for p in parts:
            assert os.path.isfile(os.path.join(str(root), p.name[:-len(".tar.gz")], ".poncho_ready"))
    assert not (tmp_path / "newdir").exists()
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith(".poncho_extract")] == []


_EACHPART_SCRIPT = r"""
_pr_nl='
'
%s
show() { case $- in *f*) g=off ;; *) g=on ;; esac; printf '%%s|%%s|%%s
' "$*" "$IFS" "$g"; }
stop2() { show "$@"; [ "$1" != two ] || return 5; }
inner() { show "$@"; return 7; }
outer() { show "$@"; _pr_eachpart "x" inner; return 0; }
caller() { _pr_eachpart "$1" stop2 || return; echo not-reached; }
IFS=':'
list="one${_pr_nl}${_pr_nl}two words${_pr_nl}*${_pr_nl}[a]?${_pr_nl}"
_pr_eachpart "$list" show a1 'b 2'; echo "status $?|$IFS|$-"
_pr_eachpart "one${_pr_nl}two${_pr_nl}three" stop2; echo "status $?|$IFS|$-"
caller "one${_pr_nl}two${_pr_nl}three"; echo "caller $?|$IFS|$-"
_pr_eachpart "" show; echo "empty $?"
_pr_eachpart "a${_pr_nl}b" outer; echo "nested $?|$IFS|$-"
"""


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_walk_over_the_parts(tmp_path, shell):
    """_pr_eachpart, the shim's one loop over a list of parts (one path a line): each line whole (spaces, glob
    characters: never split, never expanded; empty lines skipped), the callback run with the caller's IFS and
    globbing on, extra arguments first; the walk stops at the first non-zero status and returns it (a caller's
    `|| return` passes it on, as a `return` in the old loop bodies did); IFS and globbing restored on the way
    out; a callback may walk another list."""
    with open(shim_path()) as f:
        (function,) = re.findall(r"^_pr_eachpart\(\) \{\n.*?^\}\n", f.read(), re.M | re.S)
    (tmp_path / "a").mkdir()  # something for `*` and `[a]?` to match, were they expanded
    (tmp_path / "ab").mkdir()
    argv = [shutil.which(SHELLS[shell][0])] + list(SHELLS[shell][1:])
    r = subprocess.run(argv + ["-c", _EACHPART_SCRIPT % function], cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    assert r.stderr == ""
    out = []
    for line in r.stdout.splitlines():
        if line.startswith(("status", "caller", "nested")):  # after a walk: $- without f (set +f)
            line, flags = line.rsplit("|", 1)
            assert "f" not in flags, r.stdout
        out.append(line)
    assert out == [  # "$*" joins with IFS's first character, the caller's ":"
        "a1:b 2:one|:|on", "a1:b 2:two words|:|on", "a1:b 2:*|:|on", "a1:b 2:[a]?|:|on", "status 0|:",
        "one|:|on", "two|:|on", "status 5|:",
        "one|:|on", "two|:|on", "caller 5|:",
        "empty 0",
        "a|:|on", "x|:|on", "b|:|on", "x|:|on", "nested 0|:",
    ], r.stdout


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_assembly_under_the_mkdir_lock(envs, tmp_path, shell):
    root = tmp_path / "root"
    r = run_shim(_args(envs["b"]) + ["sh", "-c", 'cat "$CONDA_PREFIX/' + SITE + 'small/__init__.py"'],
                 shell=SHELLS[shell], env=shim_env(root, PONCHO_LOCK="mkdir"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "VERSION = '2.1'\n"
    assert _tree(_env_dir(root, envs["b"])) == set(tar_members(envs["b"][0]))
    assert leftovers(root) == []


def test_extract_to_assembles_from_parts_unpacked_once_per_worker(envs, tmp_path):
    """TaskVine's unpack mini task with parts (--extract-to NEWDIR -e env-<hex> --part ...): each part unpacked once
    in the per-worker root for both environments, NEWDIR hard-linked from them (the tarball's members, not
    relocated); relocating NEWDIR where it is (run_in_env's, or the shim's -e DIR) leaves the parts as unpacked."""
    root = tmp_path / "root"
    for name in "ab":
        r = run_shim(["--extract-to", tmp_path / name] + _args(envs[name]), env=shim_env(root))
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
        assert _tree(str(tmp_path / name)) == set(tar_members(envs[name][0]))
        assert not (tmp_path / name / ".poncho_ready").exists()
    with open(root / "unpack.log") as f:
        ids = [line.split()[2] for line in f]
    names = {p.name[:-len(".tar.gz")] for name in "ab" for p in envs[name][1]}
    assert sorted(ids) == sorted(names)  # each part once, shared ones included; no environment in the root
    big = _part_dir(root, envs["a"], "dist:bigpkg")
    for name in "ab":
        assert os.stat(os.path.join(str(tmp_path / name), SITE, "bigpkg/blob.bin")).st_ino == \
            os.stat(os.path.join(big, SITE, "bigpkg/blob.bin")).st_ino
    r = run_shim(["-e", tmp_path / "a", "sh", "-c", 'cat "$CONDA_PREFIX/' + SITE + 'bigpkg/where.txt"'],
                 env=shim_env(root))
    assert (r.returncode, r.stdout.strip()) == (0, str(tmp_path / "a")), r.stderr
    with open(os.path.join(big, SITE, "bigpkg/where.txt")) as f:
        assert "poncho_wq_part_prefix" in f.read()
    r = run_shim(["--extract-to", tmp_path / "c", "-e", "env-" + "c" * 32, "--part", envs["a"][1][0].path, "true"],
                 env=shim_env(root))
    assert r.returncode == 1 and "--extract-to takes only" in r.stderr


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_extract_to_makes_a_stub_of_a_failed_fetch_note_and_unpacks_no_part(envs, tmp_path, shell):
    """TaskVine's url mode with parts (poncho_wq.taskvine._part_fetch): a part whose fetch failed is the fetch's
    note. The unpack mini task then gives a stub environment whose run_in_env fails every command with the note's
    code and message (what PonchoVineTask.shim_error reports), and exits 0 with the per-worker root untouched:
    not even the good parts before the note are unpacked, and no part-<hex> is made of the note."""
    root = tmp_path / "root"
    tarball, parts = envs["a"]
    note = tmp_path / "fetched" / parts[-1].name
    note.parent.mkdir()
    message = "could not fetch {} from http://127.0.0.1:1/x: curl: (22) error: 404 (exit 22)".format(note.name)
    note.write_text("poncho-fetch-failed\n2\n" + message + "\n")
    args = ["-e", os.path.basename(tarball)]
    for p in parts[:-1]:
        args += ["--part", p.path]
    out = tmp_path / "output"
    r = run_shim(["--extract-to", out] + args + ["--part", note], shell=SHELLS[shell], env=shim_env(root))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert not root.exists()
    assert sorted(os.listdir(str(out))) == ["bin", "poncho"]
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith(".poncho_extract")] == []
    stub = str(out / "bin" / "run_in_env")
    assert subprocess.run([stub], capture_output=True).returncode == 0  # as the mini task calls it: no command
    r = subprocess.run([stub, "sh", "-c", "echo ran"], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (2, "")
    assert shim_error_from(r.returncode, r.stderr, RUN_IN_ENV) == (2, message)  # as PonchoVineTask.shim_error


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_parts_unpacked_side_by_side_and_a_bad_one_fails_the_run(envs, tmp_path, shell):
    """Missing parts are unpacked side by side on a worker with more than one core (PONCHO_DEBUG names the phase);
    one that cannot be unpacked fails the run with tar's exit status 3 and its message, leaves no environment and
    no temp dir, and the parts unpacked beside it are ready for the next run."""
    tarball, parts = envs["a"]
    bad = tmp_path / "bad" / os.path.basename(parts[-1].path)
    bad.parent.mkdir()
    with open(parts[-1].path, "rb") as f:
        bad.write_bytes(f.read()[:200])  # a gzip cut short
    args = ["-e", os.path.basename(tarball)]
    for p in parts[:-1]:
        args += ["--part", p.path]
    root = tmp_path / "root"
    r = run_shim(args + ["--part", str(bad), "true"], shell=SHELLS[shell], env=shim_env(root, PONCHO_DEBUG="1"))
    assert r.returncode == 3, r.stderr
    assert "could not extract " + str(bad) in r.stderr
    if os.cpu_count() > 1:
        assert "parts side by side" not in r.stderr  # it failed: the phase is never reached
    assert not os.path.exists(_env_dir(root, envs["a"]))
    for p in parts[:-1]:
        assert os.path.isfile(os.path.join(root, p.name[:-len(".tar.gz")], ".poncho_ready"))
    assert leftovers(root) == []
    # With the good part: only it is unpacked now, then the environment is assembled.
    n = unpack_count(root / "unpack.log")
    r = run_shim(_args(envs["a"]) + ["true"], shell=SHELLS[shell], env=shim_env(root))
    assert r.returncode == 0, r.stderr
    assert unpack_count(root / "unpack.log") == n + 2
    assert _tree(_env_dir(root, envs["a"])) == set(tar_members(tarball))
    # In a fresh root every part is missing.
    root2 = tmp_path / "root2"
    r = run_shim(_args(envs["a"]) + ["true"], shell=SHELLS[shell],
                 env=shim_env(root2, PONCHO_DEBUG="1", PONCHO_ENV_BUDGET_MB="10240"))
    assert r.returncode == 0, r.stderr
    assert ("parts side by side" in r.stderr) == (os.cpu_count() > 1 and len(parts) > 1)
    assert unpack_count(root2 / "unpack.log") == len(parts) + 1
    assert _tree(_env_dir(root2, envs["a"])) == set(tar_members(tarball))
    assert leftovers(root2) == []
    # The budget's size records: each part's from the one du after the assembly, the environment's what it adds.
    for p in parts:
        d = os.path.join(root2, p.name[:-len(".tar.gz")])
        with open(os.path.join(d, ".poncho_size")) as f:
            kb = int(f.read())
        du = int(subprocess.run(["du", "-sk", d], capture_output=True, text=True, check=True).stdout.split()[0])
        assert abs(kb - du) <= 8, (p.name, kb, du)
    with open(os.path.join(_env_dir(root2, envs["a"]), ".poncho_size")) as f:
        assert int(f.read()) < 1000
