"""Helpers for tests that need real conda-pack tarballs and real runs of the sh shim.

No conda channel is reachable from the test machines, so the prefixes made here are the smallest honest conda
prefixes: a directory with ``conda-meta/history`` (conda-pack refuses a prefix without it: "mtime may not be
None"), text files that contain the build prefix (conda-pack records them in ``bin/conda-unpack``, so
relocation has something to rewrite) and a ``bin/python`` that is a two-line sh wrapper exec'ing the system
``/usr/bin/python3``.  The wrapper stands in for a conda-forge interpreter: the shim runs conda-unpack's records
with ``<env>/bin/python``, and the wrapper itself contains no prefix, so it stays valid wherever the env goes.

The tarballs are made by conda-pack itself (``conda_pack.pack``), never by poncho_wq code.
"""

import collections
import contextlib
import os
import pwd
import shutil
import subprocess
import tarfile
import time
import uuid

from poncho_wq.shim import run_in_env_path, shim_path

# Shells the shim must run under; a test set-up installs the missing ones (`dev/setup.sh`: dash, busybox).
SHELLS = {
    "dash": ["dash"],
    "bash-posix": ["bash", "--posix"],
    "busybox": ["busybox", "sh"],
}

# The build prefix is made long so that any later location (pytest tmp dirs included) is shorter than the
# placeholder, as with conda-forge's 255-character placeholders.
_PAD = "_placehold" * 12


def ensure_shells():
    """Install dash and busybox with apt when missing (Debian packages); return SHELLS."""
    missing = [name for name in ("dash", "busybox") if shutil.which(name) is None]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq"] + missing, check=True, stdin=subprocess.DEVNULL,
                       capture_output=True)
    return SHELLS


def make_prefix(parent, name="prefix", *, python=True, random_mb=0, prefix_text_mb=0, data_vars=(),
                run_in_env=False, broken_python=False):
    """Create a minimal conda prefix under ``parent`` and return its path.

    - ``bin/hello`` prints the prefix baked into it (a conda-unpack text record);
      ``share/where.txt`` holds the prefix too.
    - ``etc/conda/activate.d/poncho_test.sh`` exports ``PONCHO_TEST_ACTIVATED=$CONDA_PREFIX``.
    - ``random_mb``: that many MB of incompressible files (``share/random/*``), for slow extractions.
    - ``prefix_text_mb``: a text file of that size full of the prefix, for a slow relocation.
    - ``data_vars``: names for ``poncho/set_env`` lines (``export VAR="$1/VAR"``) with a ``<VAR>/file.txt``.
    - ``run_in_env``: copy poncho_wq's ``run_in_env`` into ``bin/`` as the builders do.
    - ``broken_python``: ``bin/python`` exits 3 (relocation must fail).
    """
    prefix = os.path.join(str(parent), name + _PAD)
    for sub in ("bin", "conda-meta", "etc/conda/activate.d", "share", "poncho"):
        os.makedirs(os.path.join(prefix, sub), exist_ok=True)
    _write(prefix, "conda-meta/history", "==> 2024-01-01 00:00:00 <==\n# cmd: poncho_wq tests\n")
    if python or broken_python:
        body = "exit 3\n" if broken_python else 'exec /usr/bin/python3 "$@"\n'
        _write(prefix, "bin/python", "#!/bin/sh\n" + body, mode=0o755)
    _write(prefix, "bin/hello", '#!/bin/sh\necho "prefix={}"\n'.format(prefix), mode=0o755)
    _write(prefix, "share/where.txt", prefix + "\n")
    _write(prefix, "etc/conda/activate.d/poncho_test.sh", 'export PONCHO_TEST_ACTIVATED="$CONDA_PREFIX"\n')
    lines = []
    for var in data_vars:
        _write(prefix, os.path.join(var, "file.txt"), "data of {}\n".format(var))
        lines.append('export {0}="$1/{0}"\n'.format(var))
    if lines:
        _write(prefix, "poncho/set_env", "".join(lines))
    if random_mb:
        os.makedirs(os.path.join(prefix, "share", "random"), exist_ok=True)
        for i in range(random_mb):
            with open(os.path.join(prefix, "share", "random", "r{:03d}.bin".format(i)), "wb") as f:
                f.write(os.urandom(1 << 20))
    if prefix_text_mb:
        line = ("path=" + prefix + "/lib\n").encode()
        with open(os.path.join(prefix, "share", "big.txt"), "wb") as f:
            f.write(line * ((prefix_text_mb << 20) // len(line)))
    if run_in_env:
        shutil.copy(run_in_env_path(), os.path.join(prefix, "bin", "run_in_env"))
    return prefix



#: The floors (poncho/floor) of the tarballs ``floor_tarballs`` makes, by name (None: the machine's own).
FLOORS = {
    "a": None, "b": None,
    "foreign": "machine=aarch64\n",
    "long": "# x\n" * 1000 + "machine=aarch64\n",
    "bigglibc": "libc=glibc\nglibc=99999999999999999999.1\n",
    "hostile": "machine=$(touch {0}/dollar)`touch {0}/tick`;touch {0}/semi\n",
}


def floor_tarballs(d, names):
    """Real poncho_wq tarballs (poncho/floor first, packed by poncho_wq's packer) of one small prefix under *d*, one
    per name of *names* (FLOORS: "a", "b" same content, other names; "foreign" machine=aarch64; "long" 1,000 lines
    before machine=aarch64; "bigglibc" a 20-digit field; "hostile" shell syntax in its values, touching files in
    *d* if evaluated); plus "plain": conda-pack's own tarball of it, with bin/run_in_env, "prefix" and "dir"."""
    from poncho_wq.archive.floor import FLOOR_MEMBER, write_floor
    from poncho_wq.archive.pack import pack_prefix

    prefix = make_prefix(d, run_in_env=True)
    out = {"prefix": prefix}
    for i, (name, floor) in enumerate(FLOORS.items()):
        if name not in names:
            continue
        write_floor(prefix)
        if floor is not None:
            with open(os.path.join(prefix, FLOOR_MEMBER), "w") as f:
                f.write(floor.format(d))
        out[name] = str(d / "env-{:032x}.tar.gz".format(i + 1))
        pack_prefix(prefix, out[name], n_threads=1)
    write_floor(prefix)
    out["plain"] = pack(prefix, d / "plain.tar.gz")
    out["dir"] = str(d)
    return out

def _write(prefix, rel, text, mode=0o644):
    path = os.path.join(prefix, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def pack(prefix, output):
    """Pack ``prefix`` with conda-pack into ``output`` (format from the name); return ``output``."""
    import conda_pack

    conda_pack.pack(prefix=prefix, output=str(output), ignore_missing_files=True, n_threads=2, force=True)
    return str(output)


def pack_plain(parent, output, random_mb=40, files=40):
    """A tarball made by tar itself of ``random_mb`` MB of incompressible files (``files`` of them,
    ``share/random/*``) and a ``bin/hello``: no ``bin/conda-unpack``, so the shim relocates nothing and a tree is
    marked ready right after its extraction (a slow one, for tests that step in during it); return ``output``."""
    tree = os.path.join(str(parent), "plain-tree")
    os.makedirs(os.path.join(tree, "share", "random"))
    _write(tree, "bin/hello", '#!/bin/sh\necho "prefix=$CONDA_PREFIX"\n', mode=0o755)
    for i in range(files):
        with open(os.path.join(tree, "share", "random", "r{:04d}.bin".format(i)), "wb") as f:
            f.write(os.urandom((random_mb << 20) // files))
    subprocess.run(["tar", "-czf", str(output), "-C", tree, "bin", "share"], check=True)
    return str(output)


def slow_tar(parent, seconds=2.0):
    """A directory to put first on PATH: its ``tar`` is the real one, but an extraction reads its archive through a
    pipe fed 64 KiB at a time over about ``seconds`` (-z added unless the shim named pigz), so that tar is writing
    files all along while another process steps in.  Everything else goes to the real tar."""
    d = os.path.join(str(parent), "slowtar")
    os.makedirs(d, exist_ok=True)
    real = shutil.which("tar")
    feed = ("import os, sys, time\n"
            "f = open(sys.argv[1], 'rb'); n = max(1, os.path.getsize(sys.argv[1]) >> 16)\n"
            "for chunk in iter(lambda: f.read(65536), b''):\n"
            "    sys.stdout.buffer.write(chunk); sys.stdout.buffer.flush(); time.sleep({} / n)\n").format(seconds)
    script = """#!/bin/sh
case " $* " in *" -x "*) ;; *) exec {real} "$@" ;; esac
f=
n=0
for a do
    shift
    if [ "$n" = 1 ]; then f=$a; n=0; set -- "$@" -; continue; fi
    [ "$a" != -f ] || n=1
    set -- "$@" "$a"
done
case " $* " in *--use-compress-program*) ;; *) set -- "$@" -z ;; esac
/usr/bin/python3 -c "{feed}" "$f" | {real} "$@"
""".format(real=real, feed=feed)
    _write(d, "tar", script, mode=0o755)
    return d


def tar_members(tarball):
    """Relative names of the regular files and symlinks in a tarball (what a complete unpack must hold)."""
    with tarfile.open(tarball) as tf:
        return sorted(m.name for m in tf.getmembers() if m.isfile() or m.issym())


def missing_members(tarball, directory):
    """Members of ``tarball`` absent from ``directory`` (empty list = complete)."""
    return [m for m in tar_members(tarball) if not os.path.lexists(os.path.join(directory, m))]


def shim_env(root=None, **extra):
    """A clean environment for a shim run: the test's PATH, no worker variables, PONCHO_ENV_DIR=root."""
    from poncho_wq.config import SETTINGS

    worker = {s.name for s in SETTINGS if s.where in ("worker", "both")}  # every variable the shim reads
    env = {k: v for k, v in os.environ.items() if k not in worker and k != "WORKER_TMPDIR"}
    if root is not None:
        env["PONCHO_ENV_DIR"] = str(root)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def shim_cmd(args, shell=("dash",), script=None):
    """argv running the shim file (package data by default) under ``shell``."""
    return list(shell) + [script or shim_path()] + [str(a) for a in args]


def run_shim(args, *, shell=("dash",), env=None, cwd=None, timeout=300, script=None):
    """Run the shim to completion; CompletedProcess with text stdout/stderr."""
    return subprocess.run(shim_cmd(args, shell, script), env=env if env is not None else shim_env(), cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def start_shim(args, *, shell=("dash",), env=None, cwd=None):
    """Start the shim in its own process group (so a test can SIGKILL it with all its children)."""
    return subprocess.Popen(shim_cmd(args, shell), env=env if env is not None else shim_env(), cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def unpack_count(log):
    """Extractions recorded in an unpack log (``<root>/unpack.log`` or ``<dir>/.poncho_unpack.log``)."""
    try:
        with open(log) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def leftovers(root):
    """Temp and lock directories left in a cache root (``.<id>.tmp.*``, ``.<id>.lockd*``)."""
    return sorted(n for n in os.listdir(root) if ".tmp." in n or ".lockd" in n)


User = collections.namedtuple("User", "name uid gid")


@contextlib.contextmanager
def second_user():
    """A throwaway local user made for the test with useradd (no home, no login shell), removed with userdel.

    Needs root.  useradd fails while another process holds /etc/passwd's lock, so it is retried for a while."""
    name = "ponchot" + uuid.uuid4().hex[:8]
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name]
    for attempt in range(20):
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("useradd {} failed: {}".format(name, r.stderr))
    try:
        pw = pwd.getpwnam(name)
        yield User(name, pw.pw_uid, pw.pw_gid)
    finally:
        for attempt in range(20):
            if subprocess.run(["userdel", name], stdin=subprocess.DEVNULL, capture_output=True).returncode == 0:
                break
            time.sleep(0.5)


def as_user(user, argv, **kwargs):
    """Run argv as ``user`` (setpriv: real and effective uid/gid, no supplementary groups); CompletedProcess."""
    full = ["setpriv", "--reuid", str(user.uid), "--regid", str(user.gid), "--clear-groups", "--"] + [str(a) for a in argv]
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run(full, **kwargs)
