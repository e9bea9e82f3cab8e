"""The per-worker byte budget for unpacked environments and code layers (PONCHO_ENV_BUDGET_MB, issue 16):
least recently used first, never one in use, sizes recorded once at unpack time.  Real shim runs, several at once,
holding their environments in use while others unpack.

The last section holds the regressions of a hostile review of the worker scripts (each failed before its fix):
sh arithmetic that died on a number (PONCHO_ENV_BUDGET_MB=08, a 20-digit .size), a refused environment counted as
one of PONCHO_ENV_KEEP's, a planted ``.<name>.used`` making the shim delete a directory that is no cache entry,
leftovers of a killed eviction kept forever outside the budget."""

import os
import shutil
import subprocess
import time

import pytest

from helpers.shimutil import floor_tarballs, leftovers, make_prefix, pack, run_shim, shim_env
from poncho_wq.shim import shim_path

pytestmark = pytest.mark.usefixtures("shells")

SHELLS = {"dash": ("dash",), "busybox": ("busybox", "sh")}
BUDGET_MB = 3  # each environment below unpacks to ~2.1 MiB: one fits, two do not


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    """Five copies (a-e) of one ~2 MiB environment under different names: five entries of the per-worker cache."""
    d = tmp_path_factory.mktemp("budget")
    base = pack(make_prefix(d, random_mb=2), d / "base.tar.gz")
    names = {}
    for n in "abcde":
        names[n] = str(d / "{}.tar.gz".format(n))
        shutil.copy(base, names[n])
    return names


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    """Code layers (code-<hex>.tar.gz) of ~2 MiB each, w x y z."""
    d = tmp_path_factory.mktemp("layers")
    out = {}
    for i, n in enumerate("wxyz"):
        src = d / n / "lib"
        src.mkdir(parents=True)
        (src / "mod_{}.py".format(n)).write_text("X = 1\n")
        (src / "blob.bin").write_bytes(os.urandom(2 << 20))
        out[n] = str(d / "code-{:032x}.tar.gz".format(i + 1))
        subprocess.run(["tar", "-czf", out[n], "-C", str(d / n), "lib"], check=True)
    return out


def _present(root):
    """The cache entries of *root*: environments by their tarball's letter, code layers by their hex id's last char."""
    names = os.listdir(root)
    envs = sorted(n.split(".")[0] for n in names if n[0] in "abcde" and not n.startswith("code-"))
    codes = sorted("wxyz"[int(n[-1]) - 1] for n in names if n.startswith("code-"))
    return envs, codes


class Holder:
    """A shim run whose command holds its environment in use until released."""

    def __init__(self, tmp_path, tag, args, env, shell=("dash",)):
        self.ready = tmp_path / (tag + ".ready")
        self.release_file = tmp_path / (tag + ".release")
        cmd = list(shell) + [shim_path()] + [str(a) for a in args] + [
            "sh", "-c", 'touch "$0"; while [ ! -e "$1" ]; do sleep 0.05; done', str(self.ready), str(self.release_file)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def wait_ready(self):
        for _ in range(1200):
            if self.ready.exists():
                return
            assert self.proc.poll() is None, self.proc.stderr.read()
            time.sleep(0.05)
        raise AssertionError("the holding run did not start its command")

    def release(self):
        self.release_file.touch()
        assert self.proc.wait(timeout=60) == 0, self.proc.stderr.read()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_budget_evicts_the_least_recently_used_idle_never_one_in_use(tarballs, tmp_path, shell):
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_ENV_BUDGET_MB=BUDGET_MB)
    a = Holder(tmp_path, "a", ["-e", tarballs["a"]], env, SHELLS[shell])
    try:
        a.wait_ready()
        assert run_shim(["-e", tarballs["b"], "true"], shell=SHELLS[shell], env=env).returncode == 0
        assert _present(root)[0] == ["a", "b"]  # over budget, but a is in use and b was being used
        assert run_shim(["-e", tarballs["c"], "true"], shell=SHELLS[shell], env=env).returncode == 0
        assert _present(root)[0] == ["a", "c"]  # b, idle and least recently used, went; a (older) is in use
    finally:
        a.release()
    # Each entry's size was recorded at unpack time, in KiB, as du measures the tree.
    (c_dir,) = [n for n in os.listdir(root) if n.startswith("c.tar.gz")]
    du = int(subprocess.run(["du", "-sk", str(root / c_dir)], capture_output=True, text=True).stdout.split()[0])
    assert abs(int((root / c_dir / ".poncho_size").read_text()) - du) <= 8
    # a is idle now and the oldest: it goes, then c, until d alone is left within the budget.
    assert run_shim(["-e", tarballs["d"], "true"], shell=SHELLS[shell], env=env).returncode == 0
    assert _present(root)[0] == ["d"]
    assert leftovers(root) == []
    (d_dir,) = [n for n in os.listdir(root) if n.startswith("d.tar.gz")]
    # The records live in the entries (.poncho_used, .poncho_size); the evicted ones' lock files went with them.
    assert sorted(n for n in os.listdir(root) if n.startswith(".")) == sorted([".poncho_lockmode", "." + d_dir + ".lock"])


def test_concurrent_runs_all_in_use_keep_everything_until_released(tarballs, tmp_path):
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_ENV_BUDGET_MB=BUDGET_MB)
    holders = [Holder(tmp_path, n, ["-e", tarballs[n]], env) for n in "abc"]  # three cold runs at once
    try:
        for h in holders:
            h.wait_ready()
        assert _present(root)[0] == ["a", "b", "c"]  # 3 x 2.1 MiB > 3 MiB, all in use: none evicted
    finally:
        for h in holders:
            h.release()
    assert run_shim(["-e", tarballs["d"], "true"], env=env).returncode == 0
    assert _present(root)[0] == ["d"]
    assert leftovers(root) == []


def test_eviction_reads_the_recorded_sizes_and_measures_an_unrecorded_entry_once(tarballs, tmp_path):
    root = tmp_path / "root"
    # a unpacked with no budget set: no size recorded.
    assert run_shim(["-e", tarballs["a"], "true"], env=shim_env(root)).returncode == 0
    (a_dir,) = [n for n in os.listdir(root) if n.startswith("a.tar.gz")]
    assert not (root / a_dir / ".poncho_size").exists()
    env = shim_env(root, PONCHO_ENV_BUDGET_MB=5)
    assert run_shim(["-e", tarballs["b"], "true"], env=env).returncode == 0
    assert int((root / a_dir / ".poncho_size").read_text()) > 2000  # measured once, by the first eviction pass
    assert _present(root)[0] == ["a", "b"]
    # What eviction believes is the recorded size, not the tree: a recorded as 1 KiB makes a + b + c fit in 5 MiB.
    (root / a_dir / ".poncho_size").write_text("1\n")
    assert run_shim(["-e", tarballs["c"], "true"], env=env).returncode == 0
    assert _present(root)[0] == ["a", "b", "c"]


def test_code_layers_count_against_the_budget_and_are_protected_while_in_use(tarballs, layers, tmp_path):
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_ENV_BUDGET_MB=5)  # the base (2.1 MiB) and one layer (2 MiB) fit, not two layers
    x = Holder(tmp_path, "x", ["-e", tarballs["a"], "--code", layers["x"]], env)
    try:
        x.wait_ready()
        assert run_shim(["-e", tarballs["a"], "--code", layers["y"], "true"], env=env).returncode == 0
        assert run_shim(["-e", tarballs["a"], "--code", layers["z"], "true"], env=env).returncode == 0
        assert _present(root) == (["a"], ["x", "z"])  # y idle and older than z: gone; x in use: kept
    finally:
        x.release()
    assert run_shim(["-e", tarballs["a"], "--code", layers["w"], "true"], env=env).returncode == 0
    assert _present(root) == (["a"], ["w"])
    assert leftovers(root) == []


def test_keep_counts_environments_not_code_layers(tarballs, layers, tmp_path):
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_ENV_KEEP=1)
    assert run_shim(["-e", tarballs["a"], "--code", layers["w"], "true"], env=env).returncode == 0
    # Least recently used by a clear margin: busybox ls -t (a worker's only ls, maybe) sorts by whole seconds.
    for used in _use_records(root):
        t = os.stat(used).st_mtime - 20
        os.utime(used, (t, t))
    assert run_shim(["-e", tarballs["b"], "--code", layers["x"], "true"], env=env).returncode == 0
    assert _present(root) == (["b"], ["w", "x"])


def _use_records(root, entry=None):
    """The files whose mtime says when an entry was last used: <root>/.<entry>.used before issue 29, now
    <root>/<entry>/.poncho_used (the tests that must fail on the old shim touch either)."""
    names = [entry] if entry else [n for n in os.listdir(root) if not n.startswith(".") and n != "unpack.log"]
    found = [root / ".{}.used".format(n) for n in names] + [root / n / ".poncho_used" for n in names]
    return [p for p in found if p.exists()]


def test_an_evicted_entry_leaves_no_lock_file(tarballs, tmp_path):
    """The lock file of every environment ever evicted stayed in the root for ever: it goes with its entry now."""
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_ENV_KEEP=1)
    assert run_shim(["-e", tarballs["a"], "true"], env=env).returncode == 0
    for used in _use_records(root):
        t = os.stat(used).st_mtime - 20
        os.utime(used, (t, t))
    assert run_shim(["-e", tarballs["b"], "true"], env=env).returncode == 0
    assert _present(root)[0] == ["b"]
    (b_dir,) = [n for n in os.listdir(root) if n.startswith("b.tar.gz")]
    assert sorted(n for n in os.listdir(root) if n.endswith(".lock")) == ["." + b_dir + ".lock"]


def test_a_use_time_in_the_future_does_not_keep_an_entry_for_ever(tarballs, tmp_path):
    """An entry last used "tomorrow" (a bad clock, an archive's future mtime adopted as its first use) was the
    most recently used for ever, and PONCHO_ENV_KEEP=1 kept it and evicted nothing.  Such a time is set back to
    long ago: it is the first to go."""
    root = tmp_path / "root"
    env = shim_env(root, PONCHO_ENV_KEEP=1)
    assert run_shim(["-e", tarballs["a"], "true"], env=env).returncode == 0
    (a_dir,) = [n for n in os.listdir(root) if n.startswith("a.tar.gz")]
    tomorrow = time.time() + 86400
    for used in _use_records(root, a_dir):
        os.utime(used, (tomorrow, tomorrow))
    assert run_shim(["-e", tarballs["b"], "true"], env=env).returncode == 0
    assert _present(root)[0] == ["b"]


@pytest.mark.parametrize("value", ["3MB", "-1", "1.5"])
def test_a_bad_budget_is_a_usage_error(tarballs, tmp_path, value):
    r = run_shim(["-e", tarballs["a"], "true"], env=shim_env(tmp_path / "root", PONCHO_ENV_BUDGET_MB=value))
    assert r.returncode == 1, r.stderr
    assert "PONCHO_ENV_BUDGET_MB must be a whole number of MiB or off, not '{}'".format(value) in r.stderr


# --- the worker's default root: outlives the workspace, keeps a budget by default (issue 27) --------------------
def _worker_env(workdir, workspace_pid, **extra):
    """The variables a Work Queue worker with ``--workdir workdir`` gives its tasks: WORKER_TMPDIR inside the
    workspace ``worker-<uid>-<pid>``, which the worker empties at every manager disconnect."""
    wt = workdir / "worker-{}-{}".format(os.getuid(), workspace_pid) / "cache" / "tmp"
    wt.mkdir(parents=True, exist_ok=True)
    return shim_env(None, WORKER_TMPDIR=str(wt), **extra)


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_workers_default_root_outlives_its_workspace(tarballs, tmp_path, shell):
    workdir = tmp_path / "workdir"
    env = _worker_env(workdir, 100)
    assert run_shim(["-e", tarballs["a"], "true"], shell=SHELLS[shell], env=env).returncode == 0
    root = workdir / "poncho-{}".format(os.getuid())
    assert _present(root) == (["a"], [])
    # The manager disconnects: Work Queue removes the workspace; the next manager's tasks find the environment.
    shutil.rmtree(str(workdir / "worker-{}-100".format(os.getuid())))
    env = _worker_env(workdir, 100)
    r = run_shim(["-e", tarballs["a"], "sh", "-c", 'echo "$CONDA_PREFIX"'], shell=SHELLS[shell], env=env)
    assert (r.returncode, r.stdout.strip()) == (0, str(root / _present_id(root, "a"))), r.stderr
    assert _unpacks(root) == 1
    assert oct(os.stat(str(root)).st_mode & 0o777) == "0o700"


def _present_id(root, letter):
    return [n for n in os.listdir(str(root)) if n.startswith(letter + ".tar.gz-")][0]


def _unpacks(root):
    with open(str(root / "unpack.log")) as f:
        return sum(1 for line in f if line.strip())


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_default_root_keeps_a_budget_unless_it_is_off(tarballs, tmp_path, shell):
    """The default budget is 10240 MiB: an idle entry recorded as 10 GiB is evicted by the next unpack, unless
    PONCHO_ENV_BUDGET_MB=off; an explicit budget replaces the default; a PONCHO_ENV_DIR gets no default."""
    workdir = tmp_path / "workdir"
    root = workdir / "poncho-{}".format(os.getuid())

    def run(letter, **extra):
        r = run_shim(["-e", tarballs[letter], "true"], shell=SHELLS[shell], env=_worker_env(workdir, 1, **extra))
        assert r.returncode == 0, r.stderr

    def swell(letter, kib=10240 * 1024 + 1):
        (root / _present_id(root, letter) / ".poncho_size").write_text("{}\n".format(kib))

    run("a")
    assert (root / _present_id(root, "a") / ".poncho_size").is_file()  # measured at unpack: the budget is on
    swell("a")
    run("b", PONCHO_ENV_BUDGET_MB="off")
    assert _present(root) == (["a", "b"], [])
    run("c")
    assert _present(root) == (["b", "c"], [])  # a (10 GiB, least recently used) went, within the default
    run("d", PONCHO_ENV_BUDGET_MB=str(BUDGET_MB))
    assert _present(root) == (["d"], [])
    # A PONCHO_ENV_DIR is used as given: no budget unless set.
    mine = tmp_path / "mine"
    for letter in "ab":
        assert run_shim(["-e", tarballs[letter], "true"], shell=SHELLS[shell], env=shim_env(mine)).returncode == 0
    (mine / _present_id(mine, "a") / ".poncho_size").write_text("{}\n".format(10240 * 1024 + 1))
    assert run_shim(["-e", tarballs["c"], "true"], shell=SHELLS[shell], env=shim_env(mine)).returncode == 0
    assert _present(mine) == (["a", "b", "c"], [])


# ========================================== review of the worker scripts: budget eviction (each failed before its fix)

@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    """Tarballs of helpers.shimutil.floor_tarballs: "a", "b" (same content), "foreign" (refused here)."""
    return floor_tarballs(tmp_path_factory.mktemp("review"), ("a", "b", "foreign"))


def _run(envs, args, root, shell, **extra):
    return run_shim(args, shell=SHELLS[shell], env=shim_env(root, **extra))


def _age(path, seconds):
    t = os.stat(path).st_mtime - seconds
    os.utime(path, (t, t))



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
