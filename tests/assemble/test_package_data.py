"""Package data of local code ships with it (issue 18, first part): the non-Python files of a local package the
analysis follows (a model next to its ``__init__.py``, ``templates/``), without caches, VCS or build debris, with
``PONCHO_WQ_EXCLUDE`` patterns and a size warning; and a job reading them works as a PonchoTask on real workers."""

import json


from poncho_wq import analyze

JOB = '''\
import json, os, sys
import mylib

here = os.path.dirname(mylib.__file__)
with open(os.path.join(here, "model.json")) as f:
    model = json.load(f)
with open(os.path.join(here, "templates", "greeting.txt")) as f:
    print("RESULT", model["answer"], f.read().strip(), sys.argv[1])
'''


def _project(root):
    (root / "mylib" / "templates").mkdir(parents=True)
    (root / "mylib" / "__pycache__").mkdir()
    (root / "mylib" / ".git").mkdir()
    (root / "mylib" / "unused_sub").mkdir()
    (root / "job.py").write_text(JOB)
    (root / "mylib" / "__init__.py").write_text("")
    (root / "mylib" / "model.json").write_text(json.dumps({"answer": 42}))
    (root / "mylib" / "templates" / "greeting.txt").write_text("hello\n")
    (root / "mylib" / "weights.h5").write_bytes(b"\0" * 2000)
    (root / "mylib" / "unimported.py").write_text("x = 1\n")
    (root / "mylib" / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"junk")
    (root / "mylib" / ".git" / "HEAD").write_text("ref\n")
    (root / "mylib" / "unused_sub" / "__init__.py").write_text("")
    (root / "mylib" / "unused_sub" / "sub.json").write_text("{}")
    (root / "notes.txt").write_text("next to the script, not in a package: not shipped\n")
    return root


def test_package_data_ships_without_debris(tmp_path, monkeypatch):
    _project(tmp_path)
    monkeypatch.delenv("PONCHO_WQ_EXCLUDE", raising=False)
    a = analyze([str(tmp_path / "job.py")], use_cache=False)
    arcs = {arc for _, arc in a.local_files}
    assert {"mylib/__init__.py", "mylib/model.json", "mylib/templates/greeting.txt", "mylib/weights.h5"} <= arcs
    for absent in ("mylib/unimported.py", "notes.txt", "mylib/unused_sub/sub.json"):
        assert absent not in arcs, absent
    assert not any("__pycache__" in x or ".git" in x for x in arcs)


def test_exclude_patterns_and_size_warning(tmp_path, monkeypatch):
    _project(tmp_path)
    monkeypatch.setenv("PONCHO_WQ_EXCLUDE", "*.h5:mylib/templates/*")
    monkeypatch.setenv("PONCHO_WQ_DATA_WARN_MB", "0.00001")
    a = analyze([str(tmp_path / "job.py")], use_cache=False)
    arcs = {arc for _, arc in a.local_files}
    assert "mylib/model.json" in arcs and "mylib/weights.h5" not in arcs
    assert not any(x.startswith("mylib/templates/") for x in arcs)
    assert any("PONCHO_WQ_EXCLUDE" in w and "mylib/model.json" in w for w in a.warnings), a.warnings


def test_a_job_reading_its_package_data_runs_on_workers(cluster, tmp_path, e2e_cache):
    project = _project(tmp_path / "project")
    # the run's shared build cache (tests/conftest.py): one build for both bindings
    cluster.start_manager("manager.py", ["--tasks", "2", "--command", "python3 job.py {i}"], str(project),
                          e2e_cache)
    cluster.start_worker()
    out = cluster.wait_results()
    assert [r["return_status"] for r in out["results"]] == [0, 0], out
    lines = sorted(line for r in out["results"] for line in r["output"].splitlines() if line.startswith("RESULT"))
    assert lines == ["RESULT 42 hello 0", "RESULT 42 hello 1"], out
