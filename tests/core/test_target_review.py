"""Review of the build-target work (issue 19): each test here failed before the fix next to it.

Parsing (architecture names people type, the messages for tags that are not manylinux), the installer chosen for a
target uv cannot name, the floor check against a wheel whose tag lies about its glibc (a real extension compiled
here, retagged manylinux2014), the process-wide build memo of an Environment when ``PONCHO_WQ_TARGET`` changes,
and dev/debian11-root.sh removing a killed run's leftovers without deleting through a bind mount.
"""

import os
import subprocess
import sys

import pytest

from helpers.paths import REPO as TOP
from poncho_wq.errors import SpecError
from poncho_wq.target import floor_problem, parse_target


# --- parsing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("typed, tag", [("manylinux_2_28_amd64", "manylinux_2_28_x86_64"),
                                        ("manylinux_2_17_ARM64", "manylinux_2_17_aarch64"),
                                        ("manylinux2014_amd64", "manylinux_2_17_x86_64")])
def test_architecture_names_people_type_are_accepted(typed, tag):
    assert parse_target(typed).tag == tag


@pytest.mark.parametrize("bad, says", [
    ("linux_x86_64", "names no glibc version"),
    ("musllinux_1_2_x86_64", "musl"),
    ("macosx_11_0_arm64", "Linux workers only"),
    ("win_amd64", "Linux workers only"),
    ("manylinux_2_4_x86_64", "glibc 2.5"),  # below manylinux1 no tag exists: pip would get no --platform at all
])
def test_tags_that_cannot_be_targets_get_a_message_saying_what_to_write(bad, says):
    with pytest.raises(SpecError) as e:
        parse_target(bad)
    assert says in str(e.value) and "manylinux_2_28_x86_64" in str(e.value)


def test_a_newer_glibc_than_uv_knows_is_served_by_the_newest_it_knows():
    t = parse_target("manylinux_2_99_x86_64")
    assert t.uv_platform() == "x86_64-manylinux_2_40" and t.pip_platforms()[0] == "manylinux_2_99_x86_64"


def test_the_floor_of_a_32_bit_arm_build_matches_an_armv7l_target():
    """ELF says "arm" (EM_ARM) for what uname -m and manylinux call armv7l."""
    assert floor_problem({"machine": "arm", "libc": "glibc", "glibc": "2.17"}, parse_target("manylinux_2_17_armv7l")) \
        is None
    assert "built for arm" in floor_problem({"machine": "arm", "glibc": "2.17"}, parse_target("manylinux_2_17_x86_64"))


def test_a_target_uv_cannot_name_is_installed_with_pip():
    """uv's --python-platform knows manylinux only for x86_64 and aarch64: a ppc64le or s390x target (a native
    build on such a manager) goes to pip, whose --platform takes any tag; asking for uv then says why not."""
    from poncho_wq.engines.pip import installer_command, target_options
    from poncho_wq.errors import BuildError

    tool, cmd = installer_command(sys.executable, target=parse_target("manylinux_2_17_ppc64le"))
    assert tool == "pip" and "manylinux2014_ppc64le" in target_options("pip", parse_target("manylinux_2_17_ppc64le"))
    assert installer_command(sys.executable, target=parse_target("manylinux_2_17_x86_64"))[0] == "uv"
    with pytest.raises(BuildError, match="uv cannot select wheels for manylinux_2_17_s390x"):
        installer_command(sys.executable, use_uv=True, target=parse_target("manylinux_2_17_s390x"))


# --- a wheel whose tag lies about its glibc ------------------------------------------------------------------------

# arc4random is new in glibc 2.36 (this machine's): the extension needs GLIBC_2.36 whatever its wheel tag says.
_LYING_C = r"""
#include <Python.h>
#include <stdlib.h>
static PyObject *draw(PyObject *self, PyObject *args) { return PyLong_FromUnsignedLong(arc4random()); }
static PyMethodDef methods[] = {{"draw", draw, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lie", NULL, -1, methods};
PyMODINIT_FUNC PyInit__lie(void) { return PyModule_Create(&module); }
"""


def _glibc():
    import platform

    return tuple(int(x) for x in platform.libc_ver()[1].split("."))


def lying_wheel(directory):
    """A real wheel built here (its extension compiled by this machine's gcc against its glibc) retagged
    ``manylinux_2_17_x86_64``: what a sloppy ``auditwheel``-less upload looks like."""
    import base64
    import hashlib
    import sysconfig
    import zipfile

    src = os.path.join(str(directory), "lie.c")
    with open(src, "w") as f:
        f.write(_LYING_C)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    so = os.path.join(str(directory), "_lie" + suffix)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-I", sysconfig.get_paths()["include"], src, "-o", so],
                   check=True, capture_output=True)
    tag = "cp{0}{1}-cp{0}{1}-manylinux_2_17_x86_64".format(*sys.version_info[:2])
    with open(so, "rb") as f:
        files = {"lie/__init__.py": b"from ._lie import draw\n", "lie/_lie" + suffix: f.read(),
                 "lie-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: lie\nVersion: 1.0\n",
                 "lie-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {}\n"
                 .format(tag).encode()}
    record = ["{},sha256={},{}".format(p, base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode(),
                                       len(b)) for p, b in files.items()] + ["lie-1.0.dist-info/RECORD,,"]
    path = os.path.join(str(directory), "lie-1.0-{}.whl".format(tag))
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("lie-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.mark.skipif(os.uname().machine != "x86_64" or _glibc() < (2, 36), reason="needs x86_64 and glibc >= 2.36")
def test_a_wheel_lying_about_its_glibc_fails_the_build_naming_the_file_and_the_distribution(tmp_path, monkeypatch):
    from poncho_wq.engines import create
    from poncho_wq.engines.interpreter import interpreter_floor
    from poncho_wq.errors import BuildError

    house = tmp_path / "wheels"
    house.mkdir()
    lying_wheel(house)
    monkeypatch.setenv("UV_FIND_LINKS", str(house))
    monkeypatch.setenv("UV_NO_INDEX", "1")
    target = "manylinux_2_{}_x86_64".format(max(35, int(interpreter_floor(sys.executable)["glibc"].split(".")[1])))
    assert parse_target(target).glibc < (2, 36), "this machine's interpreter needs glibc 2.36: nothing to lie about"
    out = tmp_path / "env.tar.gz"
    with pytest.raises(BuildError) as e:
        create({"pip": ["lie"]}, str(out), target=target, cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert "cannot run on its target " + target in msg and "needs glibc 2.36" in msg
    assert "site-packages/lie/_lie" in msg and "(distribution lie 1.0)" in msg, msg
    assert not out.exists()


@pytest.mark.skipif(os.uname().machine != "x86_64" or _glibc() < (2, 36), reason="needs x86_64 and glibc >= 2.36")
def test_the_current_engine_copying_an_extension_above_the_target_is_refused_with_its_own_fix(tmp_path):
    """--from-current-env copies the installed files, built for this machine: the built floor finds the extension,
    and the advice is the index build (which takes wheels for the target), not "pin an older version"."""
    from poncho_wq.engines import create
    from poncho_wq.engines.interpreter import interpreter_floor
    from poncho_wq.errors import BuildError

    house = tmp_path / "wheels"
    house.mkdir()
    wheel = lying_wheel(house)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    subprocess.run(["uv", "pip", "install", "--no-index", "--python", python, wheel], check=True, capture_output=True)
    target = "manylinux_2_{}_x86_64".format(max(35, int(interpreter_floor(sys.executable)["glibc"].split(".")[1])))
    with pytest.raises(BuildError) as e:
        create({"pip": ["lie"]}, str(tmp_path / "env.tar.gz"), engine="current", python=python, target=target,
               cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert "needs glibc 2.36" in msg and "(distribution lie 1.0)" in msg and "--engine portable" in msg, msg


# --- dev/debian11-root.sh ------------------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (CI runs the suite as root)")
def test_the_root_script_never_deletes_through_a_mount_left_in_a_killed_runs_directory(tmp_path):
    """A killed run leaves its temporary root with whatever was mounted in it (debootstrap mounts proc and sys and
    may bind device files). ``rm -rf --one-file-system`` goes through a bind mount of the same file system: the
    mounted source's files (the host's) were deleted. Now the leftovers are unmounted first. The run happens in a
    private mount namespace, against a local "mirror" that debootstrap rejects at once (no download, no build)."""
    cache = tmp_path / "cache"
    leftover = cache / "poncho_wq-dev" / ".tmp-debian11-root.killed" / "a dir" / "mnt"
    leftover.mkdir(parents=True)
    host = tmp_path / "host"
    host.mkdir()
    (host / "sentinel").write_text("keep\n")
    mirror = tmp_path / "mirror" / "dists" / "bullseye"
    mirror.mkdir(parents=True)
    (mirror / "Release").write_text("not a Release file\n")
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), DEBIAN11_MIRROR="file://" + str(tmp_path / "mirror"))
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount --bind "$1" "$2" && exec bash "$3"', "sh", str(host), str(leftover),
                        os.path.join(TOP, "dev", "debian11-root.sh")],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert (host / "sentinel").read_text() == "keep\n", r.stderr
    assert "removing leftover" in r.stderr and not leftover.parent.parent.exists(), r.stderr
    assert r.returncode not in (0, 75) and "debootstrap failed" in r.stderr  # the rejected mirror: a real failure
    assert [n for n in os.listdir(str(cache / "poncho_wq-dev")) if n.startswith(".tmp")] == []  # its own tmp too


@pytest.mark.skipif(os.geteuid() != 0, reason="the script needs root before it looks at the network")
def test_the_root_script_skips_with_75_only_when_the_registry_is_unreachable(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), DEBIAN11_MIRROR="http://127.0.0.1:9/debian")
    r = subprocess.run(["bash", os.path.join(TOP, "dev", "debian11-root.sh")], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 75 and "cannot be reached" in r.stderr, (r.returncode, r.stderr)
    assert not (tmp_path / "poncho_wq-dev" / "debian11-root").exists()


# --- memos ---------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the target names x86_64")
def test_the_build_memo_is_keyed_by_the_target_actually_built(tmp_path, monkeypatch):
    """create() applies $PONCHO_WQ_TARGET to a spec without a target when it builds, so an Environment made before
    the variable was set is built for it; the process-wide build memo was keyed by the spec as constructed (no
    target) and handed that target build to every later target-less environment of the same spec."""
    import poncho_wq
    from poncho_wq.engines import cache_key
    from poncho_wq.engines.interpreter import interpreter_floor
    from poncho_wq.assemble.environment import Environment

    poncho_wq.clear_caches()
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PONCHO_WQ_TARGET", raising=False)
    made_before = Environment.from_spec({"pip": []})
    target = "manylinux_2_{}_x86_64".format(interpreter_floor(sys.executable)["glibc"].split(".")[1])
    monkeypatch.setenv("PONCHO_WQ_TARGET", target)
    made_before.build()
    assert made_before.build_result.key == cache_key(dict(made_before.spec.to_dict(), target=target),
                                                     engine="portable")
    monkeypatch.delenv("PONCHO_WQ_TARGET")
    later = Environment.from_spec({"pip": []})
    later.build()
    assert later.build_result.key == cache_key(later.spec, engine="portable")  # not the target build
    poncho_wq.clear_caches()


# --- pip with a target ---------------------------------------------------------------------------------------------

def _wheel(directory, name, version, files, requires=()):
    """A py3-none-any wheel of *files* (path -> bytes) plus its metadata and RECORD."""
    import base64
    import hashlib
    import zipfile

    info = "{}-{}.dist-info/".format(name.replace("-", "_"), version)
    files = dict(files)
    files[info + "METADATA"] = ("Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version)
                                + "".join("Requires-Dist: {}\n".format(r) for r in requires)).encode()
    files[info + "WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = ["{},sha256={},{}".format(p, base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode(),
                                       len(b)) for p, b in files.items()] + [info + "RECORD,,"]
    path = os.path.join(str(directory), "{}-{}-py3-none-any.whl".format(name.replace("-", "_"), version))
    with zipfile.ZipFile(path, "w") as z:
        for p, b in files.items():
            entry = zipfile.ZipInfo(p)
            entry.external_attr = (0o100755 if "/scripts/" in p else 0o100644) << 16  # S_IFREG: pip wants it
            z.writestr(entry, b)
        z.writestr(info + "RECORD", "\n".join(record) + "\n")
    return path


def test_pip_for_a_target_lays_files_out_like_an_install_and_keeps_what_is_installed(tmp_path, monkeypatch):
    """pip took the target through ``--target site-packages``: a wheel's .data files (share/, headers) stayed in
    site-packages with RECORD paths outside it, a dependency already installed (a conda spec's, here one installed
    before) was installed again over it, leaving two dist-infos for one package, and a namespace package's directory
    was replaced by the new portion (``--upgrade`` removes an existing top-level directory), losing the others."""
    from poncho_wq.engines.pip import pip_install

    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        pytest.fail("pip is missing from the test interpreter")
    house = tmp_path / "wheels"
    house.mkdir()
    _wheel(house, "dep", "1.0", {"dep/__init__.py": b"V = '1.0'\n"})
    _wheel(house, "dep", "2.0", {"dep/__init__.py": b"V = '2.0'\n"})
    _wheel(house, "ns-a", "1.0", {"ns/a.py": b"A = 1\n"})  # two portions of the namespace package ns
    _wheel(house, "ns-b", "1.0", {"ns/b.py": b"B = 2\n"})
    _wheel(house, "dd", "1.0", {"dd/__init__.py": b"import dep\ndef main():\n    print('ep', dep.V)\n",
                                "dd-1.0.data/data/share/dd/hello.txt": b"hello\n",
                                "dd-1.0.data/headers/dd.h": b"/* dd */\n",
                                "dd-1.0.data/scripts/dd-raw": b"#!python\nimport dd, dep\nprint('raw', dep.V)\n",
                                "dd-1.0.dist-info/entry_points.txt": b"[console_scripts]\ndd-ep = dd:main\n"},
           requires=["dep", "ns-b"])
    for var, value in (("PIP_FIND_LINKS", str(house)), ("PIP_NO_INDEX", "1"), ("UV_FIND_LINKS", str(house)),
                       ("UV_NO_INDEX", "1")):
        monkeypatch.setenv(var, value)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip_install(python, ["dep==1.0", "ns-a"], use_uv=True)  # what the environment has (conda's, in a conda spec)
    pip_install(python, ["dd"], use_uv=False, target="manylinux_2_17_{}".format(os.uname().machine))
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert sorted(n for n in os.listdir(site) if n.startswith("dep")) == ["dep", "dep-1.0.dist-info"]
    assert subprocess.run([python, "-c", "from ns import a, b"]).returncode == 0  # ns/ was replaced, a lost
    assert (venv / "share" / "dd" / "hello.txt").read_text() == "hello\n"
    assert not os.path.exists(os.path.join(site, "share")) and not os.path.exists(os.path.join(site, "include"))
    for script, says in (("dd-ep", "ep 1.0\n"), ("dd-raw", "raw 1.0\n")):
        r = subprocess.run([str(venv / "bin" / script)], capture_output=True, text=True)
        assert r.stdout == says, (script, r.stderr)
    missing = subprocess.run([python, "-c", "import importlib.metadata as m, os; print([str(f) for f in "
                              "m.distribution('dd').files if not os.path.exists(f.locate())])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert missing == "[]"  # RECORD names where the files are


def test_pip_takes_the_tags_of_this_machines_glibc_when_the_target_is_newer():
    """pip's install step refuses a wheel this machine cannot run; wheels for an older glibc run on the target."""
    from poncho_wq.engines.pip import target_options

    here = _glibc()
    options = target_options("pip", parse_target("manylinux_2_{}_x86_64".format(here[1] + 20)))
    assert options[options.index("--platform") + 1] == "manylinux_2_{}_x86_64".format(here[1])


def test_a_requirements_file_takes_a_target_like_a_spec(tmp_path):
    """Environment.from_spec and from_script took target=, from_requirements did not (only $PONCHO_WQ_TARGET)."""
    from poncho_wq.assemble.environment import Environment

    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.16.0\n")
    env = Environment.from_requirements(str(reqs), target="manylinux2014_amd64")
    assert env.spec.target == "manylinux_2_17_x86_64" and list(env.spec.pip) == ["six==1.16.0"]
