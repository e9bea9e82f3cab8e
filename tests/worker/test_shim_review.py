"""Regressions found by a hostile review of the worker-side sh scripts (floor check, budget eviction, run_in_env's
relocate-once), each run under dash and busybox sh, plus the warm path's count of external commands.

Every test here failed against the scripts as they were before the fix it names (checked by running it with the
old files): sh arithmetic that died on a number (PONCHO_ENV_BUDGET_MB=08, a 20-digit .size), a refused
environment counted as one of PONCHO_ENV_KEEP's, a planted ``.<name>.used`` making the shim delete a directory
that is no cache entry, leftovers of a killed eviction kept forever outside the budget, a poncho/floor read whole
(quadratic: 64 KiB of short lines took 7 s under dash, 47 s under bash), a 20-digit glibc field printing the
shell's errors, and run_in_env with no argument no longer preparing an environment used in place.
"""

import os
import shutil
import stat
import subprocess
import time

import pytest

from helpers.shimutil import make_prefix, pack, run_shim, shim_env
from poncho_wq.archive.floor import FLOOR_MEMBER, write_floor
from poncho_wq.archive.pack import pack_prefix
from poncho_wq.shim import shim_path

pytestmark = pytest.mark.usefixtures("shells")

SHELLS = {"dash": ("dash",), "busybox": ("busybox", "sh")}
MACHINE = os.uname().machine


def _set_floor(prefix, text):
    with open(os.path.join(prefix, FLOOR_MEMBER), "w") as f:
        f.write(text)


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    """Real poncho_wq tarballs (poncho/floor first) of one small prefix: "a", "b" (same content, other names),
    "foreign" (machine=aarch64), "long" (1,000 lines before machine=aarch64), "bigglibc" (a 20-digit field),
    "hostile" (shell syntax in its values); and "plain": conda-pack's own tarball of it, with bin/run_in_env."""
    d = tmp_path_factory.mktemp("review")
    prefix = make_prefix(d, run_in_env=True)
    write_floor(prefix)
    out = {"prefix": prefix}
    floors = {
        "a": None, "b": None,
        "foreign": "machine=aarch64\n",
        "long": "# x\n" * 1000 + "machine=aarch64\n",
        "bigglibc": "libc=glibc\nglibc=99999999999999999999.1\n",
        "hostile": "machine=$(touch {0}/dollar)`touch {0}/tick`;touch {0}/semi\n".format(d),
    }
    for i, (name, floor) in enumerate(floors.items()):
        write_floor(prefix)
        if floor is not None:
            _set_floor(prefix, floor)
        out[name] = str(d / "env-{:032x}.tar.gz".format(i + 1))
        pack_prefix(prefix, out[name], n_threads=1)
    write_floor(prefix)
    out["plain"] = pack(prefix, d / "plain.tar.gz")
    out["dir"] = str(d)
    return out


def _run(envs, args, root, shell, **extra):
    return run_shim(args, shell=SHELLS[shell], env=shim_env(root, **extra))


def _age(path, seconds):
    t = os.stat(path).st_mtime - seconds
    os.utime(path, (t, t))


# --- budget eviction ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_budget_and_size_values_never_end_the_shell(envs, tmp_path, shell):
    """PONCHO_ENV_BUDGET_MB=08 (sh arithmetic: invalid octal) and a .size of 20 digits (past 64 bits) made dash
    exit 2 after the unpack, without running the command; 010 meant 8 MiB."""
    root = tmp_path / "root"
    r = _run(envs, ["-e", envs["a"], "echo", "ran"], root, shell, PONCHO_ENV_BUDGET_MB="08")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    # An idle entry whose recorded size is garbage of digits: measured again, the command runs.
    entry = root / "other"
    entry.mkdir()
    (entry / ".poncho_ready").write_text(str(entry) + "\n")
    (entry / ".poncho_used").touch()
    (entry / ".poncho_size").write_text("9" * 20 + "\n")
    r = _run(envs, ["-e", envs["b"], "echo", "ran"], root, shell, PONCHO_ENV_BUDGET_MB="100")
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    size = (entry / ".poncho_size").read_text()
    assert size.strip().isdigit() and len(size) < 9, size
    r = _run(envs, ["-e", envs["b"], "true"], root, shell, PONCHO_ENV_BUDGET_MB="1" + "0" * 9)
    assert r.returncode == 1 and "at most 9 digits" in r.stderr, r.stderr


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_refused_environment_is_not_counted_by_keep(envs, tmp_path, shell):
    """A run refused before unpacking (here by the floor check) left <root>/.<id>.used without a directory; it
    counted as one of PONCHO_ENV_KEEP's environments and pushed a real one out.  Records now live inside their
    entry (a refused run has none); what it leaves, its lock file, goes with the next eviction pass."""
    root = tmp_path / "root"
    keep = {"PONCHO_ENV_KEEP": "2"}
    assert _run(envs, ["-e", envs["a"], "true"], root, shell, **keep).returncode == 0
    id_a, id_f = (os.path.basename(envs[n])[:-7] for n in ("a", "foreign"))
    _age(root / id_a / ".poncho_used", 20)
    r = _run(envs, ["-e", envs["foreign"], "true"], root, shell, **keep)
    assert r.returncode == 4 and "built for aarch64" in r.stderr, r.stderr
    assert (root / ".{}.lock".format(id_f)).exists()  # what the refused run leaves (its use lock)
    assert _run(envs, ["-e", envs["b"], "true"], root, shell, **keep).returncode == 0
    id_b = os.path.basename(envs["b"])[:-7]
    assert (root / id_a).is_dir() and (root / id_b).is_dir(), sorted(os.listdir(root))
    assert not (root / ".{}.lock".format(id_f)).exists()  # the stale lock file is cleaned up


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_planted_used_files_never_remove_what_is_no_cache_entry(envs, tmp_path, shell):
    """A shared PONCHO_ENV_DIR: another user plants ".data.used" and ".x data.used" (the list of .used files is
    word-split) next to a directory "data" that is not a cache entry; a run with a budget of 0 deleted it.  The
    same with the records inside directories (where they live now): "data/.poncho_used", "x data/.poncho_used",
    "*/.poncho_used" (the word "*" must not be globbed)."""
    root = tmp_path / "root"
    data = root / "data"
    data.mkdir(parents=True)
    (data / "results.txt").write_text("precious\n")
    (root / ".data.used").touch()
    (root / ".x data.used").touch()
    for name in ("data", "x data", "*"):
        (root / name).mkdir(exist_ok=True)
        (root / name / ".poncho_used").touch()
    r = _run(envs, ["-e", envs["a"], "true"], root, shell, PONCHO_ENV_BUDGET_MB="0")
    assert r.returncode == 0, r.stderr
    assert (data / "results.txt").read_text() == "precious\n"


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_leftovers_of_a_killed_eviction_are_swept(envs, tmp_path, shell):
    """A shim killed while it removed an evicted entry (.<id>.tmp.evict<pid>) or unpacked one (.<id>.tmp.<pid>)
    left a tree counted in no budget and removed only when that id was unpacked again; now the next eviction
    sweeps those of dead pids (and spares a live one's)."""
    root = tmp_path / "root"
    root.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = os.getpid()
    names = {"gone1": ".old-env.tmp.evict{}".format(dead.pid), "gone2": ".other-env.tmp.{}".format(dead.pid),
             "live": ".third-env.tmp.{}".format(live)}
    for name in names.values():
        (root / name / "lib").mkdir(parents=True)
        (root / name / "lib" / "blob").write_bytes(b"x" * 4096)
    r = _run(envs, ["-e", envs["a"], "true"], root, shell, PONCHO_ENV_BUDGET_MB="100")
    assert r.returncode == 0, r.stderr
    assert not (root / names["gone1"]).exists() and not (root / names["gone2"]).exists()
    assert (root / names["live"] / "lib" / "blob").exists()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_an_evicted_environment_linked_from_the_shared_sandbox_comes_back(envs, tmp_path, shell):
    """Work Queue's specify_environment route: --unpack-to "$WORK_QUEUE_SANDBOX"/ENV-env, a sandbox its tasks
    share, becomes a link into the per-worker cache.  Once PONCHO_ENV_KEEP evicted the entry, the dangling link
    made every later task of that environment on the worker fail (exit 4, "a symbolic link made by another
    user")."""
    root, sandbox = tmp_path / "root", tmp_path / "workspace"
    sandbox.mkdir()
    link = sandbox / "a-env"
    env = shim_env(root, WORK_QUEUE_SANDBOX=sandbox)
    r = run_shim(["-e", envs["a"], "--unpack-to", link, "true"], shell=SHELLS[shell], env=env)
    assert r.returncode == 0 and link.is_symlink(), r.stderr
    # Unpacked without a setting: adopted by the next eviction with its directory's mtime (busybox ls -t sorts
    # by whole seconds, so make the order plain).
    _age(root / os.path.basename(envs["a"])[:-7], 20)
    r = run_shim(["-e", envs["b"], "true"], shell=SHELLS[shell], env=dict(env, PONCHO_ENV_KEEP="1"))
    assert r.returncode == 0 and not link.exists(), r.stderr  # evicted: the link dangles
    r = run_shim(["-e", envs["a"], "--unpack-to", link, "hello"], shell=SHELLS[shell], env=env)
    entry = root / os.path.basename(envs["a"])[:-7]
    assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(entry)), r.stderr
    assert os.readlink(str(link)) == str(entry)


def _hold(shell, args, env, tmp_path, tag, script=""):
    """Start a shim run whose command (after *script*) signals it runs, then waits for a release file."""
    ready, release = tmp_path / (tag + ".ready"), tmp_path / (tag + ".release")
    proc = subprocess.Popen(
        list(SHELLS[shell]) + [shim_path()] + [str(a) for a in args] + [
            "sh", "-c", script + 'touch "$0"; while [ ! -e "$1" ]; do sleep 0.05; done; '
            'cat "$CONDA_PREFIX/share/where.txt"', str(ready), str(release)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(1200):
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    if not ready.exists():
        proc.kill()
        raise AssertionError(proc.communicate()[1])
    return proc, release


def _release(proc, release):
    release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip(), err  # its environment was still there at the end


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_run_through_the_sandbox_link_holds_the_use_lock(envs, tmp_path, shell):
    """Work Queue's specify_environment route: the worker's later tasks reach the cache entry through the link
    the first one made in the shared sandbox.  They ran without its use lock, so another task's eviction
    removed the environment under their command."""
    root, sandbox = tmp_path / "root", tmp_path / "workspace"
    sandbox.mkdir()
    link = sandbox / "a-env"
    env = shim_env(root, WORK_QUEUE_SANDBOX=sandbox, PONCHO_ENV_BUDGET_MB="0")
    assert run_shim(["-e", envs["a"], "--unpack-to", link, "true"], shell=SHELLS[shell], env=env).returncode == 0
    assert link.is_symlink()
    proc, release = _hold(shell, ["-e", envs["a"], "--unpack-to", link], env, tmp_path, "held")
    try:
        r = run_shim(["-e", envs["b"], "true"], shell=SHELLS[shell], env=env)  # evicts every idle entry
        assert r.returncode == 0, r.stderr
    finally:
        _release(proc, release)
    assert (root / os.path.basename(envs["a"])[:-7]).is_dir()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_command_reusing_fd_9_keeps_its_environment_in_use(envs, tmp_path, shell):
    """The use lock is fd 9 (base) and 8 (code layer) of the command; a command taking fd 9 for a lock of its own
    (`exec 9>mylock; flock 9`, flock(1)'s idiom) dropped it, and another task's eviction removed the environment
    under the running command.  The lock now has a second descriptor."""
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_ENV_BUDGET_MB="0")
    proc, release = _hold(shell, ["-e", envs["a"]], env, tmp_path, "held", script='exec 9>"$0.lock" 8>&-; ')
    try:
        r = run_shim(["-e", envs["b"], "true"], shell=SHELLS[shell], env=env)  # evicts every idle entry
        assert r.returncode == 0, r.stderr
    finally:
        _release(proc, release)
    assert (root / os.path.basename(envs["a"])[:-7]).is_dir()


# --- floor check -------------------------------------------------------------------------------------------

def test_a_big_endian_ppc64_binary_is_not_called_ppc64le(tmp_path):
    """ELF machine 21 is PPC64 in both byte orders: a big-endian environment was recorded as ppc64le, so the shim
    refused it on the very ppc64 workers it was built for (and would have let it through on ppc64le ones)."""
    import struct
    from poncho_wq.archive.floor import elf_needs

    for order, data, expected in ((">", 2, "ppc64"), ("<", 1, "ppc64le")):
        path = tmp_path / "elf-{}".format(expected)
        header = b"\x7fELF" + bytes([2, data, 1, 0]) + bytes(8) + struct.pack(order + "HH", 2, 21)
        path.write_bytes(header + bytes(64 - len(header)))
        assert elf_needs(str(path))["machine"] == expected


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_floor_is_read_for_its_first_lines_only(envs, tmp_path, shell):
    """poncho/floor comes from the archive: a long one was parsed whole, in quadratic time (64 KiB of short lines:
    7 s under dash, 20 s under busybox, 47 s under bash).  Only the first 64 lines count, in a tarball and in an
    unpacked directory (-e DIR) alike."""
    r = _run(envs, ["-e", envs["long"], "echo", "ran"], tmp_path / "root", shell)
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    d = tmp_path / "unpacked"
    d.mkdir()
    subprocess.run(["tar", "-xzf", envs["long"], "-C", str(d)], check=True)
    r = _run(envs, ["-e", d, "echo", "ran"], tmp_path / "root2", shell)
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_glibc_field_too_long_to_compare_is_not_checked(envs, tmp_path, shell):
    """glibc=99999999999999999999.1: [ -eq ] cannot compare it, and the shell's own error lines came before ours.
    A value that cannot be told passes, like every other unknown."""
    r = _run(envs, ["-e", envs["bigglibc"], "echo", "ran"], tmp_path / "root", shell)
    assert (r.returncode, r.stdout, r.stderr) == (0, "ran\n", "")


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_hostile_floor_values_are_never_evaluated(envs, tmp_path, shell):
    """$(...), `...` and ; in poncho/floor are text: printed in the one line, never run."""
    r = _run(envs, ["-e", envs["hostile"], "true"], tmp_path / "root", shell)
    assert r.returncode == 4, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "was built for $(touch" in lines[0], r.stderr
    assert not [n for n in ("dollar", "tick", "semi") if os.path.exists(os.path.join(envs["dir"], n))]


# --- run_in_env --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_without_a_command_prepares_in_place_except_for_taskvine(envs, tmp_path, shell):
    """Upstream's run_in_env with no argument prepares the environment (poncho_package_run -e DIR), and whoever
    then runs its files directly needs them relocated: issue 14's no-op is for TaskVine's mini task only, which
    always calls it as output/bin/run_in_env (vine_file.c)."""
    here = tmp_path / "prepared"
    here.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(here)], check=True)
    r = subprocess.run(list(SHELLS[shell]) + [str(here / "bin" / "run_in_env")], env=shim_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert (here / ".poncho_ready").read_text() == "{}\n".format(here)
    hello = subprocess.run([str(here / "bin" / "hello")], capture_output=True, text=True, check=True)
    assert hello.stdout == "prefix={}\n".format(here)
    # TaskVine's mini task: cwd = its sandbox, the tarball unpacked as output/, moved right after: untouched.
    sandbox = tmp_path / "sandbox"
    (sandbox / "output").mkdir(parents=True)
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(sandbox / "output")], check=True)
    r = subprocess.run(list(SHELLS[shell]) + ["output/bin/run_in_env"], cwd=str(sandbox), env=shim_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (0, "")
    assert not (sandbox / "output" / ".poncho_ready").exists()
    assert not (sandbox / "output" / ".poncho_relocations").exists()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_names_a_bad_lock_wait_in_one_line(envs, tmp_path, shell):
    """PONCHO_WAIT_FOR_LOCK=5m reached the relocator's int(): a Python traceback in the task's output."""
    d = tmp_path / "env"
    d.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(d)], check=True)
    r = subprocess.run(list(SHELLS[shell]) + [str(d / "bin" / "run_in_env"), "hello"],
                       env=shim_env(PONCHO_WAIT_FOR_LOCK="5m"), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True)
    assert r.returncode == 4 and r.stderr == (
        "run_in_env: PONCHO_WAIT_FOR_LOCK must be a whole number of seconds, not '5m'\n"), r.stderr


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_concurrent_first_tasks_relocate_once(envs, tmp_path, shell):
    """Guard: eight first tasks at once (TaskVine starts a worker's tasks together): one relocation, all run."""
    d = tmp_path / "env"
    d.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(d)], check=True)
    procs = [subprocess.Popen(list(SHELLS[shell]) + [str(d / "bin" / "run_in_env"), "hello"], env=shim_env(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, o) for p, (o, _) in zip(procs, outs)] == [(0, "prefix={}\n".format(d))] * 8, outs
    assert len((d / ".poncho_relocations").read_text().splitlines()) == 1


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_follows_a_directory_moved_twice(envs, tmp_path, shell):
    """Guard: each move is one relocation, from the recorded prefix to the new one; warm calls add none."""
    first = tmp_path / "one"
    first.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(first)], check=True)
    where = first
    for name in ("one", "two", "three"):
        if where.name != name:
            os.rename(str(where), str(tmp_path / name))
            where = tmp_path / name
        for _ in range(2):
            r = subprocess.run(list(SHELLS[shell]) + [str(where / "bin" / "run_in_env"), "hello"], env=shim_env(),
                               stdin=subprocess.DEVNULL, capture_output=True, text=True)
            assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(where)), r.stderr
    lines = (where / ".poncho_relocations").read_text().splitlines()
    assert [line.split()[2:] for line in lines] == [
        ["(placeholder)", str(tmp_path / "one")], [str(tmp_path / "one"), str(tmp_path / "two")],
        [str(tmp_path / "two"), str(tmp_path / "three")]]


# --- the warm path runs no external command ----------------------------------------------------------------

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


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_warm_paths_start_no_external_command(envs, tmp_path, shell):
    wrap, log = _logging_path(tmp_path)
    root = tmp_path / "root"
    for extra, expected in (({}, []), ({"PONCHO_ENV_BUDGET_MB": "100"}, ["flock"])):
        env = shim_env(root, PATH=wrap + ":" + os.environ["PATH"], **extra)
        assert run_shim(["-e", envs["a"], "true"], shell=SHELLS[shell], env=env).returncode == 0  # cold
        log.unlink()
        r = run_shim(["-e", envs["a"], "/bin/true"], shell=SHELLS[shell], env=env)
        assert r.returncode == 0 and _execs(log) == expected, (extra, r.stderr, _execs(log))
    # The default root (no PONCHO_ENV_DIR, no WORKER_TMPDIR) names itself with one `id -u`, and holds the use lock
    # of its default budget (issue 27) with one flock, unless the budget is off.
    os.mkdir(str(tmp_path / "tmp"))
    for extra, expected in (({}, ["id", "flock"]), ({"PONCHO_ENV_BUDGET_MB": "off"}, ["id"])):
        env = shim_env(None, PATH=wrap + ":" + os.environ["PATH"], TMPDIR=str(tmp_path / "tmp"), **extra)
        assert run_shim(["-e", envs["a"], "true"], shell=SHELLS[shell], env=env).returncode == 0
        log.unlink()
        assert run_shim(["-e", envs["a"], "/bin/true"], shell=SHELLS[shell], env=env).returncode == 0
        assert _execs(log) == expected, extra
    # run_in_env, warm (relocated for its place): nothing but the command.
    d = tmp_path / "env"
    d.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(d)], check=True)
    env = shim_env(None, PATH=wrap + ":" + os.environ["PATH"])
    argv = list(SHELLS[shell]) + [str(d / "bin" / "run_in_env"), "/bin/true"]
    assert subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode == 0
    log.unlink()
    assert subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode == 0
    assert _execs(log) == []
