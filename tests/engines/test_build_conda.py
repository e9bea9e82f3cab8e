"""The conda engine on a real local channel (tests/helpers/condachannel.py): py-rattler solves and installs, conda-pack
packs, the tarball is unpacked elsewhere, relocated by bin/conda-unpack (or the run shim), and what the packages
installed runs from its new place."""

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from helpers.condachannel import PLACEHOLDER, channel_url, make_package, make_python_standin, index_channel
from helpers.cli import run_cli
from poncho_wq.engines.conda import build_conda_prefix, conda_tool, tool_command
from poncho_wq.errors import BuildError, PonchoError, SpecError
from poncho_wq.spec import parse_spec

PY = "python{}.{}".format(*sys.version_info[:2])
SP = "lib/{}/site-packages/".format(PY)
HELLO = """#!/bin/sh
prefix="{p}"
echo "hello from $prefix"
cat "$prefix/share/greet/message.txt"
""".format(p=PLACEHOLDER)
NO_TOOLS_PATH = "/usr/local/bin:/usr/bin:/bin"  # no micromamba/mamba/conda here: the embedded engine is used


@pytest.fixture(scope="module")
def channel(tmp_path_factory):
    """libgreet 1.0 and 2.0 (noarch), hello 1.0 (linux-64, needs libgreet <2; a relocated sh script and module),
    needs-new (libgreet >=2: conflicts with hello), a stand-in python and a noarch-python package."""
    ch = tmp_path_factory.mktemp("conda") / "channel"
    for v in ("1.0", "2.0"):
        make_package(ch, "libgreet", v, files={"share/greet/message.txt": "libgreet {}\n".format(v)})
    make_package(ch, "hello", "1.0", build="h0", subdir="linux-64", depends=["libgreet >=1,<2"],
                 files={"bin/hello": HELLO, SP + "hellomod/__init__.py": 'PREFIX = "{}"\n'.format(PLACEHOLDER)},
                 prefix_placeholder_files=["bin/hello", SP + "hellomod/__init__.py"])
    make_package(ch, "needs-new", "1.0", depends=["libgreet >=2"], files={"share/needs-new": "x\n"})
    make_python_standin(ch)
    make_package(ch, "pymod", "1.0", noarch="python", depends=["python"],
                 files={"site-packages/pymod/__init__.py": "def main():\n    print('pymod main')\n"},
                 entry_points=["pymod-run = pymod:main"])
    index_channel(ch)
    return str(ch)


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PATH", NO_TOOLS_PATH)
    monkeypatch.delenv("PONCHO_CONDA_EXE", raising=False)
    monkeypatch.setenv("PONCHO_CONDA_PKGS_DIR", str(tmp_path_factory.getbasetemp() / "rattler-pkgs"))


def hello_spec(channel, *packages):
    return parse_spec({"conda": {"channels": [channel], "packages": list(packages or ["hello"])}})


@pytest.fixture(scope="module")
def hello_prefix(channel, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("built") / "prefix")
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", NO_TOOLS_PATH)
    mp.delenv("PONCHO_CONDA_EXE", raising=False)
    try:
        build_conda_prefix(hello_spec(channel), prefix, None)  # channel as a local directory path
    finally:
        mp.undo()
    return prefix


def test_embedded_engine_when_no_tool_on_path(channel, tmp_path, caplog):
    assert conda_tool() is None
    caplog.set_level(logging.INFO, logger="poncho_wq")
    prefix = str(tmp_path / "prefix")
    build_conda_prefix(hello_spec(channel_url(channel)), prefix, True)  # channel as a file:// URL
    assert "embedded py-rattler" in caplog.text
    assert os.path.exists(os.path.join(prefix, "bin", "hello"))


def test_prefix_content_and_conda_meta(hello_prefix):
    prefix = hello_prefix
    with open(os.path.join(prefix, "bin", "hello")) as f:
        script = f.read()
    assert PLACEHOLDER not in script and 'prefix="{}"'.format(prefix) in script  # installer relocated it
    assert os.access(os.path.join(prefix, "bin", "hello"), os.X_OK)
    with open(os.path.join(prefix, "share", "greet", "message.txt")) as f:
        assert f.read() == "libgreet 1.0\n"  # hello's dependency constraint picked 1.0 over 2.0
    meta = os.path.join(prefix, "conda-meta")
    assert sorted(f for f in os.listdir(meta) if f.endswith(".json")) == ["hello-1.0-h0.json", "libgreet-1.0-0.json"]
    with open(os.path.join(meta, "hello-1.0-h0.json")) as f:
        record = json.load(f)
    assert record["name"] == "hello" and record["depends"] == ["libgreet >=1,<2"]
    assert sorted(record["files"]) == ["bin/hello", SP + "hellomod/__init__.py"]
    assert os.path.exists(os.path.join(meta, "history"))
    out = subprocess.run([os.path.join(prefix, "bin", "hello")], capture_output=True, text=True, check=True)
    assert out.stdout == "hello from {}\nlibgreet 1.0\n".format(prefix)


def test_pack_unpack_elsewhere_conda_unpack_and_run(channel, tmp_path):
    from poncho_wq.archive.pack import pack_prefix

    original = str(tmp_path / "build" / "prefix")
    build_conda_prefix(hello_spec(channel), original, None)
    tarball = str(tmp_path / "env.tar.gz")
    pack_prefix(original, tarball)
    shutil.rmtree(original)  # the build prefix is gone: nothing can silently use it
    env = tmp_path / "elsewhere" / "env"
    env.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(str(env))
    with open(str(env / "bin" / "hello")) as f:
        assert str(env) not in f.read()  # not relocated before conda-unpack
    # conda-unpack's shebang is "#!/usr/bin/env python"; this env has no python: run it with ours.
    subprocess.run([sys.executable, str(env / "bin" / "conda-unpack")], check=True, capture_output=True)
    out = subprocess.run([str(env / "bin" / "hello")], capture_output=True, text=True, check=True)
    assert out.stdout == "hello from {}\nlibgreet 1.0\n".format(env)
    with open(str(env / SP / "hellomod" / "__init__.py")) as f:
        assert f.read() == 'PREFIX = "{}"\n'.format(env)


@pytest.mark.parametrize("packages,blamed,words", [
    (["hello", "no-such-package"], "'no-such-package'", ["No candidates were found for no-such-package"]),
    (["hello >=5"], "'hello >=5'", ["No candidates were found for hello >=5"]),
    (["libgreet=9"], "'libgreet=9'", ["No candidates were found for libgreet 9"]),
    (["hello", "needs-new"], "'hello' 'needs-new'", ["libgreet", "needs-new"]),
], ids=["unknown-package", "no-matching-version", "no-matching-version-eq", "conflict"])
def test_unsatisfiable_spec_is_a_spec_error(channel, tmp_path, packages, blamed, words):
    """The spec validated but asks for what the channels do not have: bad input (exit 1), not a failed build."""
    with pytest.raises(SpecError) as e:
        build_conda_prefix(hello_spec(channel, *packages), str(tmp_path / "prefix"), None)
    msg = str(e.value)
    assert e.value.exit_code == 1
    assert msg.startswith("conda.packages: {} cannot be satisfied from channels ".format(blamed)), msg
    assert "SolverError" in msg and channel_url(channel) in msg
    for word in words:
        assert word in msg
    assert not os.path.exists(str(tmp_path / "prefix")) or os.listdir(str(tmp_path / "prefix")) == []


def test_pip_section_without_python_in_prefix_is_an_error(channel, tmp_path):
    spec = parse_spec({"conda": {"channels": [channel], "packages": ["hello"]}, "pip": ["six==1.16.0"]})
    with pytest.raises(PonchoError) as e:
        build_conda_prefix(spec, str(tmp_path / "prefix"), None)
    assert e.value.exit_code == 3
    assert "six==1.16.0" in str(e.value) and "no python" in str(e.value)
    assert "add python to conda.packages" in str(e.value)


def make_wheel(directory, name="localpkg", version="1.0"):
    """A minimal pure-Python wheel, so the pip section installs without any index."""
    path = os.path.join(str(directory), "{}-{}-py3-none-any.whl".format(name, version))
    dist = "{}-{}.dist-info".format(name, version)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name + "/__init__.py", "VALUE = 42\n")
        z.writestr(dist + "/METADATA", "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version))
        z.writestr(dist + "/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(dist + "/RECORD", "")
    return path


def test_pip_section_installs_into_the_prefix_python(channel, tmp_path, monkeypatch):
    """With a python package (the stand-in: a venv of the test interpreter, see condachannel) the pip section
    goes into the prefix's site-packages through the prefix's own bin/python; noarch-python entry points work."""
    wheel = make_wheel(tmp_path)
    spec = parse_spec({"conda": {"channels": [channel], "packages": ["python", "pymod"]},
                       "pip": ["localpkg @ file://" + wheel]})
    prefix = str(tmp_path / "prefix")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + NO_TOOLS_PATH)  # uv reachable
    build_conda_prefix(spec, prefix, None)
    assert os.path.exists(os.path.join(prefix, SP, "localpkg", "__init__.py"))
    out = subprocess.run([os.path.join(prefix, "bin", "python"), "-c",
                          "import localpkg, pymod, sys; print(localpkg.VALUE, sys.prefix)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["42", prefix]
    out = subprocess.run([os.path.join(prefix, "bin", "pymod-run")], capture_output=True, text=True, check=True)
    assert out.stdout == "pymod main\n"


def test_tool_selection(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("conda", "micromamba"):
        (bindir / name).write_text("#!/bin/sh\nexit 99\n")  # never run: only the PATH lookup is under test
        (bindir / name).chmod(0o755)
    environ = {"PATH": str(bindir)}
    assert conda_tool(environ) == str(bindir / "micromamba")  # preferred over conda
    assert conda_tool(dict(environ, PONCHO_CONDA_EXE="conda")) == str(bindir / "conda")
    assert conda_tool(dict(environ, PONCHO_CONDA_EXE="rattler")) is None
    with pytest.raises(PonchoError, match="PONCHO_CONDA_EXE='/nonexistent/mamba' is not an executable"):
        conda_tool(dict(environ, PONCHO_CONDA_EXE="/nonexistent/mamba"))


def test_tool_command_uses_only_spec_channels(tmp_path):
    spec = parse_spec({"conda": {"channels": ["conda-forge", str(tmp_path)], "packages": ["numpy=1.26"]}})
    assert tool_command("/x/micromamba", spec, "/p") == [
        "/x/micromamba", "create", "--yes", "--prefix", "/p", "--no-rc", "--override-channels",
        "--channel", "conda-forge", "--channel", "file://" + str(tmp_path), "numpy=1.26"]
    assert tool_command("/x/conda", spec, "/p")[:6] == ["/x/conda", "create", "--yes", "--prefix", "/p",
                                                         "--override-channels"]


def test_unreachable_named_channel_error_names_it(tmp_path):
    spec = parse_spec({"conda": {"channels": ["http://127.0.0.1:9/nochannel"], "packages": ["hello"]}})
    with pytest.raises(BuildError) as e:
        build_conda_prefix(spec, str(tmp_path / "prefix"), None)
    assert e.value.exit_code == 3 and "http://127.0.0.1:9/nochannel" in str(e.value)


# --- through the CLI: conda engine + data section, cached or not; the run shim relocates and runs ------------------

def cli_env(tmp_path):
    return {"PATH": os.path.dirname(sys.executable) + os.pathsep + NO_TOOLS_PATH,
            "PONCHO_WQ_CACHE": str(tmp_path / "cache"), "PONCHO_ENV_DIR": str(tmp_path / "envs")}


def test_create_cli_and_run_shim_end_to_end(channel, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["git", "init", "-q", str(data)], check=True)
    (data / "table.csv").write_text("a,b\n1,2\n")
    gitenv = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
                  GIT_COMMITTER_EMAIL="t@x")
    subprocess.run(["git", "-C", str(data), "add", "-A"], check=True, env=gitenv)
    subprocess.run(["git", "-C", str(data), "commit", "-q", "-m", "data"], check=True, env=gitenv)
    subprocess.run(["git", "-C", str(data), "tag", "v1"], check=True, env=gitenv)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"conda": {"channels": [channel_url(channel)], "packages": ["hello"]},
                                "git": {"TABLES": {"remote": "file://" + str(data), "tag": "v1"}}}))
    out = tmp_path / "env.tar.gz"
    proc = run_cli("poncho_package_create", spec, out, env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for phase in ("solve", "install", "git", "pack"):
        assert "poncho: {} done".format(phase) in proc.stderr
    proc = run_cli("poncho_package_run", "-e", out, "--", "sh", "-c", 'hello && cat "$TABLES/table.csv"',
                   env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("hello from " + str(tmp_path / "envs"))
    assert lines[1:] == ["libgreet 1.0", "a,b", "1,2"]


@pytest.mark.parametrize("doc,code,words", [
    ({"conda": {"channels": ["CHANNEL"], "packages": ["hello", "needs-new"]}}, 1, ["SolverError", "needs-new"]),
    ({"conda": {"channels": ["CHANNEL"], "packages": ["Bad Spec ==="]}}, 1, ["conda.packages[0]"]),
])
def test_create_cli_bad_specs_leave_no_output_and_no_cache_entry(channel, tmp_path, doc, code, words):
    doc["conda"]["channels"] = [channel]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(doc))
    out = tmp_path / "out" / "env.tar.gz"
    proc = run_cli("poncho_package_create", spec, out, env=cli_env(tmp_path))
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("poncho_package_create: error:") or "error:" in proc.stderr
    for word in words:
        assert word in proc.stderr
    assert not out.exists()
    assert not (tmp_path / "out").exists() or os.listdir(str(tmp_path / "out")) == []
    cache_entries = [f for _, _, files in os.walk(str(tmp_path / "cache")) for f in files if f.endswith(".tar.gz")]
    assert cache_entries == []


# --- a spec the solver cannot satisfy is bad input (exit 1); an unreachable channel is a build failure (3) ---------

def test_unsatisfiable_spec_through_the_cli_exits_1_and_a_missing_channel_3(channel, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"conda": {"channels": [channel], "packages": ["nosuchpkg"]}}))
    proc = run_cli("poncho_package_create", spec, tmp_path / "env.tar.gz", env=cli_env(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert "poncho_package_create: error: conda.packages: 'nosuchpkg' cannot be satisfied" in proc.stderr
    spec.write_text(json.dumps({"conda": {"channels": [str(tmp_path / "no-such-channel")], "packages": ["hello"]}}))
    proc = run_cli("poncho_package_create", spec, tmp_path / "env.tar.gz", env=cli_env(tmp_path))
    assert proc.returncode == 3, proc.stderr
    assert "no-such-channel" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "env.tar.gz").exists()
