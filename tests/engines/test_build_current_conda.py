"""The current engine inside a real conda prefix (py-rattler install from a local channel, tests/helpers/condachannel.py):
conda packages pruned over conda-meta ``depends``, pip-installed PyPI distributions on top, built *inside* the
prefix's python with no network, unpacked elsewhere by the real run shim and run relocated.

The channel: the ``python`` stand-in (a venv of the test interpreter: the shipped env needs that interpreter at
its path, fine on this machine), ``libgreet`` (``bin/hello``, an sh script with the placeholder prefix: needs
relocation), ``greetpy`` (noarch: python, depends on libgreet, a module, a ``.dist-info`` and an entry point) and
``unrelated``. pip then installs ``six`` and ``tabulate`` from PyPI, plus what the build itself imports
(poncho_wq editable, its dependencies): none of that but six may ship.
"""

import hashlib
import json
import os
import subprocess
import sys
import tarfile

import pytest

from helpers.condachannel import PLACEHOLDER, install_prefix, make_channel, make_python_standin
from helpers.cli import script
from helpers.paths import REPO
from test_build_current import _no_net_prefix, _offline_env, _run

PY = "python{}.{}".format(*sys.version_info[:2])
SITE = "lib/{}/site-packages".format(PY)
#: What `python -m poncho_wq create` imports in the prefix (never shipped unless the spec names them).
BUILD_DEPS = ["packaging", "conda-pack", "filelock", "stdlib-list", "patchelf", "requests", "py-rattler"]
HELLO = """#!/bin/sh
prefix="{}"
echo "hello from $prefix"
cat "$prefix/share/greet/message.txt"
""".format(PLACEHOLDER)


@pytest.fixture(scope="module")
def conda_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("current-conda")
    channel = root / "channel"
    make_python_standin(channel)
    url = make_channel(channel, [
        dict(name="libgreet", version="1.0", files={"bin/hello": HELLO, "share/greet/message.txt": "libgreet 1.0\n"},
             prefix_placeholder_files=["bin/hello"]),
        dict(name="greetpy", version="1.0", noarch="python", depends=["python", "libgreet >=1,<2"],
             files={"site-packages/greetpy/__init__.py": "def main():\n    print('greetpy main')\n",
                    "site-packages/greetpy-1.0.dist-info/METADATA":
                        "Metadata-Version: 2.1\nName: greetpy\nVersion: 1.0\n",
                    "site-packages/greetpy-1.0.dist-info/INSTALLER": "conda\n"},
             entry_points=["greet = greetpy:main"]),
        dict(name="unrelated", version="1.0", files={"share/unrelated.txt": "not shipped\n"}),
    ])
    prefix = root / "prefix"
    install_prefix(url, ["python", "greetpy", "unrelated"], str(prefix))
    py = prefix / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--disable-pip-version-check"]
    _run(pip + ["six", "tabulate"] + BUILD_DEPS, timeout=900)
    _run(pip + ["--no-deps", "-e", REPO], timeout=600)
    work = root / "work"
    work.mkdir()
    return {"root": root, "prefix": prefix, "pkgs": root / "prefix.pkgs", "python": py, "work": work, "url": url}


def _create(conda_env, spec_doc, out, *extra, env=None):
    spec = conda_env["work"] / "spec-{}.json".format(hashlib.sha256(json.dumps(spec_doc).encode()).hexdigest()[:8])
    spec.write_text(json.dumps(spec_doc))
    return subprocess.run(_no_net_prefix() + [str(conda_env["python"]), "-m", "poncho_wq", "create",
                                              "--from-current-env"] + list(extra) + [str(spec), str(out)],
                          env=env or _offline_env(conda_env["root"] / "cache"), cwd=str(conda_env["work"]),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)


def _members(path):
    with tarfile.open(str(path)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _records(members):
    return sorted(n[len("conda-meta/"):] for n in members if n.startswith("conda-meta/") and n.endswith(".json"))


@pytest.fixture(scope="module")
def built(conda_env):
    """greetpy (conda, as the analyzer pins it) + six (pip), through the cache, offline, inside the prefix."""
    spec = {"conda": {"channels": [conda_env["url"]],
                      "packages": ["{}::greetpy=1.0=0".format(conda_env["url"])]},
            "pip": ["six"]}
    out = conda_env["work"] / "env.tar.gz"
    env = _offline_env(conda_env["root"] / "cache")
    r = _create(conda_env, spec, out, env=env)
    assert r.returncode == 0, r.stderr
    return {"out": out, "spec": spec, "env": env, "stderr": r.stderr}


def test_ships_exactly_the_conda_and_pip_closure(built):
    members = _members(built["out"])
    assert _records(members) == ["greetpy-1.0-0.json", "libgreet-1.0-0.json",
                                 "python-{}-h0_standin.json".format(sys.version.split()[0])]
    assert "shipped greetpy=1.0=0 (conda), libgreet=1.0=0 (conda), python=" in built["stderr"]
    assert "six==" in built["stderr"]
    for present in ("bin/hello", "bin/greet", "share/greet/message.txt", SITE + "/greetpy/__init__.py",
                    SITE + "/greetpy-1.0.dist-info/METADATA", SITE + "/six.py", "pyvenv.cfg", "bin/" + PY):
        assert present in members, present
    assert any(n.startswith(SITE + "/six-") and n.endswith(".dist-info/RECORD") for n in members)
    tops = {n.split("/")[3] for n in members if n.startswith(SITE + "/") and n.count("/") >= 4}
    for absent in ("tabulate", "packaging", "conda_pack", "poncho_wq", "rattler", "requests", "filelock", "pip",
                   "__editable__"):
        assert not any(t == absent or t.startswith(absent + "-") or t.startswith(absent + ".")
                       or t.startswith(absent + "_") for t in tops), absent
    assert "share/unrelated.txt" not in members and "bin/tabulate" not in members
    history = members["conda-meta/history"]
    with tarfile.open(str(built["out"])) as tar:
        text = tar.extractfile(history).read().decode()
    assert "# greetpy-1.0-0" in text and "unrelated" not in text


def test_conda_files_are_byte_identical(built, conda_env):
    # Files without a prefix in them ship exactly as conda installed them (and the records unchanged but for
    # conda-pack's own clean-up of machine paths).
    with tarfile.open(str(built["out"])) as tar:
        for rel in (SITE + "/greetpy/__init__.py", SITE + "/greetpy-1.0.dist-info/METADATA",
                    "share/greet/message.txt", "pyvenv.cfg"):
            assert tar.extractfile(rel).read() == (conda_env["prefix"] / rel).read_bytes(), rel
        shipped = json.loads(tar.extractfile("conda-meta/libgreet-1.0-0.json").read())
    source = json.loads((conda_env["prefix"] / "conda-meta" / "libgreet-1.0-0.json").read_text())
    assert shipped["files"] == source["files"] and shipped["depends"] == source["depends"]
    assert shipped["paths_data"] == source["paths_data"]


def test_runs_relocated_by_the_shim_without_the_source(built, conda_env, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "env.tar.gz").write_bytes(built["out"].read_bytes())
    envs = tmp_path / "envs"
    # The source prefix and its package cache are gone while the environment runs.
    hidden = [(conda_env["prefix"], conda_env["root"] / "prefix.hidden"),
              (conda_env["pkgs"], conda_env["root"] / "pkgs.hidden")]
    for a, b in hidden:
        os.rename(str(a), str(b))
    try:
        def shim(*args):
            return subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "PONCHO_ENV_DIR={}".format(envs),
                                   script("poncho_package_run"), "-e", "env.tar.gz", "--"] + list(args),
                                  cwd=str(run_dir), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=300)

        r = shim("hello")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("hello from " + str(envs)), lines
        unpacked = lines[0][len("hello from "):]
        assert os.path.isfile(os.path.join(unpacked, "bin", "hello")) and lines[1] == "libgreet 1.0"
        r = shim("python", "-c", "import sys, greetpy, six, importlib.util as u; "
                 "print(greetpy.__file__.startswith(sys.prefix), six.__file__.startswith(sys.prefix), "
                 "u.find_spec('tabulate'), sys.prefix)")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["True", "True", "None", unpacked]
        r = shim("greet")
        assert r.returncode == 0 and r.stdout == "greetpy main\n", r.stderr
        with open(os.path.join(unpacked, "bin", "greet")) as f:
            assert str(conda_env["prefix"]) not in f.readline()
    finally:
        for a, b in hidden:
            os.rename(str(b), str(a))


def test_package_cache_cleaned_relocates_from_the_copied_files(conda_env, tmp_path):
    """With the package cache gone (``conda clean``), conda-pack cannot read the pristine files: it finds the build
    prefix the engine wrote into ``bin/hello`` and the entry point, and conda-unpack relocates from that."""
    out = tmp_path / "env.tar.gz"
    os.rename(str(conda_env["pkgs"]), str(conda_env["root"] / "pkgs.gone"))
    try:
        r = _create(conda_env, {"conda": {"channels": ["local"], "packages": ["greetpy"]}}, out, "--no-cache")
    finally:
        os.rename(str(conda_env["root"] / "pkgs.gone"), str(conda_env["pkgs"]))
    assert r.returncode == 0, r.stderr
    with tarfile.open(str(out)) as tar:
        hello = tar.extractfile("bin/hello").read().decode()
    # The build prefix (not the package's placeholder, not the source prefix) is what conda-unpack replaces.
    assert PLACEHOLDER not in hello and str(conda_env["prefix"]) not in hello and "/prefix\"" in hello
    envs = tmp_path / "envs"

    def shim(*args):
        return subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "PONCHO_ENV_DIR={}".format(envs),
                               script("poncho_package_run"), "-e", str(out), "--"] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)

    r = shim("hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hello from " + str(envs)) and r.stdout.endswith("\nlibgreet 1.0\n"), r.stdout
    r = shim("greet")
    assert r.returncode == 0 and r.stdout == "greetpy main\n", r.stderr


def test_same_inputs_twice_give_identical_bytes(built, conda_env):
    first = built["out"].read_bytes()
    cache = conda_env["root"] / "cache"
    for dirpath, _, files in os.walk(str(cache)):
        for f in files:
            if f.startswith("env-"):
                os.unlink(os.path.join(dirpath, f))
    again = conda_env["work"] / "again.tar.gz"
    r = _create(conda_env, built["spec"], again, env=built["env"])
    assert r.returncode == 0, r.stderr
    assert "cache hit" not in r.stderr
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(first).hexdigest()


def test_pip_distribution_owned_by_conda_ships_its_conda_package(conda_env, tmp_path):
    # No conda section: greetpy is named as a pip requirement, but conda installed it (its .dist-info is in the
    # greetpy record), so the conda package ships, with its depends.
    out = tmp_path / "env.tar.gz"
    r = _create(conda_env, {"pip": ["greetpy", "six"]}, out, "--no-cache")
    assert r.returncode == 0, r.stderr
    members = _members(out)
    assert [n.split("-")[0] for n in _records(members)] == ["greetpy", "libgreet", "python"]
    assert SITE + "/six.py" in members and "bin/hello" in members


@pytest.mark.parametrize("doc,words", [
    ({"conda": {"channels": ["local"], "packages": ["greetpy >=2"]}}, ["greetpy >=2", "greetpy=1.0=0"]),
    ({"conda": {"channels": ["local"], "packages": ["nosuchpkg"]}}, ["not installed in the conda environment",
                                                                     "nosuchpkg"]),
])
def test_errors_name_the_mismatch(conda_env, tmp_path, doc, words):
    out = tmp_path / "env.tar.gz"
    r = _create(conda_env, doc, out, "--no-cache")
    assert r.returncode == 3, r.stderr
    for word in words:
        assert word in r.stderr
    assert not out.exists()


def test_binary_prefix_replacement_keeps_offsets():
    from poncho_wq.engines.current import replace_prefix_binary
    from poncho_wq.errors import PonchoError

    old, new = b"/opt/source/env", b"/b/env"
    data = b"\x7fELF\0" + old + b"/lib:" + old + b"/lib64\0tail\0" + old + b"\0"
    out = replace_prefix_binary(data, old, new)
    assert len(out) == len(data)
    assert out.split(b"\0")[1] == new + b"/lib:" + new + b"/lib64"
    assert out.startswith(b"\x7fELF\0") and b"\0tail\0" in out and old not in out
    with pytest.raises(PonchoError, match="longer"):
        replace_prefix_binary(out, new, old)


def test_python_option_names_the_conda_environment(conda_env, tmp_path, cli):
    # Run by the test's interpreter (no conda-meta around it): --python points into the conda prefix.
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"conda": {"channels": ["local"], "packages": ["libgreet"]}, "pip": ["six"]}))
    out = tmp_path / "env.tar.gz"
    r = cli("poncho_package_create", "--from-current-env", "--python", conda_env["python"], "--no-cache", spec, out,
            env=_offline_env(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    members = _members(out)
    assert [n.split("-")[0] for n in _records(members)] == ["libgreet", "python"]
    assert SITE + "/six.py" in members and SITE + "/greetpy/__init__.py" not in members


def test_conda_section_outside_a_conda_environment_is_refused(tmp_path, cli):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"conda": {"channels": ["local"], "packages": ["libgreet"]}}))
    out = tmp_path / "env.tar.gz"
    r = cli("poncho_package_create", "--from-current-env", "--no-cache", spec, out,
            env=_offline_env(tmp_path / "cache"))
    assert r.returncode == 3 and "does not run in a conda environment" in r.stderr, r.stderr
    assert not out.exists()
