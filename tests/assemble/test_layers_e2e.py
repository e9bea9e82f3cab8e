"""Layered environments end to end (issue 13): one manager session, real workers of both Work Queue bindings, an
editable package, a local module, a local ``file://`` project and the job script edited between rounds.

Before layers, this session ran the *old* code after an edit: the memos keyed environments by the scripts alone,
and Work Queue caches inputs by local path, so an edited module attached under the same path was served from the
worker's cache. Here every later task must print the new versions, the base must travel and be unpacked once per
worker, and each edit must send only what changed (the round after a code edit: only the new code layer).
"""

import json
import os
import sys

import pytest

from helpers.cli import run_ok as _run
from helpers.venvs import child_venv


JOB = '''\
import sys

import humanize
import edpkg
import fileproj
from mylib import fmt

print("RESULT", sys.argv[1], "job={}", fmt.VERSION, edpkg.VERSION, fileproj.VERSION, humanize.intword(10 ** 6))
'''
PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1"
dependencies = ["humanize"]
{scripts}
[tool.setuptools]
packages = ["{name}"]
'''


def _init(name, version):
    return "VERSION = {!r}\n\n\ndef main():\n    print('{} tool', VERSION)\n".format(version, name)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A venv over this interpreter's site-packages (poncho_wq, humanize) with ``edpkg`` installed editable and
    ``fileproj`` installed from its directory (direct_url ``file://``, not editable)."""
    root = tmp_path_factory.mktemp("layers")
    # --no-build-isolation (seconds, not a download per install) needs setuptools' bdist_wheel: wheel, a declared
    # test dependency like humanize.
    return {"root": root, "python": child_venv(root / "venv")}


@pytest.fixture(scope="module")
def source_caches(tmp_path_factory, e2e_cache):
    """One build cache per ``source``, shared by the two bindings' cases of the edit test: the base environment is
    the same for both (the edited code ships in the layers), so the second case takes the first one's base from the
    cache instead of building it again (a build per case was most of a case's 15-27 s). What the test checks happens
    after the build: which tasks saw which code, what travelled and what was unpacked, counted per case from its
    own workers' logs. The single-tarball test below still checks a real build, a hit and a rebuild. ``index`` is
    the run's shared cache (tests/conftest.py's ``e2e_cache``): its base is the humanize environment other
    end-to-end tests build from the index too."""
    caches = {"index": e2e_cache}

    def get(source):
        if source not in caches:
            caches[source] = str(tmp_path_factory.mktemp("layers-cache-" + source))
        return caches[source]
    return get


def _project(tmp_path, venv):
    d = tmp_path / "project"
    (d / "mylib").mkdir(parents=True)
    (d / "mylib" / "__init__.py").write_text("")
    (d / "mylib" / "fmt.py").write_text("VERSION = 'lib1'\n")
    (d / "job.py").write_text(JOB.format("J1"))
    for name, version, scripts in (("edpkg", "ed1", '\n[project.scripts]\nedtool = "edpkg:main"\n'),
                                   ("fileproj", "fp1", "")):
        p = tmp_path / name
        (p / name).mkdir(parents=True)
        (p / "pyproject.toml").write_text(PYPROJECT.format(name=name, scripts=scripts))
        (p / name / "__init__.py").write_text(_init(name, version))
    pip = [venv["python"], "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check"]
    _run(pip + ["-e", tmp_path / "edpkg"])
    _run(pip + ["--force-reinstall", tmp_path / "fileproj"])
    edits = [
        # round 1: the local module, the editable's source, and the file:// project (edited and reinstalled)
        {"files": {str(d / "mylib" / "fmt.py"): "VERSION = 'lib2'\n",
                   str(tmp_path / "edpkg" / "edpkg" / "__init__.py"): _init("edpkg", "ed2"),
                   str(tmp_path / "fileproj" / "fileproj" / "__init__.py"): _init("fileproj", "fp2")},
         "run": [[str(a) for a in pip + ["--force-reinstall", tmp_path / "fileproj"]]]},
        # round 2: the job script only
        {"files": {str(d / "job.py"): JOB.format("J2")}},
    ]
    (tmp_path / "edits.json").write_text(json.dumps(edits))
    return d


def _sent(transfers, name):
    return [sum(n for cached, n in t.items() if cached == name or cached.endswith("-" + name)) for t in transfers]


@pytest.mark.parametrize("source", ["index", "current"])
def test_edits_between_rounds_reach_every_later_task_and_only_the_code_travels(cluster, venv, tmp_path, source,
                                                                              source_caches):
    """source="index": the base from PyPI; "current": copied from the venv, where the editable and the file://
    project are installed, yet they ship in the code layer (a base holding them would change at every edit)."""
    project = _project(tmp_path, venv)
    cache = source_caches(source)
    cluster.start_manager("layers_manager.py", ["--tasks", "6", "--command", "python3 job.py {i} && edtool",
                                                "--edits", str(tmp_path / "edits.json")],
                          str(project), cache, env={"PONCHO_WQ_SOURCE": source}, python=venv["python"])
    cluster.start_worker(cores=2, keep_envs=True)
    cluster.start_worker(cores=2, keep_envs=True)
    out = cluster.wait_results()
    expected = [("J1", "lib1", "ed1", "fp1"), ("J1", "lib2", "ed2", "fp2"), ("J2", "lib2", "ed2", "fp2")]
    envs, codes = set(), []
    for rnd, (job, lib, ed, fp) in enumerate(expected):
        results = out["rounds"][rnd]["results"]
        assert len(results) == 6
        for r in results:
            assert r["return_status"] == 0, r
            line = "RESULT {} job={} {} {} {} 1.0 million".format(r["i"], job, lib, ed, fp)
            assert line in r["output"], (rnd, r["output"])
            assert "edpkg tool " + ed in r["output"], (rnd, r["output"])  # the console script, from the layer
            envs.add(r["env"])
        codes.append({r["code"] for r in results})
    assert len(envs) == 1, envs  # code edits never change the base
    env = envs.pop()
    assert all(len(c) == 1 for c in codes), codes
    code = [c.pop() for c in codes]
    assert code[0] != code[1] and code[1] == code[2], code  # round 2 changed only the script

    # What the layers hold: the local module, both local distributions with their metadata, the console
    # script; nothing of the manager's own environment.
    import tarfile

    with tarfile.open(os.path.join(cache, "code", code[1])) as t:
        names = set(t.getnames())
    tops = {n.split("/")[1] if n.startswith("lib/") else n for n in names}
    assert tops == {"mylib", "edpkg", "edpkg-0.1.dist-info", "fileproj", "fileproj-0.1.dist-info", "bin/edtool"}, names
    assert "lib/edpkg-0.1.dist-info/entry_points.txt" in names
    assert not any(n.endswith(("direct_url.json", "/RECORD")) or "__editable__" in n for n in names), names

    ran = [1 if n else 0 for n in cluster.tasks_run()]
    assert sum(cluster.tasks_run()) == 18
    transfers = cluster.transfers()
    # The base: sent once and unpacked once per worker that ran tasks, in all three rounds together.
    assert _sent(transfers, env) == ran, transfers
    unpacked = cluster.unpacked_ids()
    assert [ids.count(env[: -len(".tar.gz")]) for ids in unpacked] == ran, unpacked
    # Each code layer at most once per worker; nothing else was sent more than once either (so the round
    # after the code edit sent only the new layer, and the one after the script edit only the new script copy).
    for name in code[:2]:
        assert all(n <= 1 for n in _sent(transfers, name)), transfers
        assert sum(_sent(transfers, name)) >= 1, transfers
        assert all(ids.count(name[: -len(".tar.gz")]) <= 1 for ids in unpacked), unpacked
    for t in transfers:
        assert all(n == 1 for n in t.values()), t
        # base, shim, two code layers, two copies of job.py: nothing else is ever sent
        assert len(t) <= 6, t


def test_single_tarball_with_a_file_project_is_rebuilt_after_an_edit_and_a_hit_otherwise(tmp_path):
    """The upstream-compatible single tarball (``poncho_package_create``) with ``name @ file:///dir``: a real
    build, a real cache hit while the project is unchanged, a new build holding the new code after an edit."""
    import tarfile

    import poncho_wq

    proj = tmp_path / "fileproj"
    (proj / "fileproj").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(PYPROJECT.format(name="fileproj", scripts="").replace(
        'dependencies = ["humanize"]', "dependencies = []"))
    (proj / "fileproj" / "__init__.py").write_text(_init("fileproj", "fp1"))
    spec = {"python": "{}.{}".format(*sys.version_info[:2]), "pip": ["fileproj @ file://{}".format(proj)]}
    cache = str(tmp_path / "cache")
    first = poncho_wq.create(spec, cache_dir=cache)
    assert not first.cache_hit
    assert poncho_wq.create(spec, cache_dir=cache).cache_hit
    (proj / "fileproj" / "__init__.py").write_text(_init("fileproj", "fp2"))
    second = poncho_wq.create(spec, cache_dir=cache)
    assert not second.cache_hit and second.key != first.key
    with tarfile.open(second.path) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("site-packages/fileproj/__init__.py"))
        assert b"fp2" in t.extractfile(member).read()


def test_python_task_of_a_local_module_ships_that_module_and_its_edits(cluster, venv, tmp_path, e2e_cache):
    """PonchoPythonTask of a function of a local module that no script imports: the function is pickled by
    reference, so its module must be in the code layer, and an edit must reach the next round."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "mathfuncs.py").write_text("def square(x):\n    return x * x\n")
    edits = [{"files": {str(project / "mathfuncs.py"): "def square(x):\n    return x * x + 1000\n"}}]
    (tmp_path / "edits.json").write_text(json.dumps(edits))
    cluster.start_manager("layers_manager.py", ["--tasks", "3", "--function", "mathfuncs:square",
                                                "--edits", str(tmp_path / "edits.json")],
                          str(project), e2e_cache, python=venv["python"])  # both bindings: one build
    cluster.start_worker(cores=2, keep_envs=True)
    out = cluster.wait_results()
    for rnd, extra in enumerate((0, 1000)):
        results = out["rounds"][rnd]["results"]
        assert [r["return_status"] for r in results] == [0, 0, 0], results
        assert [str(r["value"]) for r in results] == [str(i * i + extra) for i in range(3)], results
