"""Build targets (issue 19): parsing a manylinux tag, what it asks of uv/pip and conda, refusing an interpreter
that cannot run there, and cross-solving a conda spec for aarch64 from a local channel (no network, no emulation).

The wheels and conda packages are made here; their ELF files are this machine's binaries with the architecture
field and the GLIBC version strings rewritten (what the floor reader looks at), so the floors are known exactly.

The last section holds the regressions of the review of issue 19 (each failed before its fix; marked e2e, they
build real wheels or run uv, pip and dev/debian11-root.sh): architecture names people type, the messages for tags
that are not manylinux, the installer chosen for a target uv cannot name, the floor check against a wheel whose tag
lies about its glibc (a real extension compiled here, retagged manylinux2014), the process-wide build memo of an
Environment when ``PONCHO_WQ_TARGET`` changes, and dev/debian11-root.sh removing a killed run's leftovers without
deleting through a bind mount.
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile

import pytest

from helpers.condachannel import make_channel, make_python_standin, index_channel
from helpers.paths import REPO as TOP, link_interpreter_bases
from poncho_wq.engines import build_prefix, cache_key, create
from poncho_wq.engines.pip import installer_command, pip_install, target_options
from poncho_wq.assemble.environment import Environment
from poncho_wq.errors import BuildError, SpecError
from poncho_wq.archive.floor import prefix_floor
from poncho_wq.spec import parse_spec
from poncho_wq.target import floor_problem, parse_target


def fake_elf(machine_code, glibc_minor):
    """A copy of this interpreter's executable claiming ELF machine *machine_code* and requiring at most
    ``GLIBC_2.<glibc_minor>`` (every higher ``GLIBC_2.NN`` string rewritten; same length, so offsets hold)."""
    with open(os.path.realpath(sys.executable), "rb") as f:
        data = bytearray(f.read())
    data[18:20] = machine_code.to_bytes(2, "little")
    want = "GLIBC_2.{}".format(glibc_minor).encode()

    def lower(m):
        return want if int(m.group(1)) > glibc_minor else m.group(0)

    return re.sub(rb"GLIBC_2\.(\d\d)(?=\0)", lower, bytes(data))


# --- parsing -------------------------------------------------------------------------------------------------

def test_target_names_map_to_installer_options_and_conda_subdirs():
    t = parse_target("manylinux_2_28_x86_64")
    assert (t.glibc, t.machine, t.subdir, t.tag) == ((2, 28), "x86_64", "linux-64", "manylinux_2_28_x86_64")
    assert t.uv_platform() == "x86_64-manylinux_2_28"
    # uv names 2.17, 2.28, 2.31...: a 2.30 worker gets the 2.28 wheels; pip gets every tag the target can run
    t30 = parse_target("manylinux_2_30_aarch64")
    assert t30.uv_platform() == "aarch64-manylinux_2_28" and t30.subdir == "linux-aarch64"
    assert t30.pip_platforms()[:3] == ["manylinux_2_30_aarch64", "manylinux_2_29_aarch64", "manylinux_2_28_aarch64"]
    assert "manylinux2014_aarch64" in t30.pip_platforms() and "manylinux1_aarch64" in t30.pip_platforms()
    assert parse_target("manylinux2014_aarch64").tag == "manylinux_2_17_aarch64"
    assert parse_target(" Manylinux_2_31_X86_64 ").tag == "manylinux_2_31_x86_64"
    with pytest.raises(SpecError, match="manylinux2014"):
        parse_target("manylinux_2_12_x86_64").uv_platform()


@pytest.mark.parametrize("bad, says", [("linux_x86_64", "manylinux platform tag"),
                                       ("musllinux_1_2_x86_64", "musllinux"),
                                       ("manylinux_2_28_sparc64", "architecture 'sparc64'"),
                                       ("manylinux_3_1_x86_64", "glibc 3.1"), (28, "not valid")])
def test_bad_targets_name_the_field_and_the_expected_form(bad, says):
    with pytest.raises(SpecError) as e:
        parse_spec({"pip": ["six"], "target": bad})
    assert "spec field target" in str(e.value) and says in str(e.value)


def test_the_target_is_part_of_the_spec_and_of_the_cache_key():
    spec = parse_spec({"pip": ["six"], "target": "manylinux2014_x86_64"})
    assert spec.target == "manylinux_2_17_x86_64" and spec.to_dict()["target"] == "manylinux_2_17_x86_64"
    plain = parse_spec({"pip": ["six"]})
    assert spec.digest() != plain.digest()
    # the API's target= overrides the spec's, and so does the key
    env = Environment.from_spec({"pip": ["six"]}, target="manylinux_2_28_x86_64")
    assert env.spec.target == "manylinux_2_28_x86_64"
    assert env.spec.digest() not in (spec.digest(), plain.digest())
    with pytest.raises(SpecError, match="prebuilt tarball"):
        Environment(tarball=sys.executable, target="manylinux_2_28_x86_64")


def test_from_script_takes_a_target(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import json\n")
    env = Environment.from_script(str(script), source="index", target="manylinux2014_x86_64")
    assert env.spec.target == "manylinux_2_17_x86_64"
    assert Environment.from_script(str(script), source="index").spec.target is None  # another memo entry


def test_floor_problems_name_what_is_needed():
    t = parse_target("manylinux_2_28_x86_64")
    assert floor_problem({"machine": "x86_64", "libc": "glibc", "glibc": "2.28"}, t) is None
    assert floor_problem({"machine": None, "libc": None, "glibc": None}, t) is None  # pure data
    assert "needs glibc 2.35 (bin/x), the target has 2.28" in floor_problem(
        {"machine": "x86_64", "libc": "glibc", "glibc": "2.35", "glibc_by": "bin/x"}, t)
    assert "built for aarch64" in floor_problem({"machine": "aarch64", "glibc": "2.17"}, t)


# --- (a) wheels for the target ---------------------------------------------------------------------------------

def _wheel(directory, name, version, tag):
    """A minimal wheel ``<name>-<version>-py3-none-<tag>.whl`` with ``<name>/__init__.py`` (VERSION = version) and
    a console script ``<name>-version`` printing it."""
    files = {"{}/__init__.py".format(name): "VERSION = {!r}\n\ndef main():\n    print(VERSION)\n".format(version),
             "{}-{}.dist-info/entry_points.txt".format(name, version):
                 "[console_scripts]\n{}-version = {}:main\n".format(name, name),
             "{}-{}.dist-info/METADATA".format(name, version):
                 "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version),
             "{}-{}.dist-info/WHEEL".format(name, version):
                 "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-{}\n".format(tag)}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append("{},sha256={},{}".format(path, digest, len(text.encode())))
    record.append("{}-{}.dist-info/RECORD,,".format(name, version))
    path = os.path.join(str(directory), "{}-{}-py3-none-{}.whl".format(name, version, tag))
    with zipfile.ZipFile(path, "w") as z:
        for name_, text in files.items():
            z.writestr(name_, text)
        z.writestr("{}-{}.dist-info/RECORD".format(name, version), "\n".join(record) + "\n")
    return path


@pytest.fixture
def wheelhouse(tmp_path, monkeypatch):
    """A local index (find-links, no PyPI): tagpick 2.0 only for glibc 2.34, tagpick 1.0 for manylinux2014."""
    house = tmp_path / "wheels"
    house.mkdir()
    _wheel(house, "tagpick", "2.0", "manylinux_2_34_x86_64")
    _wheel(house, "tagpick", "1.0", "manylinux_2_17_x86_64")
    monkeypatch.setenv("UV_FIND_LINKS", str(house))
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return house


def _venv(tmp_path, name):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / name)], check=True)
    return str(tmp_path / name / "bin" / "python")


def _installed_version(python):
    return subprocess.run([python, "-c", "import tagpick; print(tagpick.VERSION)"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the wheels are tagged x86_64")
@pytest.mark.parametrize("use_uv", [pytest.param(True, id="uv"),
                                    pytest.param(False, id="pip", marks=pytest.mark.e2e)])  # pip: 14 s
def test_a_target_takes_only_wheels_it_can_run(tmp_path, wheelhouse, use_uv):
    if not use_uv and subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        pytest.fail("pip is missing from the test interpreter")
    here = _venv(tmp_path, "here")
    pip_install(here, ["tagpick"], use_uv=use_uv)
    assert _installed_version(here) == "2.0"  # this machine (glibc >= 2.34) takes the newest
    old = _venv(tmp_path, "old")
    pip_install(old, ["tagpick"], use_uv=use_uv, target="manylinux_2_28_x86_64")
    assert _installed_version(old) == "1.0"
    # console scripts next to the interpreter (pip --target alone would leave them in site-packages/bin)
    script = os.path.join(os.path.dirname(old), "tagpick-version")
    assert subprocess.run([script], capture_output=True, text=True, check=True).stdout == "1.0\n"
    with pytest.raises(BuildError) as e:
        pip_install(_venv(tmp_path, "none"), ["tagpick==2.0"], use_uv=use_uv, target="manylinux_2_28_x86_64")
    assert "only wheels for it" in str(e.value) and "manylinux_2_28_x86_64" in str(e.value)


def test_installer_options_for_a_target(tmp_path):
    tool, cmd = installer_command(sys.executable, use_uv=True, target=parse_target("manylinux_2_31_x86_64"))
    assert tool == "uv" and cmd[cmd.index("--python-platform") + 1] == "x86_64-manylinux_2_31"
    assert cmd[cmd.index("--only-binary") + 1] == ":all:"
    tool, cmd = installer_command(sys.executable, use_uv=False, target=parse_target("manylinux_2_31_x86_64"))
    assert tool == "pip" and "install" in cmd and "--target" not in cmd  # an ordinary install, after a download
    assert "manylinux2014_x86_64" in target_options("pip", parse_target("manylinux_2_31_x86_64"))


# --- (b) an interpreter above the target is refused, with the fix ---------------------------------------------

def test_an_interpreter_above_the_target_is_refused_before_anything_is_built(tmp_path):
    from poncho_wq.engines.interpreter import interpreter_floor

    floor = interpreter_floor(sys.executable)
    assert floor["machine"] == os.uname().machine and floor["glibc"]
    minor = int(floor["glibc"].split(".")[1])
    target = "manylinux_2_{}_{}".format(minor - 1, os.uname().machine)
    out = tmp_path / "env.tar.gz"
    with pytest.raises(SpecError) as e:
        create({"pip": ["six"]}, str(out), target=target, cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert "needs glibc {}".format(floor["glibc"]) in msg and floor["glibc_by"] in msg
    assert "--engine conda" in msg and "--python PATH" in msg
    assert not out.exists() and not (tmp_path / "cache" / "envs").exists()
    # the current engine copies the same interpreter
    with pytest.raises(SpecError, match="the current engine ships the interpreter"):
        create({"pip": ["pytest"]}, str(out), engine="current", target=target, cache_dir=str(tmp_path / "cache"))
    # the architecture too
    with pytest.raises(SpecError, match="built for {}, the target is aarch64".format(os.uname().machine)):
        create({"pip": ["six"]}, str(out), target="manylinux_2_40_aarch64", cache_dir=str(tmp_path / "cache"))


def test_the_cli_takes_target(tmp_path, cli):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pip": ["six"]}))
    r = cli("poncho_package_create", "--target", "manylinux_2_17_{}".format(os.uname().machine), str(spec),
            str(tmp_path / "env.tar.gz"), "--cache-dir", str(tmp_path / "cache"))
    assert r.returncode == 1 and "--engine conda" in r.stderr and "needs glibc" in r.stderr
    r = cli("poncho_package_create", "--target", "win_amd64", str(spec), str(tmp_path / "env.tar.gz"))
    assert r.returncode == 1 and "target: 'win_amd64' is not valid" in r.stderr
    assert not (tmp_path / "env.tar.gz").exists()


# --- (c) conda: solved for the target's subdir and glibc -------------------------------------------------------

@pytest.fixture
def channel(tmp_path, monkeypatch):
    """greet for linux-aarch64 (a new build for glibc 2.34, an old one for 2.17) and for linux-64 alike; sloppy
    needs glibc 2.34 without saying so (no ``__glibc`` dependency)."""
    monkeypatch.setenv("PONCHO_CONDA_EXE", "rattler")
    monkeypatch.setenv("PONCHO_CONDA_PKGS_DIR", str(tmp_path / "pkgs"))
    packages = []
    for subdir, code in (("linux-aarch64", 183), ("linux-64", 62)):
        for build, minor, number in (("new", 34, 1), ("old", 17, 0)):
            packages.append(dict(name="greet", version="1.0", build=build, build_number=number, subdir=subdir,
                                 depends=["__glibc >=2.{}".format(minor)],
                                 files={"bin/greet": fake_elf(code, minor), "share/greet/build": build}))
        packages.append(dict(name="sloppy", version="1.0", subdir=subdir, files={"bin/sloppy": fake_elf(code, 34)}))
    return make_channel(tmp_path / "channel", packages)


def _build(tmp_path, channel, target, name):
    spec = {"conda": {"channels": [channel], "packages": ["greet"]}, "target": target}
    prefix = tmp_path / name
    floor = build_prefix(spec, str(prefix), engine="conda")
    return prefix, floor


def test_conda_specs_are_solved_for_the_target_glibc(tmp_path, channel):
    prefix, floor = _build(tmp_path, channel, None, "here")
    assert (prefix / "share/greet/build").read_text() == "new"  # this machine has glibc >= 2.34
    prefix, floor = _build(tmp_path, channel, "manylinux_2_28_{}".format(os.uname().machine), "old")
    assert (prefix / "share/greet/build").read_text() == "old"
    assert floor["glibc"] == "2.17" and floor["machine"] == os.uname().machine
    assert json.loads((prefix / "poncho/floor.json").read_text())["glibc"] == "2.17"


@pytest.mark.skipif(os.uname().machine == "aarch64", reason="cross-building needs another architecture")
def test_a_conda_spec_is_cross_built_for_aarch64_and_packed(tmp_path, channel):
    out = tmp_path / "env.tar.gz"
    spec = {"conda": {"channels": [channel], "packages": ["greet"]}}
    result = create(spec, str(out), target="manylinux_2_28_aarch64", cache_dir=str(tmp_path / "cache"))
    assert result.floor["machine"] == "aarch64" and result.floor["glibc"] == "2.17"
    import tarfile

    with tarfile.open(str(out)) as tar:
        names = tar.getnames()
        assert json.loads(tar.extractfile("poncho/floor.json").read())["machine"] == "aarch64"
        assert tar.extractfile("share/greet/build").read() == b"old"
    assert "bin/greet" in names
    # the target is in the key: the same spec for this machine is another entry
    assert result.key != cache_key(spec, engine="conda")
    # a pip section would need the aarch64 python to run here
    with pytest.raises(SpecError, match="cannot be installed for the target manylinux_2_28_aarch64"):
        create(dict(spec, pip=["six"]), str(out), target="manylinux_2_28_aarch64", cache_dir=str(tmp_path / "cache"))


def test_a_floor_above_the_target_fails_the_build(tmp_path, channel):
    """A package that does not declare its glibc (sloppy metadata, common in wheels) is found out by the floor of
    the files: the build fails naming the file instead of producing a tarball that dies on the worker."""
    spec = {"conda": {"channels": [channel], "packages": ["sloppy"]}}
    target = "manylinux_2_28_{}".format(os.uname().machine)
    with pytest.raises(BuildError) as e:
        create(spec, str(tmp_path / "env.tar.gz"), target=target, cache_dir=str(tmp_path / "cache"))
    assert "cannot run on its target {}".format(target) in str(e.value)
    assert "needs glibc 2.34 (bin/sloppy), the target has 2.28" in str(e.value)
    assert not (tmp_path / "env.tar.gz").exists()
    # a target at its floor is fine
    floor = build_prefix(spec, str(tmp_path / "ok"), engine="conda", target=target.replace("2_28", "2_34"))
    assert floor["glibc"] == "2.34" and prefix_floor(str(tmp_path / "ok"))["glibc_by"] == "bin/sloppy"


def test_poncho_wq_target_is_the_default_target(tmp_path, monkeypatch):
    monkeypatch.setenv("PONCHO_WQ_TARGET", "manylinux2014_x86_64")
    assert Environment.from_spec({"pip": ["six"]}).spec.target == "manylinux_2_17_x86_64"
    # the spec's own target, and target=, come first
    assert Environment.from_spec({"pip": ["six"], "target": "manylinux_2_28_x86_64"}).spec.target == \
        "manylinux_2_28_x86_64"
    assert Environment.from_spec({"pip": ["six"]}, target="manylinux_2_31_x86_64").spec.target == \
        "manylinux_2_31_x86_64"
    # and it reaches the CLI's builds: this machine's interpreter is refused for glibc 2.17
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pip": ["six"]}))
    with pytest.raises(SpecError, match="target manylinux_2_17_x86_64: the portable engine ships"):
        create(str(spec), str(tmp_path / "env.tar.gz"), cache_dir=str(tmp_path / "cache"))
    monkeypatch.setenv("PONCHO_WQ_TARGET", "rhel8")
    with pytest.raises(SpecError, match="PONCHO_WQ_TARGET: 'rhel8' is not valid"):
        Environment.from_spec({"pip": ["six"]})


def test_environment_yml_specs_take_a_target_and_external_conda_tools_get_it():
    from poncho_wq.engines.conda import tool_command

    spec = parse_spec({"channels": ["conda-forge"], "dependencies": ["python=3.11"],
                       "target": "manylinux2014_aarch64"})
    assert spec.target == "manylinux_2_17_aarch64"
    cmd = tool_command("/opt/bin/micromamba", spec, "/tmp/prefix")
    assert cmd[cmd.index("--platform") + 1] == "linux-aarch64"
    plain = parse_spec({"conda": ["conda-forge::python=3.11"]})
    assert "--platform" not in tool_command("/opt/bin/micromamba", plain, "/p")


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the wheels are tagged x86_64")
def test_a_conda_specs_pip_section_takes_wheels_for_the_target(tmp_path, channel, wheelhouse):
    """The conda engine's pip step gets the target too (the python here is the channel helper's stand-in: a venv
    of the test interpreter)."""
    from poncho_wq.engines.conda import build_conda_prefix

    make_python_standin(tmp_path / "channel")
    index_channel(tmp_path / "channel")
    spec = parse_spec({"conda": {"channels": [channel], "packages": ["python"]}, "pip": ["tagpick"],
                       "target": "manylinux_2_28_x86_64"})
    build_conda_prefix(spec, str(tmp_path / "prefix"))
    assert _installed_version(str(tmp_path / "prefix" / "bin" / "python")) == "1.0"


# =========================================================== review of issue 19: each failed before its fix (all e2e)

# --- parsing ---------------------------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("typed, tag", [("manylinux_2_28_amd64", "manylinux_2_28_x86_64"),
                                        ("manylinux_2_17_ARM64", "manylinux_2_17_aarch64"),
                                        ("manylinux2014_amd64", "manylinux_2_17_x86_64")])
def test_architecture_names_people_type_are_accepted(typed, tag):
    assert parse_target(typed).tag == tag


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_a_newer_glibc_than_uv_knows_is_served_by_the_newest_it_knows():
    t = parse_target("manylinux_2_99_x86_64")
    assert t.uv_platform() == "x86_64-manylinux_2_40" and t.pip_platforms()[0] == "manylinux_2_99_x86_64"


@pytest.mark.e2e
def test_the_floor_of_a_32_bit_arm_build_matches_an_armv7l_target():
    """ELF says "arm" (EM_ARM) for what uname -m and manylinux call armv7l."""
    assert floor_problem({"machine": "arm", "libc": "glibc", "glibc": "2.17"}, parse_target("manylinux_2_17_armv7l")) \
        is None
    assert "built for arm" in floor_problem({"machine": "arm", "glibc": "2.17"}, parse_target("manylinux_2_17_x86_64"))


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
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

@pytest.mark.e2e
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


@pytest.mark.e2e
@pytest.mark.skipif(os.geteuid() != 0, reason="the script needs root before it looks at the network")
def test_the_root_script_skips_with_75_only_when_the_registry_is_unreachable(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), DEBIAN11_MIRROR="http://127.0.0.1:9/debian")
    r = subprocess.run(["bash", os.path.join(TOP, "dev", "debian11-root.sh")], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 75 and "cannot be reached" in r.stderr, (r.returncode, r.stderr)
    assert not (tmp_path / "poncho_wq-dev" / "debian11-root").exists()


# --- memos ---------------------------------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the target names x86_64")
def test_the_build_memo_is_keyed_by_the_target_actually_built(tmp_path, monkeypatch, prepared_cache):
    """create() applies $PONCHO_WQ_TARGET to a spec without a target when it builds, so an Environment made before
    the variable was set is built for it; the process-wide build memo was keyed by the spec as constructed (no
    target) and handed that target build to every later target-less environment of the same spec."""
    import poncho_wq
    from poncho_wq.engines import cache_key
    from poncho_wq.engines.interpreter import interpreter_floor
    from poncho_wq.assemble.environment import Environment

    poncho_wq.clear_caches()
    # the prepared interpreter base (tests/helpers/paths.py): what is checked is which key each build got
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(link_interpreter_bases(prepared_cache, tmp_path / "cache")))
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

def _files_wheel(directory, name, version, files, requires=()):
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


@pytest.mark.e2e
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
    _files_wheel(house, "dep", "1.0", {"dep/__init__.py": b"V = '1.0'\n"})
    _files_wheel(house, "dep", "2.0", {"dep/__init__.py": b"V = '2.0'\n"})
    _files_wheel(house, "ns-a", "1.0", {"ns/a.py": b"A = 1\n"})  # two portions of the namespace package ns
    _files_wheel(house, "ns-b", "1.0", {"ns/b.py": b"B = 2\n"})
    _files_wheel(house, "dd", "1.0", {"dd/__init__.py": b"import dep\ndef main():\n    print('ep', dep.V)\n",
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


@pytest.mark.e2e
def test_pip_takes_the_tags_of_this_machines_glibc_when_the_target_is_newer():
    """pip's install step refuses a wheel this machine cannot run; wheels for an older glibc run on the target."""
    from poncho_wq.engines.pip import target_options

    here = _glibc()
    options = target_options("pip", parse_target("manylinux_2_{}_x86_64".format(here[1] + 20)))
    assert options[options.index("--platform") + 1] == "manylinux_2_{}_x86_64".format(here[1])


@pytest.mark.e2e
def test_a_requirements_file_takes_a_target_like_a_spec(tmp_path):
    """Environment.from_spec and from_script took target=, from_requirements did not (only $PONCHO_WQ_TARGET)."""
    from poncho_wq.assemble.environment import Environment

    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.16.0\n")
    env = Environment.from_requirements(str(reqs), target="manylinux2014_amd64")
    assert env.spec.target == "manylinux_2_17_x86_64" and list(env.spec.pip) == ["six==1.16.0"]
