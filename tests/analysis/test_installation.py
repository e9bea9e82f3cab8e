"""The installation model (poncho_wq.analysis.installation) on real layouts, each built for real in a temp dir.

On every layout the analyzer and the current engine must agree: the analysis of a script importing the layout's
package (run for that interpreter or prefix) names a distribution and version, and a ``--from-current-env`` build
for the same interpreter ships that very distribution: its ``.dist-info`` at that version and the files of its
installed ``RECORD`` (or, inside conda, its conda record and the record's files).

Layouts: a venv; a ``--system-site-packages`` venv over the base interpreter (PyYAML and python-dateutil from the
base: the issue-12 case, also through ``python -m poncho_wq analyze`` run inside the venv); the user site
through ``PYTHONUSERBASE``; a ``PYTHONPATH`` directory; Debian's ``/usr/bin/python3`` with ``dist-packages``
(``python3-yaml``); a conda prefix installed by py-rattler from a local channel; an editable install; a
``pip install ./dir`` install. Packages come from PyPI through uv (its cache makes reruns fast); the venvs are
made by ``python -m venv`` of the base interpreter.
"""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from helpers.condachannel import install_prefix, make_channel, make_python_standin
from helpers.cli import run_cli, run_ok as _run
from helpers.venvs import tools_last

from poncho_wq.analysis.analyzer import analyze
from poncho_wq.analysis.condameta import conda_meta_owners, conda_records
from poncho_wq.analysis.installation import clear_cache, installation

#: The interpreter venvs are made from (a venv of a venv is not a thing: its base is the real installation).
BASE = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
DEBIAN = "/usr/bin/python3"


def _other(python):
    """A spelling of *python* that is not this process's ``sys.executable``: installation() then runs it (with
    this process's environment variables) instead of answering from the running interpreter's sys.path."""
    for cand in (python, os.path.join(os.path.dirname(python), "python3"), os.path.join(os.path.dirname(python),
                                                                                        "python")):
        if os.path.exists(cand) and os.path.abspath(cand) != os.path.abspath(sys.executable):
            return cand
    raise AssertionError("no other spelling of " + python)


def _uv(python, *args, env=None):
    _run([sys.executable, "-m", "uv", "pip", "install", "-q", "--python", python] + list(args), env=env)


def _venv(path, system_site=False):
    _run([BASE, "-m", "venv", "--without-pip"] + (["--system-site-packages"] if system_site else []) + [path])
    return os.path.join(str(path), "bin", "python")


def _project(root, name, version="0.1"):
    """A one-package setuptools project (``name/__init__.py``) at *root*/*name*-src."""
    proj = os.path.join(str(root), name + "-src")
    os.makedirs(os.path.join(proj, name))
    with open(os.path.join(proj, "pyproject.toml"), "w") as f:
        f.write('[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
                '[project]\nname = "{}"\nversion = "{}"\n\n[tool.setuptools]\npackages = ["{}"]\n'.format(
                    name, version, name))
    with open(os.path.join(proj, name, "__init__.py"), "w") as f:
        f.write("VALUE = {!r}\n".format(name))
    return proj


def _env(tmp, **extra):
    """The environment of a command run by another interpreter: its own layout first, then (last, see
    :func:`helpers.venvs.tools_last`) poncho_wq and its dependencies; *extra* (``PYTHONPATH`` among them) added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PONCHO_WQ_", "PYTHONUSERBASE", "PYTHONPATH",
                                                                    "VIRTUAL_ENV"))}
    env["PONCHO_WQ_CACHE"] = str(os.path.join(str(tmp), "cache"))
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), tools_last(tmp)) if p)
    return env


def _script(tmp, text):
    path = os.path.join(str(tmp), "job.py")
    with open(path, "w") as f:
        f.write(text)
    return path


def _cli_analyze(python, script, env):
    """``poncho_package_analyze`` as run by *python* itself (``python -m poncho_wq analyze``): the spec."""
    r = _run([python, "-m", "poncho_wq", "analyze", script, "-"], env=env, cwd=os.path.dirname(script))
    return json.loads(r.stdout)


def _cli_build(tmp, spec, python, env):
    """``poncho_package_create --from-current-env --python PY`` of *spec*: (tarball members, stderr)."""
    spec_path = os.path.join(str(tmp), "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    out = os.path.join(str(tmp), "env.tar.gz")
    r = run_cli("poncho_package_create", "--from-current-env", "--python", python, "--no-cache", spec_path, out,
                env=env)
    assert r.returncode == 0, r.stderr
    return _members(out), r.stderr


def _members(path):
    with tarfile.open(path) as tar:
        return {m.name for m in tar.getmembers()}


def _pins(spec):
    return dict(p.split("==", 1) for p in spec.get("pip", ()) if "==" in p)


def _assert_ships(members, inst, name, version):
    """The tarball holds *name*'s ``.dist-info`` at *version* and every file its installed RECORD lists inside
    its site directory (bytecode aside: the engine never ships it)."""
    d = inst.distribution(name)
    assert d is not None and d.version == version, (name, d)
    info_dir = os.path.basename(d.meta_path)
    metadata = [m for m in members if m.endswith("/" + info_dir + "/METADATA")]
    assert len(metadata) == 1, (info_dir, sorted(m for m in members if ".dist-info/" in m))
    site = metadata[0][: -len(info_dir + "/METADATA")]
    record = [f for f in d.record() if not f.startswith("../") and "__pycache__" not in f]
    assert record and all(site + f in members for f in record), [f for f in record if site + f not in members]


@pytest.fixture(scope="module")
def base():
    """The base interpreter's Installation, with PyYAML and python-dateutil installed in it (as test_analyze)."""
    inst = installation(BASE)
    if inst.distribution("PyYAML") is None or inst.distribution("python-dateutil") is None:
        _run([BASE, "-m", "pip", "install", "-q", "--disable-pip-version-check", "PyYAML", "python-dateutil"])
        clear_cache()
        inst = installation(BASE)
    return inst


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """One venv (no system site-packages) holding six 1.16.0 from PyPI, an editable project and a project
    installed from its directory."""
    root = tmp_path_factory.mktemp("plain")
    py = _venv(root / "venv")
    edit, local = _project(root, "editmod"), _project(root, "dirmod", "2.5")
    _uv(py, "six==1.16.0")
    _uv(py, "-e", edit)
    _uv(py, local)
    return {"root": root, "python": py, "prefix": str(root / "venv"), "edit": edit, "local": local}


def test_venv(plain, tmp_path):
    script = _script(tmp_path, "import six\n")
    a = analyze([script], prefix=plain["prefix"], use_cache=False)
    assert dict(a.distributions) == {"six": "1.16.0"} and a.unresolved == ()
    members, stderr = _cli_build(tmp_path, a.spec.to_dict(), plain["python"], _env(tmp_path))
    assert "shipped six==1.16.0" in stderr
    _assert_ships(members, installation(plain["python"]), "six", "1.16.0")


def test_system_site_packages_venv_pins_base_packages_by_distribution_name(base, tmp_path):
    """The issue-12 case: a venv over a base with PyYAML and python-dateutil. Analyzed from outside (prefix=) and
    by ``poncho_package_analyze`` running inside the venv; built inside the venv and from outside (--python)."""
    py = _venv(tmp_path / "venv", system_site=True)
    _uv(py, "six==1.16.0")  # the venv's own six shadows the base's (dateutil's dependency, and imported)
    yaml_v, du_v = base.distribution("PyYAML").version, base.distribution("python-dateutil").version
    assert base.distribution("six").version != "1.16.0"
    script = _script(tmp_path, "import yaml\nimport six\nfrom dateutil import parser\n")
    pins = {"PyYAML": yaml_v, "python-dateutil": du_v, "six": "1.16.0"}
    a = analyze([script], prefix=str(tmp_path / "venv"), use_cache=False)
    assert dict(a.distributions) == pins and a.unresolved == ()
    env = _env(tmp_path)
    spec = _cli_analyze(py, script, env)  # poncho_wq comes last (_env), after the venv's and the base's
    assert _pins(spec) == pins and len(spec["pip"]) == 3
    inst = installation(py)
    assert base.site_packages[0] in inst.site_dirs and inst.prefix == os.path.realpath(str(tmp_path / "venv"))
    members, stderr = _cli_build(tmp_path, spec, py, env)
    for name, version in pins.items():
        _assert_ships(members, inst, name, version)
    assert not any("/six-{}.dist-info/".format(base.distribution("six").version) in m for m in members)
    # The same build run by the venv's own interpreter (the running one there): the same distributions.
    out = tmp_path / "inside.tar.gz"
    r = _run([py, "-m", "poncho_wq", "create", "--from-current-env", "--no-cache", tmp_path / "spec.json", out],
             env=env)
    assert "PyYAML==" + yaml_v in r.stderr and "python-dateutil==" + du_v in r.stderr
    assert _members(str(out)) == members


def test_user_site_through_pythonuserbase(base, tmp_path, monkeypatch):
    userbase = tmp_path / "userbase"
    env = _env(tmp_path, PYTHONUSERBASE=userbase)
    monkeypatch.setenv("PYTHONUSERBASE", str(userbase))  # part of the probe's key: asked again, not remembered
    monkeypatch.setenv("PONCHO_WQ_CACHE", env["PONCHO_WQ_CACHE"])  # where the probe's answer is kept on disk
    other = _other(BASE)
    before = installation(other)
    assert before.distribution("tabulate") is None
    _run([BASE, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--user", "--no-deps",
          "tabulate==0.9.0"], env=env)
    # The user site did not exist at the first probe; now that it does, the memo must not answer from before.
    inst = installation(other)
    user = [d for d in inst.site_dirs if d.startswith(os.path.realpath(str(userbase)))]
    assert user and inst.site_dirs.index(user[0]) < inst.site_dirs.index(base.site_packages[0]), inst.site_dirs
    clear_cache()  # the next answer comes from the disk memo, and is the same
    assert installation(other).site_dirs == inst.site_dirs
    assert os.listdir(os.path.join(env["PONCHO_WQ_CACHE"], "analyze", "installations"))
    script = _script(tmp_path, "import tabulate\n")
    spec = _cli_analyze(BASE, script, env)
    assert _pins(spec) == {"tabulate": "0.9.0"}
    members, _ = _cli_build(tmp_path, spec, BASE, env)
    _assert_ships(members, inst, "tabulate", "0.9.0")
    assert base.distribution("tabulate") is None


def test_pythonpath_directory(tmp_path):
    target = tmp_path / "pp"
    _run([sys.executable, "-m", "uv", "pip", "install", "-q", "--python", BASE, "--target", target, "--no-deps",
          "toolz==0.12.1"])
    env = _env(tmp_path, PYTHONPATH=target)
    script = _script(tmp_path, "import toolz\n")
    spec = _cli_analyze(BASE, script, env)
    assert _pins(spec) == {"toolz": "0.12.1"}
    members, stderr = _cli_build(tmp_path, spec, BASE, env)
    assert "shipped toolz==0.12.1" in stderr
    d = [m for m in members if m.endswith("/toolz/__init__.py")]
    assert d and any(m.endswith("/toolz-0.12.1.dist-info/METADATA") for m in members)


@pytest.mark.skipif(not os.path.exists(DEBIAN) or subprocess.run([DEBIAN, "-c", "import yaml"],
                                                                 capture_output=True).returncode != 0,
                    reason="needs Debian's /usr/bin/python3 with python3-yaml (apt-get install python3-yaml)")
def test_debian_dist_packages(tmp_path):
    inst = installation(DEBIAN)
    assert any(d.endswith("dist-packages") for d in inst.site_dirs), inst.site_dirs
    version = inst.distribution("PyYAML").version
    script = _script(tmp_path, "import yaml\n")
    a = analyze([script], prefix=os.path.dirname(os.path.dirname(DEBIAN)), use_cache=False)
    assert dict(a.distributions) == {"PyYAML": version} and a.unresolved == ()
    assert a.spec.python == inst.python_version
    members, stderr = _cli_build(tmp_path, a.spec.to_dict(), DEBIAN, _env(tmp_path))
    assert "shipped PyYAML==" + version in stderr
    _assert_ships(members, inst, "PyYAML", version)
    # Where the engine put it (Debian's purelib, local/lib/python3.X/dist-packages) is where the copy looks.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(str(tmp_path / "env.tar.gz")) as tar:
        tar.extractall(str(unpacked))
    r = _run(["env", "-i", "PATH=/usr/bin:/bin", unpacked / "bin" / "python3", "-c",
              "import yaml; print(yaml.__file__)"])
    assert r.stdout.startswith(str(unpacked) + "/"), r.stdout


def test_conda_prefix(tmp_path_factory, tmp_path):
    root = tmp_path_factory.mktemp("conda")
    channel = root / "channel"
    make_python_standin(channel)
    url = make_channel(channel, [
        dict(name="greetpy", version="1.0", noarch="python", depends=["python"],
             files={"site-packages/greetpy/__init__.py": "X = 1\n",
                    "site-packages/greetpy-1.0.dist-info/METADATA":
                        "Metadata-Version: 2.1\nName: greetpy\nVersion: 1.0\n",
                    "site-packages/greetpy-1.0.dist-info/INSTALLER": "conda\n"}),
    ])
    prefix = root / "prefix"
    install_prefix(url, ["python", "greetpy"], str(prefix))
    script = _script(tmp_path, "import greetpy\n")
    a = analyze([script], prefix=str(prefix), use_cache=False)
    assert "{}::greetpy=1.0=0".format(url) in a.spec.conda.packages and a.distributions["greetpy"] == "1.0"
    py = str(prefix / "bin" / "python")
    members, stderr = _cli_build(tmp_path, a.spec.to_dict(), py, _env(tmp_path))
    assert "greetpy=1.0=0 (conda)" in stderr
    inst = installation(py)
    rec = inst.conda_records["greetpy"]
    assert "conda-meta/" + os.path.basename(rec["_path"]) in members
    assert all(f in members for f in rec["files"])
    assert inst.conda_owner(inst.distribution("greetpy"))["name"] == "greetpy"


def test_editable_install(plain, tmp_path):
    from poncho_wq.engines import ENGINES, create
    from poncho_wq.engines.current import plan

    script = _script(tmp_path, "import editmod\n")
    a = analyze([script], prefix=plain["prefix"], use_cache=False)
    assert dict(a.local_distributions) == {"editmod": plain["edit"]}
    assert any(src == os.path.join(plain["edit"], "editmod", "__init__.py") for src, _ in a.local_files)
    shipped = ENGINES["current"].prepare(a.spec, a)
    p = plan(shipped, plain["python"])
    assert p.dists == (("editmod", "0.1", "editable"),)
    out = tmp_path / "env.tar.gz"
    create(shipped, str(out), engine="current", python=plain["python"], use_cache=False)
    members = _members(str(out))
    assert any(m.endswith("/site-packages/editmod/__init__.py") for m in members)
    assert any(m.endswith("/editmod-0.1.dist-info/METADATA") for m in members)


def test_local_directory_install(plain, tmp_path):
    from poncho_wq.engines import ENGINES, create
    from poncho_wq.engines.current import plan

    script = _script(tmp_path, "import dirmod\n")
    a = analyze([script], prefix=plain["prefix"], use_cache=False)
    assert dict(a.local_distributions) == {"dirmod": plain["local"]}
    shipped = ENGINES["current"].prepare(a.spec, a)
    p = plan(shipped, plain["python"])
    assert p.dists == (("dirmod", "2.5", "installed"),)
    out = tmp_path / "env.tar.gz"
    create(shipped, str(out), engine="current", python=plain["python"], use_cache=False)
    _assert_ships(_members(str(out)), installation(plain["python"]), "dirmod", "2.5")


def test_prefix_whose_interpreter_does_not_run_is_read_from_disk(tmp_path):
    """A prefix copied from elsewhere (its bin/python3 fails): its site-packages are still indexed."""
    prefix = tmp_path / "prefix"
    site = prefix / "lib" / "python{}.{}".format(*sys.version_info[:2]) / "site-packages"
    _run([sys.executable, "-m", "uv", "pip", "install", "-q", "--python", BASE, "--target", site, "--no-deps",
          "six==1.16.0"])
    (prefix / "bin").mkdir()
    (prefix / "bin" / "python3").write_text("#!/bin/sh\nexit 3\n")
    (prefix / "bin" / "python3").chmod(0o755)
    a = analyze([_script(tmp_path, "import six\n")], prefix=str(prefix), use_cache=False)
    assert dict(a.distributions) == {"six": "1.16.0"}
    assert installation(prefix=str(prefix)).site_dirs == (os.path.realpath(str(site)),)


def test_conda_meta_is_read_once_into_one_owner_map_and_a_bad_record_warned_once(tmp_path, caplog):
    """One reader of a prefix's conda-meta (the analysis' conda_owner and the lock use the same owner map): read
    again only when a record changes, so an unreadable record is warned about once, not once per caller."""
    meta = tmp_path / "conda-meta"
    meta.mkdir()
    files = ["lib/python3.11/site-packages/foo/__init__.py", "lib/python3.11/site-packages/foo-1.0.dist-info/RECORD"]
    (meta / "foo-1.0-0.json").write_text(json.dumps({"name": "foo", "version": "1.0", "build": "0", "files": files}))
    (meta / "broken-1-0.json").write_text("{not json")
    clear_cache()
    with caplog.at_level("WARNING"):
        owners = conda_meta_owners(str(tmp_path))
        assert set(conda_records(str(tmp_path))) == {"foo"}
        assert conda_meta_owners(str(tmp_path)) == owners
    dist_info = os.path.realpath(str(tmp_path / "lib/python3.11/site-packages/foo-1.0.dist-info"))
    assert list(owners) == [dist_info] and owners[dist_info]["name"] == "foo"
    warned = [r.getMessage() for r in caplog.records if "unreadable conda record" in r.getMessage()]
    assert len(warned) == 1 and "broken-1-0.json" in warned[0], warned
    (meta / "broken-1-0.json").write_text(json.dumps({"name": "broken", "version": "1", "build": "0"}))
    assert set(conda_records(str(tmp_path))) == {"foo", "broken"}  # a rewritten record is read again
