"""Build targets (issue 19): parsing a manylinux tag, what it asks of uv/pip and conda, refusing an interpreter
that cannot run there, and cross-solving a conda spec for aarch64 from a local channel (no network, no emulation).

The wheels and conda packages are made here; their ELF files are this machine's binaries with the architecture
field and the GLIBC version strings rewritten (what the floor reader looks at), so the floors are known exactly.
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
