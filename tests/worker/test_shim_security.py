"""The run shim against a hostile local user and hostile archives (issue 11), on real files and real processes.

- Worker roots: a second local user, made by the test, plants a symlinked or foreign ``poncho-<uid>`` root, a
  ``poncho-envs`` link or an ``--unpack-to`` target holding a "ready" environment whose activation would write a
  proof file; the victim's shim must refuse (exit 4) and the proof file must not appear.
- Archives: a tarball whose members belong to uid 1002 and hold setuid bits, device nodes and FIFOs, extracted
  by GNU tar and by busybox tar (a PATH directory where ``tar`` is busybox).
- Activation: data variables named like ``IFS`` or the shim's own variables cannot make it skip the command.
- A read-only or unwritable root: exit 3 with one ``poncho_package_run:`` line (dash used to die with exit 2).
- tar's errors are cut to their last lines; the mkdir lock prints nothing while it waits.
"""

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from poncho_wq.shim import shim_path
from helpers.paths import HELPERS
from helpers.shimutil import (SHELLS, as_user, leftovers, make_prefix, pack, run_shim, second_user, shim_cmd, shim_env,
                      unpack_count)

ENV_ID = "env-" + "5ec0" * 16
SHELL_IDS = sorted(SHELLS)

pytestmark = pytest.mark.usefixtures("shells")

# Only these need root (CI runs as root): creating a second user, making device nodes, mounting read-only.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: useradd, mknod or mount")


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    """A conda-pack tarball named like poncho_wq's, carrying run_in_env."""
    d = tmp_path_factory.mktemp("sec")
    return pack(make_prefix(d, run_in_env=True), d / (ENV_ID + ".tar.gz"))


@pytest.fixture(scope="module")
def attacker():
    with second_user() as user:
        yield user


@pytest.fixture
def shared_tmp():
    """A fresh stand-in for /tmp: owned by the test's user, mode 1777, outside pytest's own 0700 temp dir (so
    the second user can work in it).  Used as TMPDIR, so the real /tmp/poncho-<uid> is never touched."""
    d = Path(tempfile.mkdtemp(prefix="poncho-sec-"))
    os.chmod(d, 0o1777)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


# Run as the second user: a directory that looks like a ready environment; activating it, or running its
# python3, appends to the proof file.  $3 is what .poncho_ready says (checked for --unpack-to targets).
PLANT = r'''
set -e
env=$1 proof=$2
mkdir -p "$env/etc/conda/activate.d" "$env/bin"
printf '%s\n' "$3" >"$env/.poncho_ready"
printf 'echo "activate.d ran as $(id -u)" >>"%s"\n' "$proof" >"$env/etc/conda/activate.d/x.sh"
printf '#!/bin/sh\necho "bin/python3 ran as $(id -u)" >>"%s"\n' "$proof" >"$env/bin/python3"
chmod -R a+rX "$env"
chmod 755 "$env/bin/python3"
'''


def plant(user, env_dir, proof, marker=None):
    r = as_user(user, ["sh", "-c", PLANT, "plant", env_dir, proof, marker or env_dir])
    assert r.returncode == 0, r.stderr


def attacker_ln(user, target, link):
    r = as_user(user, ["ln", "-s", target, link])
    assert r.returncode == 0, r.stderr
    assert os.lstat(link).st_uid == user.uid


def run_victim(args, env, shell="dash"):
    """The victim's task: the shim running python3 (the planted bin/python3 would write the proof)."""
    return run_shim(list(args) + ["python3", "-c", "print('command ran')"], shell=SHELLS[shell], env=env)


def assert_refused(r, proof, *words):
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("poncho_package_run: "), r.stderr
    for w in words:
        assert w in r.stderr
    assert not os.path.exists(proof), open(proof).read()


# --- item 2: worker roots and --unpack-to targets -------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("shell", SHELL_IDS)
def test_default_root_symlinked_by_another_user_is_refused(tarball, attacker, shared_tmp, shell):
    """The issue's attack: poncho-<uid> -> the shared tmp dir itself (owned by the victim, so [ -O ] passes
    through the link), next to a ready-looking env-<hex>/ planted by the other user."""
    proof = shared_tmp / "PROOF"
    root = shared_tmp / "poncho-{}".format(os.getuid())
    plant(attacker, shared_tmp / ENV_ID, proof)
    attacker_ln(attacker, shared_tmp, root)
    r = run_victim(["-e", tarball], shim_env(TMPDIR=shared_tmp, HOME="/nonexistent"), shell)
    assert_refused(r, proof, str(root), "symbolic link", "PONCHO_ENV_DIR")


@needs_root
def test_default_root_of_another_user_is_refused(tarball, attacker, shared_tmp):
    proof = shared_tmp / "PROOF"
    root = shared_tmp / "poncho-{}".format(os.getuid())
    r = as_user(attacker, ["mkdir", "-m", "755", root])
    assert r.returncode == 0, r.stderr
    plant(attacker, root / ENV_ID, proof)
    r = run_victim(["-e", tarball], shim_env(TMPDIR=shared_tmp, HOME="/nonexistent"))
    assert_refused(r, proof, str(root), "another user", "PONCHO_ENV_DIR")


@needs_root
def test_env_dir_planted_in_a_loose_root_of_ours_is_refused(tarball, attacker, shared_tmp, tmp_path):
    """Our own root with mode 0777 (made by hand, say): the warm path refuses the env dir the other user put
    there; a cold start refuses the root itself because of its mode."""
    proof = shared_tmp / "PROOF"
    root = shared_tmp / "poncho-{}".format(os.getuid())
    root.mkdir()
    os.chmod(root, 0o777)
    plant(attacker, root / ENV_ID, proof)
    env = shim_env(TMPDIR=shared_tmp)
    assert_refused(run_victim(["-e", tarball], env), proof, str(root / ENV_ID), "PONCHO_ENV_DIR")
    other = tmp_path / ("env-" + "0ce" * 21 + "d.tar.gz")
    shutil.copy(tarball, other)
    r = run_victim(["-e", other], env)
    assert_refused(r, proof, str(root), "mode 777", "PONCHO_ENV_DIR")
    # Nothing was unpacked there (the default budget's use lock, an empty file of ours, was opened before the
    # cold path looked at the root's mode).
    assert sorted(n for n in os.listdir(root) if not n.endswith(".lock")) == [ENV_ID]


def _worker_tmpdir(workdir):
    """WORKER_TMPDIR of a Work Queue worker run with --workdir *workdir*: the victim's root is then
    <workdir>/poncho-<uid>, beside the workspace (issue 27)."""
    wt = workdir / "worker-{}-1".format(os.getuid()) / "cache" / "tmp"
    wt.mkdir(parents=True, exist_ok=True)
    return wt


@needs_root
@pytest.mark.parametrize("target", ["the worker dir", "a dir of the other user"])
def test_worker_default_root_symlink_is_refused(tarball, attacker, shared_tmp, target):
    proof = shared_tmp / "PROOF"
    if target == "the worker dir":
        dest = shared_tmp
    else:
        dest = shared_tmp / "evil"
        assert as_user(attacker, ["mkdir", dest]).returncode == 0
    plant(attacker, dest / ENV_ID, proof)
    root = shared_tmp / "poncho-{}".format(os.getuid())
    attacker_ln(attacker, dest, root)
    r = run_victim(["-e", tarball], shim_env(WORKER_TMPDIR=_worker_tmpdir(shared_tmp), HOME="/nonexistent"))
    assert_refused(r, proof, str(root), "symbolic link", "PONCHO_ENV_DIR")


@needs_root
def test_worker_default_root_of_another_user_is_refused(tarball, attacker, shared_tmp):
    proof = shared_tmp / "PROOF"
    root = shared_tmp / "poncho-{}".format(os.getuid())
    assert as_user(attacker, ["mkdir", root]).returncode == 0
    plant(attacker, root / ENV_ID, proof)
    r = run_victim(["-e", tarball], shim_env(WORKER_TMPDIR=_worker_tmpdir(shared_tmp), HOME="/nonexistent"))
    assert_refused(r, proof, "another user", "PONCHO_ENV_DIR")


@needs_root
def test_unpack_to_dir_of_another_user_is_refused(tarball, attacker, shared_tmp):
    proof = shared_tmp / "PROOF"
    target = shared_tmp / "job-env"
    plant(attacker, target, proof)  # .poncho_ready names the target itself: "ready for this path"
    r = run_victim(["--unpack-to", target, "-e", tarball], shim_env(shared_tmp / "unused"))
    assert_refused(r, proof, str(target), "another user")


@needs_root
def test_unpack_to_link_of_another_user_is_refused(tarball, attacker, shared_tmp):
    proof = shared_tmp / "PROOF"
    env = shim_env(shared_tmp / "unused")
    # A link to the other user's ready-looking dir.
    planted = shared_tmp / "planted"
    plant(attacker, planted, proof)
    attacker_ln(attacker, planted, shared_tmp / "a-env")
    assert_refused(run_victim(["-d", shared_tmp / "a-env", "-e", tarball], env), proof, "symbolic link")
    # A link the other user made to a ready environment of ours: ours, but not chosen by us.
    ours = shared_tmp / "ours"
    assert run_shim(["-d", ours, "-e", tarball, "true"], env=env).returncode == 0
    attacker_ln(attacker, ours, shared_tmp / "b-env")
    assert_refused(run_victim(["-d", shared_tmp / "b-env", "-e", tarball], env), proof, "symbolic link")
    # Our own link to our own environment is used (what the shim's sandbox link gives a later task).
    os.symlink(ours, shared_tmp / "c-env")
    r = run_victim(["-d", shared_tmp / "c-env", "-e", tarball], env)
    assert (r.returncode, r.stdout) == (0, "command ran\n"), r.stderr


@pytest.mark.parametrize("shell", SHELL_IDS)
def test_own_symlinked_root_or_env_dir_is_refused_and_a_fresh_root_is_0700(tarball, shared_tmp, shell):
    """Without a second user: a link is refused even when it is our own; a loose root is refused on a cold
    start; a root the shim makes is 0700 and used."""
    proof = shared_tmp / "PROOF"
    root = shared_tmp / "poncho-{}".format(os.getuid())
    env = shim_env(TMPDIR=shared_tmp, HOME="/nonexistent")  # no home to fall back to (see below)
    elsewhere = shared_tmp / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, root)
    assert_refused(run_victim(["-e", tarball], env, shell), proof, "symbolic link", "PONCHO_ENV_DIR")
    os.unlink(root)
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    assert_refused(run_victim(["-e", tarball], env, shell), proof, "mode 755", "PONCHO_ENV_DIR")
    assert [n for n in os.listdir(root) if not n.endswith(".lock")] == []  # the default budget's use lock only
    shutil.rmtree(root)
    r = run_victim(["-e", tarball], env, shell)
    assert (r.returncode, r.stdout) == (0, "command ran\n"), r.stderr
    st = os.lstat(root)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
    # An env dir that is a link (ready-looking, and ours) is not one this shim made.
    shutil.rmtree(root / ENV_ID)
    os.symlink(elsewhere, root / ENV_ID)
    (elsewhere / ".poncho_ready").write_text(str(root / ENV_ID) + "\n")
    assert_refused(run_victim(["-e", tarball], env, shell), proof, str(root / ENV_ID), "symbolic link")


# --- item 3: archive owners, modes, setuid bits, device nodes --------------------------------------------------

def _rewrite(src, out, extra=(), uid=1002):
    """Copy the tarball ``src`` to ``out`` with every member owned by ``uid``, a "./" entry of mode 0777, and
    the TarInfo members of ``extra`` added (regular files get a small body)."""
    with tarfile.open(src) as tin, tarfile.open(out, "w:gz") as tout:
        top = tarfile.TarInfo(".")
        top.type, top.mode = tarfile.DIRTYPE, 0o777
        members = [(top, None)]
        for m in tin.getmembers():
            members.append((m, tin.extractfile(m) if m.isfile() else None))
        for m in extra:
            members.append((m, None))
        for m, f in members:
            m.uid = m.gid = uid
            m.uname = m.gname = ""
            if m.isfile() and f is None:
                data = b"#!/bin/sh\necho hostile\n"
                m.size = len(data)
                f = io.BytesIO(data)
            tout.addfile(m, f)
    return str(out)


def _member(name, kind, mode):
    m = tarfile.TarInfo(name)
    m.type, m.mode = kind, mode
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        m.devmajor, m.devminor = (1, 3) if kind == tarfile.CHRTYPE else (7, 0)
    return m


@pytest.fixture(params=["gnu", "busybox"])
def tar_flavour(request, tmp_path_factory):
    """PATH for the shim, with GNU tar (the system's) or busybox tar (a directory where tar -> busybox; find and
    tail too, which the shim runs on the extracted tree and on tar's errors)."""
    base = shim_env()["PATH"]
    if request.param == "gnu":
        out = subprocess.run(["tar", "--version"], capture_output=True, text=True)
        assert "GNU tar" in out.stdout
        return base
    d = tmp_path_factory.mktemp("bbtar")
    for tool in ("tar", "find", "tail"):
        os.symlink(shutil.which("busybox"), d / tool)
    out = subprocess.run(["tar", "--help"], capture_output=True, text=True, env={"PATH": str(d)})
    assert "BusyBox" in out.stdout + out.stderr
    return "{}:{}".format(d, base)


def _walk(top):
    yield top, os.lstat(top)
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            yield p, os.lstat(p)


def _run_where(where, args, tmp_path, env):
    """Run the shim into the per-worker cache, --unpack-to or --extract-to (TaskVine's unpack mini task, then the
    command through the tree's bin/run_in_env as TaskVine's tasks run it); return (result, directory of the
    environment)."""
    if where == "cache":
        root = tmp_path / "root"
        return run_shim(["-e"] + args, env=dict(env, PONCHO_ENV_DIR=str(root))), root / ENV_ID
    if where == "extract-to":
        target = tmp_path / "extracted"
        r = run_shim(["--extract-to", target, "-e", args[0]], env=env)
        if r.returncode == 0 and args[1:]:
            r = subprocess.run(["sh", str(target / "bin" / "run_in_env")] + [str(a) for a in args[1:]], env=env,
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return r, target
    target = tmp_path / "to"
    return run_shim(["-d", target, "-e"] + args, env=env), target


@pytest.mark.parametrize("where", ["cache", "unpack-to", "extract-to"])
def test_archive_owners_modes_and_setuid_bits_are_not_kept(tarball, tmp_path, tar_flavour, where):
    hostile = _rewrite(tarball, tmp_path / (ENV_ID + ".tar.gz"), [
        _member("bin/suid", tarfile.REGTYPE, 0o4755),
        _member("bin/sgid", tarfile.REGTYPE, 0o2755),
        _member("share/world-writable", tarfile.REGTYPE, 0o666),
    ])
    old = os.umask(0o022)  # the worker's umask applies instead of the archive's modes
    try:
        r, d = _run_where(where, [hostile, "hello"], tmp_path, shim_env(PATH=tar_flavour))
    finally:
        os.umask(old)
    assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(d)), r.stderr
    assert (d / "bin" / "suid").is_file() and (d / "share" / "world-writable").is_file()
    for path, st in _walk(str(d)):
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()), path
        assert not stat.S_ISCHR(st.st_mode) and not stat.S_ISBLK(st.st_mode) and not stat.S_ISFIFO(st.st_mode)
        if not stat.S_ISLNK(st.st_mode):
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID) or stat.S_ISDIR(st.st_mode), path
            assert not st.st_mode & 0o002, (path, oct(st.st_mode))
    assert stat.S_IMODE(os.stat(d / "bin" / "suid").st_mode) == 0o755


@needs_root
@pytest.mark.parametrize("where", ["cache", "unpack-to", "extract-to"])
@pytest.mark.parametrize("kind", ["chr", "blk", "fifo"])
def test_archive_with_a_device_node_or_fifo_is_refused(tarball, tmp_path, tar_flavour, where, kind):
    """Conda environments never hold these; as root tar would create them (a world-readable disk device...).
    The archive is refused (exit 3) and nothing is published or left behind."""
    member = {"chr": _member("dev/null", tarfile.CHRTYPE, 0o666),
              "blk": _member("share/loop0", tarfile.BLKTYPE, 0o666),
              "fifo": _member("share/pipe", tarfile.FIFOTYPE, 0o666)}[kind]
    hostile = _rewrite(tarball, tmp_path / (ENV_ID + ".tar.gz"), [member])
    r, d = _run_where(where, [hostile, "hello"], tmp_path, shim_env(PATH=tar_flavour))
    assert (r.returncode, r.stdout) == (3, ""), r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("poncho_package_run: could not extract") and member.name in last, r.stderr
    assert "device node, FIFO or socket" in last
    assert not (d / ".poncho_ready").exists()
    top = d.parent if where != "unpack-to" else d
    for path, st in _walk(str(top)):
        assert not stat.S_ISCHR(st.st_mode) and not stat.S_ISBLK(st.st_mode) and not stat.S_ISFIFO(st.st_mode), path
    if where == "cache":
        assert not d.exists() and leftovers(top) == []
    elif where == "extract-to":
        assert not d.exists() and not list(tmp_path.glob(".poncho_extract.*"))
    else:
        assert not list(d.glob(".poncho_tmp.*"))


# --- item 10, shim side: what activation sets cannot skip the command --------------------------------------

CLOBBER = ("IFS", "_pr_d", "_pe", "_pr_t", "_ri_d", "_pf")


@pytest.fixture(scope="module")
def clobbering(tmp_path_factory):
    """A hand-made environment whose poncho/set_env exports IFS and names the scripts use internally, and whose
    activate.d script sets them too (IFS with digits, so that an unquoted $# would vanish)."""
    d = tmp_path_factory.mktemp("clobber")
    prefix = make_prefix(d, data_vars=CLOBBER, run_in_env=True)
    with open(os.path.join(prefix, "poncho", "set_env"), "a") as f:
        f.write('IFS="$IFS 0123456789"\n')
    with open(os.path.join(prefix, "etc", "conda", "activate.d", "zz_clobber.sh"), "w") as f:
        f.write("IFS=0123456789\n_pr_d=/nonexistent\n_pe=/nonexistent\n_pr_t=junk\n_ri_d=/nonexistent\n")
    return pack(prefix, d / ("env-" + "c10b" * 16 + ".tar.gz"))


ARGV_CMD = ["python", "-c", "import os, sys, json; print(json.dumps([sys.argv[1:], os.environ.get('_pr_d')]))",
            "a b", "1", "", "*"]


@pytest.mark.parametrize("shell", SHELL_IDS)
def test_set_env_naming_ifs_or_shim_variables_cannot_skip_the_command(clobbering, tmp_path, shell):
    env = shim_env(tmp_path / "root", PONCHO_DEBUG=1)
    runs = [["-e", clobbering], ["-e", clobbering], ["-d", tmp_path / "to", "-e", clobbering],
            ["-d", tmp_path / "to", "-e", clobbering]]
    for args in runs:  # cold and warm, per-worker cache and --unpack-to
        r = run_shim(args + ARGV_CMD, shell=SHELLS[shell], env=env)
        assert r.returncode == 0, (args, r.stderr)
        argv, data_var = json.loads(r.stdout)
        assert argv == ARGV_CMD[3:]
        assert data_var.endswith("/_pr_d")  # exported by set_env: the data variable reached the command
        r = run_shim(args + ["sh", "-c", "exit 7"], shell=SHELLS[shell], env=env)
        assert r.returncode == 7, r.stderr
    d = tmp_path / "unpacked"
    d.mkdir()
    subprocess.run(["tar", "-xf", clobbering, "-C", str(d)], check=True)
    r = run_shim(["-e", d] + ARGV_CMD, shell=SHELLS[shell], env=env)
    assert r.returncode == 0 and json.loads(r.stdout)[0] == ARGV_CMD[3:], r.stderr
    r = subprocess.run(SHELLS[shell] + [str(d / "bin" / "run_in_env")] + ARGV_CMD, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and json.loads(r.stdout)[0] == ARGV_CMD[3:], r.stderr


@pytest.mark.parametrize("shell", SHELL_IDS)
def test_exit_in_an_activation_script_is_exit_4_not_a_silent_success(tmp_path, shell):
    prefix = make_prefix(tmp_path, run_in_env=True)
    with open(os.path.join(prefix, "etc", "conda", "activate.d", "exits.sh"), "w") as f:
        f.write("exit 0\n")
    tb = pack(prefix, tmp_path / ("env-" + "e0" * 32 + ".tar.gz"))
    r = run_shim(["-e", tb, "echo", "command ran"], shell=SHELLS[shell], env=shim_env(tmp_path / "root"))
    assert (r.returncode, r.stdout) == (4, ""), r.stderr
    assert r.stderr.startswith("poncho_package_run: ") and "called exit" in r.stderr
    d = tmp_path / "root" / tb.rsplit("/", 1)[1][:-7]
    r = subprocess.run(SHELLS[shell] + [str(d / "bin" / "run_in_env"), "echo", "command ran"], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stdout) == (4, ""), r.stderr
    assert r.stderr.startswith("run_in_env: ") and "called exit" in r.stderr
    # With no command, preparing the environment is all that is asked: still not a silent 0.
    assert run_shim(["-e", tb], shell=SHELLS[shell], env=shim_env(tmp_path / "root")).returncode == 4


# --- item 11: a root that cannot be written ------------------------------------------------------------------

def _read_only(directory, argv):
    """argv run in a private mount namespace where ``directory`` is a read-only bind mount of itself."""
    return ["unshare", "-m", "sh", "-c",
            'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"', "sh",
            str(directory)] + list(argv)


def _one_poncho_line(r, *words):
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("poncho_package_run: "), r.stderr
    for w in words:
        assert w in lines[0]


@needs_root
@pytest.mark.parametrize("lock", ["flock", "mkdir"])
@pytest.mark.parametrize("shell", SHELL_IDS)
def test_read_only_env_dir_exits_3_with_a_message(tarball, tmp_path, shell, lock):
    ro = tmp_path / "ro"
    ro.mkdir()
    env = shim_env(ro, PONCHO_LOCK=lock)
    r = subprocess.run(_read_only(ro, shim_cmd(["-e", tarball, "hello"], SHELLS[shell])), env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 3, r.stderr
    _one_poncho_line(r, str(ro), "read-only", "PONCHO_ENV_DIR")
    # --unpack-to an empty directory on a read-only file system: the same.
    r = subprocess.run(_read_only(ro, shim_cmd(["-d", ro, "-e", tarball, "hello"], SHELLS[shell])), env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 3, r.stderr
    _one_poncho_line(r, str(ro), "read-only")
    # A ready environment on a read-only root needs no write: used as is (also with the use lock of KEEP).
    assert run_shim(["-e", tarball, "true"], env=env).returncode == 0
    for extra in ({}, {"PONCHO_ENV_KEEP": "1"}):
        r = subprocess.run(_read_only(ro, shim_cmd(["-e", tarball, "hello"], SHELLS[shell])),
                           env=dict(env, **extra), capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert (r.returncode, r.stdout, r.stderr) == (0, "prefix={}\n".format(ro / ENV_ID), ""), extra


@needs_root
@pytest.mark.parametrize("lock", ["flock", "mkdir"])
def test_env_dir_the_user_cannot_write_exits_3(tarball, attacker, shared_tmp, lock):
    """The same for a user without write permission (here the second user, on a directory of root's)."""
    tb = shared_tmp / os.path.basename(tarball)
    shutil.copy(tarball, tb)
    os.chmod(tb, 0o644)
    root = shared_tmp / "roots-dir"
    root.mkdir(mode=0o755)
    r = as_user(attacker, ["dash", shim_path(), "-e", tb, "hello"], env=shim_env(root, PONCHO_LOCK=lock),
                cwd=str(shared_tmp))
    assert r.returncode == 3, r.stderr
    _one_poncho_line(r, str(root), "no write permission", "PONCHO_ENV_DIR")


# --- low: tar's errors cut to their end; the mkdir lock says nothing while it waits ---------------------------

@needs_root
def test_disk_full_prints_only_the_end_of_tars_errors(tmp_path, tar_flavour):
    prefix = make_prefix(tmp_path)
    many = os.path.join(prefix, "share", "many")
    os.makedirs(many)
    for i in range(300):
        with open(os.path.join(many, "f{:03d}".format(i)), "wb") as f:
            f.write(os.urandom(16 << 10))
    tb = pack(prefix, tmp_path / ("env-" + "f011" * 16 + ".tar.gz"))
    root = tmp_path / "full"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    try:
        r = run_shim(["-e", tb, "true"], env=shim_env(root, PATH=tar_flavour))
        assert r.returncode == 3, r.stderr
        lines = r.stderr.splitlines()
        assert 2 <= len(lines) <= 6, r.stderr  # some of tar's lines, then ours
        assert lines[-1].startswith("poncho_package_run: could not extract") and "disk full" in lines[-1]
        assert not (root / tb.rsplit("/", 1)[1][:-7]).exists()
        assert leftovers(root) == []
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_corrupt_tarball_prints_a_few_lines_and_ours_last(tarball, tmp_path):
    bad = tmp_path / ("env-" + "c0" * 32 + ".tar.gz")
    with open(tarball, "rb") as f:
        bad.write_bytes(f.read()[:3000])
    r = run_shim(["-e", bad, "true"], env=shim_env(tmp_path / "root"))
    assert r.returncode == 3
    lines = r.stderr.splitlines()
    assert 1 <= len(lines) <= 6 and lines[-1].startswith("poncho_package_run: could not extract"), r.stderr
    assert leftovers(tmp_path / "root") == []


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_mkdir_lock_waiting_on_a_lock_without_pid_prints_nothing(tarball, tmp_path, shell):
    """A lock directory whose owner was killed before it wrote its pid: broken after 5 s, silently (once it is
    a minute old: another host's NFS client may not see a fresh pid file yet; see test_shim_shared_fs.py)."""
    root = tmp_path / "root"
    (root / ("." + ENV_ID + ".lockd")).mkdir(parents=True)
    os.utime(str(root / ("." + ENV_ID + ".lockd")), (os.path.getmtime(str(root)) - 120,) * 2)
    r = run_shim(["-e", tarball, "hello"], shell=SHELLS[shell], env=shim_env(root, PONCHO_LOCK="mkdir"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "prefix={}\n".format(root / ENV_ID), "")
    assert unpack_count(root / "unpack.log") == 1
    assert leftovers(root) == []


# --- issue 29: races on shared directories --------------------------------------------------------------------

RACER = os.path.join(HELPERS, "racer.py")


class Racer:
    """tests/helpers/racer.py started as the other user: it acts the moment the victim opens ``watch``."""

    def __init__(self, user, action, watch, a, b, tmp):
        self.ready = Path(tmp) / "racer.ready"
        argv = ["setpriv", "--reuid", str(user.uid), "--regid", str(user.gid), "--clear-groups", "--",
                "/usr/bin/python3", RACER, action, str(watch), str(a), str(b), str(self.ready), "60"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        for _ in range(600):
            if self.ready.exists():
                return
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.01)
        raise AssertionError("the racer did not start")

    def result(self):
        """"done", "failed: <error>", or "never" (what it waited for did not happen)."""
        out, err = self.proc.communicate(timeout=90)
        if self.proc.returncode == 2:
            return "never"
        assert self.proc.returncode == 0, (out, err)
        return out.strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def _shared_copy(tarball, shared_tmp):
    """The victim's tarball where the other user can watch it being opened (as a worker's cache file would be)."""
    tb = shared_tmp / os.path.basename(tarball)
    shutil.copy(tarball, tb)
    os.chmod(tb, 0o644)
    return tb


@needs_root
@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_unpack_to_renamed_in_by_another_user_before_mkdir_is_refused(tarball, attacker, shared_tmp, shell):
    """The issue's critical case: --unpack-to a missing DIR in a sticky /tmp.  The other user renames a ready-looking
    directory of theirs onto DIR the moment the victim's floor check opens the tarball, after the old ownership check
    and before its mkdir -p: every time, the victim then ran the planted activation code.  Now DIR is checked after it
    was made: refused, exit 4."""
    proof = shared_tmp / "PROOF"
    tb = _shared_copy(tarball, shared_tmp)
    target = shared_tmp / "job-env"
    prep = shared_tmp / "prepared"
    plant(attacker, prep, proof, str(target))
    racer = Racer(attacker, "rename", tb, prep, target, shared_tmp)
    r = run_victim(["--unpack-to", target, "-e", tb], shim_env(shared_tmp / "unused"), shell)
    assert racer.result() == "done"  # the planted directory was in place before the victim's mkdir
    assert os.lstat(target).st_uid == attacker.uid
    assert_refused(r, proof, str(target), "another user")


SLOW_ID = "env-" + "510e" * 16


@pytest.fixture(scope="module")
def slow_tarball(tmp_path_factory):
    """An environment whose first activation script takes a second (conda's can: compilers, CUDA): the window in
    which the racer swaps the directory under the running activation.  It creates $PONCHO_TEST_SIGNAL first, so
    that the racer (who cannot look into the victim's 0700 root) knows when the activation runs."""
    d = tmp_path_factory.mktemp("slow")
    prefix = make_prefix(d, run_in_env=True)
    with open(os.path.join(prefix, "etc", "conda", "activate.d", "00_slow.sh"), "w") as f:
        f.write(': >"$PONCHO_TEST_SIGNAL"\nsleep 1\n')
    return pack(prefix, d / (SLOW_ID + ".tar.gz"))


def _open_dir(shared_tmp, name="open"):
    """A directory every user can write to, without the sticky bit (a misconfigured scratch or TMPDIR)."""
    d = shared_tmp / name
    d.mkdir()
    os.chmod(d, 0o777)
    return d


@needs_root
def test_unpack_to_in_a_world_writable_parent_without_sticky_bit_is_refused(slow_tarball, attacker, shared_tmp):
    """With a parent every user can write to and no sticky bit, the other user can swap the victim's --unpack-to DIR
    for a planted tree at any moment, checks or no checks (renameat2 RENAME_EXCHANGE: 11 in 200 runs in the issue,
    every time here where the racer waits for the environment to be ready and the activation runs for a second).
    Such a parent is refused before anything is unpacked."""
    proof = shared_tmp / "PROOF"
    tb = _shared_copy(slow_tarball, shared_tmp)
    parent = _open_dir(shared_tmp)
    target, planted = parent / "job-env", parent / "planted"
    plant(attacker, planted, proof, str(target))
    signal = shared_tmp / "activating"
    racer = Racer(attacker, "exchange", signal, target, planted, shared_tmp)
    try:
        r = run_victim(["--unpack-to", target, "-e", tb], shim_env(shared_tmp / "unused", PONCHO_TEST_SIGNAL=signal))
    finally:
        racer.stop()
    assert_refused(r, proof, str(parent), "no sticky bit", "chmod +t")
    assert not (target / ".poncho_ready").exists()


@needs_root
def test_private_root_under_a_world_writable_tmpdir_without_sticky_bit_is_refused(slow_tarball, attacker,
                                                                                shared_tmp):
    """The same swap of the whole private root, ${TMPDIR}/poncho-<uid> (4 in 200 in the issue): a TMPDIR every
    user can write to without the sticky bit is refused on the cold path, before the root is used."""
    proof = shared_tmp / "PROOF"
    tb = _shared_copy(slow_tarball, shared_tmp)
    tmpdir = _open_dir(shared_tmp, "tmpdir")
    root, fake = tmpdir / "poncho-{}".format(os.getuid()), tmpdir / "fake-root"
    assert as_user(attacker, ["mkdir", fake]).returncode == 0
    plant(attacker, fake / SLOW_ID, proof, str(root / SLOW_ID))
    signal = shared_tmp / "activating"
    racer = Racer(attacker, "exchange", signal, root, fake, shared_tmp)
    try:
        r = run_victim(["-e", tb], shim_env(TMPDIR=tmpdir, PONCHO_TEST_SIGNAL=signal))
    finally:
        racer.stop()
    assert_refused(r, proof, str(tmpdir), "no sticky bit", "TMPDIR")
    assert not (root / SLOW_ID).exists()


# --- issue 29: a PONCHO_ENV_DIR shared with other users, with the budget's bookkeeping ------------------------

def _shared_root(shared_tmp):
    """A PONCHO_ENV_DIR several users share, like /tmp: world-writable with the sticky bit."""
    root = shared_tmp / "envs"
    root.mkdir()
    os.chmod(root, 0o1777)
    return root


@needs_root
def test_budget_records_in_a_shared_root_are_never_written_through_a_planted_link(tarball, attacker, shared_tmp):
    """The other user plants, for the id the victim will unpack, .<id>.used and .<id>.size as links to files of
    the victim's and .<id>.lock as a dangling link: the victim's run truncated the first file (the use mark),
    wrote its size into the second and created the third through the lock.  Now the records live inside the
    victim's own entry and a lock file is opened only as a regular file: a planted link is refused, exit 4."""
    root = _shared_root(shared_tmp)
    tb = _shared_copy(tarball, shared_tmp)
    mine = shared_tmp / "victims"
    mine.mkdir()
    os.chmod(mine, 0o755)
    (mine / "notes").write_text("precious\n")
    (mine / "other").write_text("precious too\n")
    created = mine / "created-by-the-lock"
    eid = ENV_ID
    for name, target in ((".{}.used", mine / "notes"), (".{}.size", mine / "other")):
        attacker_ln(attacker, target, root / name.format(eid))
    env = shim_env(root, PONCHO_ENV_BUDGET_MB=100)
    first = run_victim(["-e", tb], env)
    # Another id, whose lock file is a link planted before its first run: refused, nothing created.
    other = shared_tmp / ("env-" + "1ce" * 21 + "d.tar.gz")
    shutil.copy(tb, other)
    attacker_ln(attacker, created, root / ".{}.lock".format(os.path.basename(other)[:-7]))
    second = run_victim(["-e", other], env)
    damage = [str(p) for p, text in ((mine / "notes", "precious\n"), (mine / "other", "precious too\n"))
              if p.read_text() != text] + [str(created)] * created.exists()
    assert damage == []
    assert (first.returncode, first.stdout) == (0, "command ran\n"), first.stderr
    assert (second.returncode, second.stdout) == (4, ""), second.stderr
    assert "not trusted" in second.stderr and ".lock" in second.stderr


@needs_root
def test_entries_of_another_user_in_a_shared_root_are_refused(tarball, attacker, shared_tmp):
    """In a sticky PONCHO_ENV_DIR, a ready-looking entry the other user made first under the victim's id would
    have been activated (the root is used as given).  A sticky root is one several users share: only entries of
    the user's own are used there."""
    root = _shared_root(shared_tmp)
    proof = shared_tmp / "PROOF"
    plant(attacker, root / ENV_ID, proof)
    r = run_victim(["-e", _shared_copy(tarball, shared_tmp)], shim_env(root))
    assert_refused(r, proof, str(root / ENV_ID), "not made by this user")


# --- parts (issue 28) against the other user: the same trust rules for every part-<hex> and the parts lock ------

@pytest.fixture(scope="module")
def parts_env(tmp_path_factory):
    """An environment cut into parts (own part, interpreter, one part per distribution): (-e name, part paths)."""
    from helpers.partenv import make_env
    from poncho_wq.archive.parts import cut_parts

    d = tmp_path_factory.mktemp("secparts")
    tarball = make_env(d, "5ec0a1", {"bigpkg": ("1.0", 20000), "small": ("2.0", 1000)})
    parts = cut_parts(tarball, str(d), part_mb=0.01)
    assert len(parts) >= 3 and parts[0].role == "env", parts
    return os.path.basename(tarball)[:-len(".tar.gz")], [p.path for p in parts]


def _parts_args(parts_env):
    name, parts = parts_env
    args = ["-e", name]
    for p in parts:
        args += ["--part", p]
    return args


def _part_id(path):
    return os.path.basename(path)[:-len(".tar.gz")]


@needs_root
@pytest.mark.parametrize("root_kind, planted, how", [
    ("shared", "part", "run"), ("shared", "env", "run"), ("shared", "part", "extract-to"),
    ("private, mode 777", "part", "run"), ("private, mode 777", "env", "run"),
])
def test_a_part_or_assembled_env_planted_by_another_user_is_refused(parts_env, attacker, shared_tmp, root_kind,
                                                                    planted, how):
    """What a planted env-<hex>/ gets (tests above), for parts: a ready-looking part-<hex>/ (a distribution's part,
    which another environment would link in too) or assembled env-<hex>/ the other user made first, in a sticky
    shared PONCHO_ENV_DIR or in our own private root left at mode 777, is refused (exit 4) before anything is
    unpacked or linked: its activation script never runs, for a task or for TaskVine's --extract-to."""
    name, parts = parts_env
    proof = shared_tmp / "PROOF"
    if root_kind == "shared":
        root = _shared_root(shared_tmp)
        env = shim_env(root)
    else:
        root = shared_tmp / "poncho-{}".format(os.getuid())
        root.mkdir()
        os.chmod(root, 0o777)
        env = shim_env(TMPDIR=shared_tmp)
    target = root / (name if planted == "env" else _part_id(parts[-1]))
    plant(attacker, target, proof)
    if how == "run":
        r = run_victim(_parts_args(parts_env), env)
    else:
        r = run_shim(["--extract-to", shared_tmp / "newdir"] + _parts_args(parts_env), env=env)
        assert not (shared_tmp / "newdir").exists()
    words = (str(root), "mode 777") if (root_kind, planted) == ("private, mode 777", "part") else \
        (str(target), "not made by this user")
    assert_refused(r, proof, *words)
    assert unpack_count(root / "unpack.log") == 0  # no part of the victim's unpacked, nothing assembled
    assert sorted(n for n in os.listdir(root) if n.startswith(("part-", "env-"))) == [target.name]


@needs_root
@pytest.mark.parametrize("lock", ["a link to a file of the victim's", "a file of the other user's"])
def test_a_parts_lock_planted_in_a_shared_root_is_refused(parts_env, attacker, shared_tmp, lock):
    """With a budget, an assembly holds <root>/.parts.lock (shared) so that no eviction removes a part it links.
    In a sticky shared root the other user makes that name first: as a link to a file of the victim's (opened
    through it, the victim's file would be created or appended to) or as a regular file of theirs (whose flock
    they control).  Refused as a planted use lock is: exit 4 naming it, nothing written through it, nothing
    unpacked."""
    root = _shared_root(shared_tmp)
    mine = shared_tmp / "victims"
    mine.mkdir()
    os.chmod(mine, 0o755)
    (mine / "notes").write_text("precious\n")
    if lock.startswith("a link"):
        attacker_ln(attacker, mine / "notes", root / ".parts.lock")
    else:
        assert as_user(attacker, ["touch", root / ".parts.lock"]).returncode == 0
    r = run_victim(_parts_args(parts_env), shim_env(root, PONCHO_ENV_BUDGET_MB=100))
    assert (r.returncode, r.stdout) == (4, ""), r.stderr
    assert r.stderr.startswith("poncho_package_run: ") and "not trusted" in r.stderr, r.stderr
    assert str(root / ".parts.lock") in r.stderr, r.stderr
    assert (mine / "notes").read_text() == "precious\n"
    assert unpack_count(root / "unpack.log") == 0
    assert [n for n in os.listdir(root) if n.startswith(("part-", "env-"))] == []


# --- issue 29, low: archives busybox tar treats differently, closed directories, -e DIR of another user ---------

def test_member_names_with_dot_dot_are_refused_by_either_tar(tarball, tmp_path, tar_flavour):
    """GNU tar refuses a member named ../x (exit 3 here); busybox tar cut it to x, said so once and succeeded, so
    the same archive gave a tree that differs from it.  Refused with either tar, nothing outside, nothing left."""
    hostile = _rewrite(tarball, tmp_path / (ENV_ID + ".tar.gz"), [_member("../escaped", tarfile.REGTYPE, 0o644)])
    for where in ("cache", "unpack-to", "extract-to"):
        r, d = _run_where(where, [hostile, "hello"], tmp_path, shim_env(PATH=tar_flavour))
        assert (r.returncode, r.stdout) == (3, ""), (where, r.stderr)
        last = r.stderr.splitlines()[-1]
        assert last.startswith("poncho_package_run: could not extract") and "'..'" in last or "tar failed" in last, r.stderr
        assert not (d / ".poncho_ready").exists()
        assert not (d / "escaped").exists() and not (d.parent / "escaped").exists()
    assert leftovers(tmp_path / "root") == []
    assert not (tmp_path / "extracted").exists() and not list(tmp_path.glob(".poncho_extract.*"))


def test_files_written_through_a_link_leading_out_are_refused_by_either_tar(tarball, tmp_path, tar_flavour):
    """A symbolic link member leading out of the tree, then a member under it: neither tar writes through the
    link (GNU tar makes it a placeholder until the end; busybox tar will not make it over the directory), so
    the archive is refused, on every path the shim extracts by (TaskVine's --extract-to included)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    link = _member("share/out", tarfile.SYMTYPE, 0o777)
    link.linkname = str(outside)
    hostile = _rewrite(tarball, tmp_path / (ENV_ID + ".tar.gz"), [link, _member("share/out/owned", tarfile.REGTYPE,
                                                                                0o644)])
    for where in ("cache", "unpack-to", "extract-to"):
        r, d = _run_where(where, [hostile, "hello"], tmp_path, shim_env(PATH=tar_flavour))
        assert (r.returncode, r.stdout) == (3, ""), (where, r.stderr)
        assert r.stderr.splitlines()[-1].startswith("poncho_package_run: could not extract"), (where, r.stderr)
        assert list(outside.iterdir()) == [], where
        assert not (d / ".poncho_ready").exists()
    assert not (tmp_path / "extracted").exists() and not list(tmp_path.glob(".poncho_extract.*"))


def _closed_dirs_tarball(tarball, out, mode):
    """``tarball`` plus a directory member share/closed of ``mode``, before a file inside it."""
    d = tarfile.TarInfo("share/closed")
    d.type, d.mode = tarfile.DIRTYPE, mode
    return _rewrite(tarball, out, [d, _member("share/closed/data.txt", tarfile.REGTYPE, 0o644)], uid=0)


@needs_root
@pytest.mark.parametrize("mode", [0o000, 0o555])
def test_closed_directories_in_an_archive_leave_nothing_undeletable(tarball, attacker, shared_tmp, mode):
    """As a user who is not root, with GNU tar: a directory member of mode 000 (or 0555) is set so once its files
    are in; find(1) could not look into it (exit 3), and the temp dir was left behind, undeletable by that user.
    Now every directory gets owner read/write/search: the environment is unpacked and usable, and nothing is left."""
    tb = _closed_dirs_tarball(tarball, shared_tmp / (ENV_ID + ".tar.gz"), mode)
    os.chmod(tb, 0o644)
    root = shared_tmp / "users-root"
    assert as_user(attacker, ["mkdir", "-m", "700", root]).returncode == 0
    r = as_user(attacker, ["dash", shim_path(), "-e", tb, "cat", str(root / ENV_ID / "share" / "closed" / "data.txt")],
                env=shim_env(root), cwd=str(shared_tmp))
    assert (r.returncode, r.stdout) == (0, "#!/bin/sh\necho hostile\n"), r.stderr
    assert leftovers(root) == []
    for path, st in _walk(str(root / ENV_ID)):
        if stat.S_ISDIR(st.st_mode):
            assert st.st_mode & 0o700 == 0o700, (path, oct(st.st_mode))


@needs_root
def test_busybox_tar_and_a_read_only_directory_member_fail_cleanly(tarball, attacker, shared_tmp):
    """Documented limit (docs/security.md): busybox tar, not as root, cannot put files into a directory member of
    mode 0555 that comes before them (it applies the mode at once).  The run ends with exit 3, tar's line and
    ours, and leaves nothing; GNU tar unpacks it (test above)."""
    tb = _closed_dirs_tarball(tarball, shared_tmp / (ENV_ID + ".tar.gz"), 0o555)
    os.chmod(tb, 0o644)
    bb = shared_tmp / "bbtar"  # where the other user can reach it (pytest's own temp dirs are root's, 0700)
    bb.mkdir(mode=0o755)
    for tool in ("tar", "find", "tail"):
        os.symlink(shutil.which("busybox"), bb / tool)
    root = shared_tmp / "users-root"
    assert as_user(attacker, ["mkdir", "-m", "700", root]).returncode == 0
    r = as_user(attacker, ["dash", shim_path(), "-e", tb, "true"],
                env=shim_env(root, PATH="{}:{}".format(bb, shim_env()["PATH"])), cwd=str(shared_tmp))
    assert (r.returncode, r.stdout) == (3, ""), r.stderr
    assert "Permission denied" in r.stderr and r.stderr.splitlines()[-1].startswith("poncho_package_run: could not extract")
    assert sorted(os.listdir(root)) == sorted([".poncho_lockmode", "." + ENV_ID + ".lock"])


@needs_root
def test_unpacked_environment_of_another_user_is_refused(tarball, attacker, shared_tmp, tmp_path):
    """-e DIR used DIR whoever made it: a ready-looking directory the other user put under the name in a shared
    /tmp ran its activation code as the victim.  Another user's DIR is refused; root's is fine for anybody."""
    proof = shared_tmp / "PROOF"
    planted = shared_tmp / "job-env"
    plant(attacker, planted, proof)
    assert_refused(run_victim(["-e", planted], shim_env(tmp_path / "root")), proof, str(planted), "another user")
    # An environment unpacked by root (this test), used by another user.
    system = shared_tmp / "system-env"
    system.mkdir()
    subprocess.run(["tar", "-xzf", tarball, "-C", str(system)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(system)], check=True)
    r = as_user(attacker, ["dash", shim_path(), "-e", system, "sh", "-c", 'echo "$CONDA_PREFIX"'],
                env=shim_env(), cwd=str(shared_tmp))
    assert (r.returncode, r.stdout) == (0, "{}\n".format(system)), r.stderr


@needs_root
def test_a_private_root_another_user_made_first_falls_back_to_the_users_cache(tarball, attacker, shared_tmp,
                                                                             tmp_path):
    """Anyone can make /tmp/poncho-<uid> first: every task of that uid then ended with exit 4.  The user's own
    cache directory ($XDG_CACHE_HOME, else ~/.cache) holds the root instead, with a warning on the cold path;
    without a usable home the refusal stays (tests above)."""
    proof = shared_tmp / "PROOF"
    squat = shared_tmp / "poncho-{}".format(os.getuid())
    assert as_user(attacker, ["mkdir", "-m", "755", squat]).returncode == 0
    plant(attacker, squat / ENV_ID, proof)
    home = tmp_path / "home"
    home.mkdir()
    env = shim_env(TMPDIR=shared_tmp, HOME=home)
    for warm in (False, True):
        r = run_victim(["-e", tarball], env)
        assert (r.returncode, r.stdout) == (0, "command ran\n"), r.stderr
        assert ("warning: {} is not a directory of this user".format(squat) in r.stderr) != warm, r.stderr
    assert (home / ".cache" / "poncho-envs" / ENV_ID / ".poncho_ready").is_file()
    assert not proof.exists()
