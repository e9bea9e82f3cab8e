"""The run shim's floor check (issue 19): a worker of another architecture, or with an older glibc than the
environment needs, gets exit 4 and one line saying what the environment needs, what the worker has and how to
build for it, before anything is unpacked; run_in_env (TaskVine) does the same before relocating.

The tarballs are real poncho_wq archives (poncho_wq.archive.pack.pack_prefix, which writes ``poncho/floor`` first) of a
small conda prefix holding a real ELF file (a copy of /bin/true), whose floor is computed by poncho_wq.archive.floor and
then edited for the mismatches: ``machine=aarch64``, ``glibc=9.99``.

The last section holds the regressions of a hostile review of the worker scripts (each failed before its fix):
a poncho/floor read whole (quadratic: 64 KiB of short lines took 7 s under dash, 47 s under bash), a 20-digit glibc
field printing the shell's errors, hostile floor values, a big-endian ppc64 binary called ppc64le."""

import os
import shutil
import subprocess
import tarfile
import zlib

import pytest

from helpers.shimutil import floor_tarballs, make_prefix, pack, run_shim, shim_env
from poncho_wq.archive.floor import FLOOR_MEMBER, floor_text, prefix_floor, write_floor
from poncho_wq.archive.pack import pack_prefix
from poncho_wq.worker import shared_code

pytestmark = pytest.mark.usefixtures("shells")

SHELLS = {"dash": ("dash",), "busybox": ("busybox", "sh")}
MACHINE = os.uname().machine
GLIBC = os.confstr("CS_GNU_LIBC_VERSION").split()[1]  # "glibc 2.36" -> "2.36"
GLIBC_MINOR = GLIBC.split(".")[1]


def _edit_floor(prefix, **values):
    path = os.path.join(prefix, FLOOR_MEMBER)
    with open(path) as f:
        lines = f.read().splitlines()
    lines = [next(("{}={}".format(k, v) for k, v in values.items() if line.startswith(k + "=")), line)
             for line in lines]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    """``{"real", "aarch64", "glibc999"}`` -> tarball (env-<hex>.tar.gz), plus ``"prefix"``: the packed prefix."""
    d = tmp_path_factory.mktemp("floor")
    prefix = make_prefix(d, run_in_env=True)
    os.makedirs(os.path.join(prefix, "lib"))
    shutil.copy("/bin/true", os.path.join(prefix, "lib", "true"))
    floor = write_floor(prefix)
    assert floor["machine"] == MACHINE and floor["libc"] == "glibc" and floor["glibc_by"] == "lib/true"
    out = {"prefix": prefix, "floor": floor}
    for i, (name, edits) in enumerate((("real", {}), ("aarch64", {"machine": "aarch64"}),
                                       ("glibc999", {"glibc": "9.99"}))):
        write_floor(prefix)
        _edit_floor(prefix, **edits)
        out[name] = str(d / "env-{:032x}.tar.gz".format(i + 1))
        pack_prefix(prefix, out[name], n_threads=1)
    write_floor(prefix)
    return out


def _one_line(r):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poncho_package_run: "), r.stderr
    return lines[0]


def test_floor_is_the_archives_first_member_in_a_plain_header(tarballs):
    """What the shim relies on: poncho/floor opens the stream (no pax header before it), and says the floor."""
    with tarfile.open(tarballs["real"]) as tar:
        first = tar.next()
        assert first.name == FLOOR_MEMBER
        assert tar.extractfile(first).read().decode() == floor_text(prefix_floor(tarballs["prefix"]))
    with open(tarballs["real"], "rb") as f:
        head = zlib.decompressobj(31).decompress(f.read(4096))
    assert head[:len(FLOOR_MEMBER) + 1] == FLOOR_MEMBER.encode() + b"\0"


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_worker_that_meets_the_floor_runs_it(tarballs, tmp_path, shell):
    root = tmp_path / "root"
    r = run_shim(["-e", tarballs["real"], "hello"], shell=SHELLS[shell], env=shim_env(root))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "prefix={}".format(root / os.path.basename(tarballs["real"])[:-7])


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_another_architecture_is_refused_before_unpacking(tarballs, tmp_path, shell):
    root = tmp_path / "root"
    r = run_shim(["-e", tarballs["aarch64"], "hello"], shell=SHELLS[shell], env=shim_env(root))
    assert r.returncode == 4, r.stderr
    line = _one_line(r)
    name = os.path.basename(tarballs["aarch64"])
    assert "{} was built for aarch64 and cannot run on this {} worker".format(name, MACHINE) in line, line
    assert "--target manylinux_2_{}_{}".format(GLIBC_MINOR, MACHINE) in line, line
    assert not root.exists()  # nothing unpacked, not even the root made


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_an_older_glibc_is_refused_before_unpacking(tarballs, tmp_path, shell):
    root = tmp_path / "root"
    root.mkdir()
    r = run_shim(["-e", tarballs["glibc999"], "hello"], shell=SHELLS[shell], env=shim_env(root))
    assert r.returncode == 4, r.stderr
    line = _one_line(r)
    assert "needs glibc 9.99 or newer (lib/true), this worker ({}) has glibc {}".format(MACHINE, GLIBC) in line, line
    assert "--target manylinux_2_{}_{}".format(GLIBC_MINOR, MACHINE) in line, line
    assert "PONCHO_SKIP_FLOOR_CHECK=1" in line and "conda engine" in line, line
    assert os.listdir(root) == []  # no lock, no temp dir, no log


def test_skip_setting_runs_it_anyway(tarballs, tmp_path):
    root = tmp_path / "root"
    r = run_shim(["-e", tarballs["glibc999"], "hello"], env=shim_env(root, PONCHO_SKIP_FLOOR_CHECK="1"))
    assert r.returncode == 0, r.stderr


def test_a_tarball_without_a_floor_is_not_checked(tmp_path):
    """conda-pack's own tarballs and poncho_wq's from before floors: used as before."""
    prefix = make_prefix(tmp_path)
    tarball = pack(prefix, tmp_path / ("env-" + "e" * 32 + ".tar.gz"))
    r = run_shim(["-e", tarball, "hello"], env=shim_env(tmp_path / "root"))
    assert r.returncode == 0, r.stderr


def test_unpack_to_code_layer_and_unpacked_directory_are_checked_too(tarballs, tmp_path):
    # --unpack-to (upstream semantics): the directory is not even created.
    target = tmp_path / "target"
    r = run_shim(["-e", tarballs["aarch64"], "--unpack-to", target, "hello"], env=shim_env(tmp_path / "r1"))
    assert r.returncode == 4 and "built for aarch64" in _one_line(r)
    assert not target.exists()
    # A cold code layer is unpacked before the base: the base's floor is checked before either.
    layer_src = tmp_path / "layer"
    (layer_src / "lib").mkdir(parents=True)
    (layer_src / "lib" / "mymod.py").write_text("X = 1\n")
    layer = tmp_path / ("code-" + "c" * 32 + ".tar.gz")
    subprocess.run(["tar", "-czf", str(layer), "-C", str(layer_src), "lib"], check=True)
    root = tmp_path / "r2"
    r = run_shim(["-e", tarballs["glibc999"], "--code", layer, "hello"], env=shim_env(root))
    assert r.returncode == 4 and "needs glibc 9.99" in _one_line(r)
    assert not root.exists()
    # An unpacked, not yet relocated directory (-e DIR): refused before relocation.
    d = tmp_path / "unpacked"
    d.mkdir()
    subprocess.run(["tar", "-xzf", tarballs["aarch64"], "-C", str(d)], check=True)
    r = run_shim(["-e", d, "hello"], env=shim_env(tmp_path / "r3"))
    assert r.returncode == 4 and "{} was built for aarch64".format(d) in _one_line(r)
    assert not (d / ".poncho_ready").exists()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_refuses_before_relocating(tarballs, tmp_path, shell):
    """TaskVine's path: the tarball is unpacked by the worker, run_in_env checks before it relocates."""
    for name, status in (("aarch64", 4), ("glibc999", 4), ("real", 0)):
        d = tmp_path / name
        d.mkdir()
        subprocess.run(["tar", "-xzf", tarballs[name], "-C", str(d)], check=True)
        r = subprocess.run(list(SHELLS[shell]) + [str(d / "bin" / "run_in_env"), "hello"], env=shim_env(),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        assert r.returncode == status, (name, r.stderr)
        if status:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("run_in_env: {} ".format(d)), r.stderr
            assert not (d / ".poncho_ready").exists()  # not relocated
        else:
            assert r.stdout.strip() == "prefix={}".format(d)


def _shared_functions(tmp_path):
    """The worker scripts' shared code (the floor functions are in it) as a file to source."""
    path = tmp_path / "shared.sh"
    path.write_text(shared_code())
    return path


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_worker_libc_from_getconf_and_without_it(tmp_path, shell):
    """getconf GNU_LIBC_VERSION, and on a worker without getconf (nor ldd) the glibc loader's --version."""
    shared = _shared_functions(tmp_path)
    bare = tmp_path / "bare-bin"  # a PATH with uname only: no getconf, no ldd
    bare.mkdir()
    os.symlink(shutil.which("uname"), bare / "uname")
    script = '. "$1"; poncho_worker_libc; printf "%s %s\\n" "$_fl_wl" "$_fl_wg"'
    for path in (os.environ["PATH"], str(bare)):
        argv = [shutil.which(SHELLS[shell][0])] + list(SHELLS[shell][1:])
        r = subprocess.run(argv + ["-c", script, "sh", str(shared)], env={"PATH": path},
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        assert r.stdout == "glibc {}\n".format(GLIBC), (path, r.stdout, r.stderr)


def test_version_comparison(tmp_path):
    shared = _shared_functions(tmp_path)
    cases = [("2.35", "2.35", 0), ("2.36", "2.35", 0), ("2.31", "2.35", 1), ("2.4", "2.35", 1), ("10.0", "9.99", 0),
             ("2.3.4", "2.3", 0), ("2.3", "2.3.4", 1), ("3", "2.99", 0),
             ("2.35.9000", "2.35", 0), ("2.35", "2.35.9000", 1), ("2.4", "2.10", 1), ("2.10", "2.4", 0)]
    script = '. "$1"; shift; while [ "$#" -gt 0 ]; do _fl_atleast "$1" "$2"; echo $?; shift 2; done'
    args = [a for have, need, _ in cases for a in (have, need)]
    r = subprocess.run(["dash", "-c", script, "sh", str(shared)] + args, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert [int(x) for x in r.stdout.split()] == [status for _, _, status in cases], r.stderr


@pytest.mark.e2e
def test_real_worker_reports_the_floor_line_through_shim_error(cluster, tarballs, tmp_path):
    """A PonchoTask given the aarch64 tarball, on a real worker: exit 4, task.shim_error holds the line; then
    tasks given the tarball with the real floor run."""
    project = tmp_path / "project"
    project.mkdir()
    cluster.start_manager("manager.py", ["--tasks", "2", "--retries", "0", "--command", "hello",
                                         "--environment", tarballs["aarch64"]], str(project),
                          str(tmp_path / "cache"))
    cluster.start_worker()
    out = cluster.wait_results()
    for r in out["results"]:
        assert r["return_status"] == 4, r
        code, message = r["shim_error"]
        assert code == 4 and "was built for aarch64 and cannot run on this {} worker".format(MACHINE) in message, r
    # The environment with the real floor, through the same binding and a new worker (single-shot workers leave
    # with their manager).
    os.remove(cluster.port_file)
    cluster.start_manager("manager.py", ["--tasks", "2", "--retries", "0", "--command", "hello",
                                         "--environment", tarballs["real"]], str(project), str(tmp_path / "cache"))
    cluster.start_worker()
    out = cluster.wait_results()
    assert [(r["return_status"], r["shim_error"]) for r in out["results"]] == [(0, None)] * 2, out
    assert all(r["output"].startswith("prefix=") for r in out["results"]), out


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_floor_text_with_escape_sequences_is_not_printed_raw(tmp_path, shell):
    """poncho/floor comes from the archive: an ANSI escape sequence in its machine= or glibc_by= value went raw into
    the task's output (and the terminal showing it).  Such a value is shown as "(unprintable)"; the check itself is
    unchanged (another machine is still refused)."""
    shared = _shared_functions(tmp_path)
    floors = ["machine=aarch64\x1b[2J\x1b[31m\n",
              "machine={}\nlibc=glibc\nglibc=99.0\nglibc_by=lib/\x1b]0;pwned\x07x.so\n".format(MACHINE)]
    argv = [shutil.which(SHELLS[shell][0])] + list(SHELLS[shell][1:])
    for floor in floors:
        r = subprocess.run(argv + ["-c", '. "$1"; poncho_floor_ok prog "$2" env.tar.gz', "sh", str(shared), floor],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        assert "\x1b" not in r.stderr and "\x07" not in r.stderr, repr(r.stderr)
        assert r.stderr.startswith("prog: env.tar.gz ") and "(unprintable)" in r.stderr, r.stderr


# ============================================== review of the worker scripts: floor check (each failed before its fix)

@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    """Tarballs of helpers.shimutil.floor_tarballs with a long, an overlong and a hostile floor."""
    return floor_tarballs(tmp_path_factory.mktemp("review"), ("long", "bigglibc", "hostile"))


def _run(envs, args, root, shell, **extra):
    return run_shim(args, shell=SHELLS[shell], env=shim_env(root, **extra))



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
