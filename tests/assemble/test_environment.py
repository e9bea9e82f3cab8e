"""Environment resolution across processes: what source="auto" builds, and reuse of the cache."""

import json
import os
import subprocess
import sys

DRIVER = r"""
import json, sys
from poncho_wq import Environment
env = Environment.from_script(sys.argv[1])
env.build()
print(json.dumps({"source": env.source, "hit": env.build_result.cache_hit, "name": env.remote_name}))
"""
OFFLINE = {"PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}


def resolve(script, cache, **env):
    full = dict(os.environ, PONCHO_WQ_CACHE=str(cache), **env)
    full.pop("PONCHO_WQ_SOURCE", None)
    full.update(env)
    r = subprocess.run([sys.executable, "-c", DRIVER, str(script)], env=full, capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_auto_source_is_the_lock_whatever_the_network(tmp_path):
    """Issue 24: auto chose index or current by a 3 s reachability probe, so the same script could get another
    environment from one run to the next. It is the lock, built from the installed files: the same environment
    with an index, without one, and in another cache; PONCHO_WQ_SOURCE=index still asks the index (another
    environment: the imports pinned, the rest resolved there)."""
    script = tmp_path / "job.py"
    script.write_text("import humanize\n")
    first, err = resolve(script, tmp_path / "cache")
    assert first["source"] == "auto" and not first["hit"]
    assert "package index" not in err and "running environment" not in err  # nothing guessed, nothing to say
    again, _ = resolve(script, tmp_path / "cache", **OFFLINE)
    assert again == dict(first, hit=True)
    fresh, _ = resolve(script, tmp_path / "other-cache", **OFFLINE)
    assert fresh == first
    index, _ = resolve(script, tmp_path / "cache", PONCHO_WQ_SOURCE="index")
    assert index["source"] == "index" and index["name"] != first["name"]


def test_clear_caches_drops_the_memos(tmp_path, monkeypatch):
    """A memoized ship list is re-checked against the files it covers (ctime too, which an edit cannot put
    back: issue 13), and clear_caches() drops every in-process memo for what no memo key covers."""
    import poncho_wq
    from poncho_wq.assemble.environment import ship_list

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    (tmp_path / "job.py").write_text("import helper_a\n")
    (tmp_path / "helper_a.py").write_text("X = 1\n")
    (tmp_path / "helper_b.py").write_text("Y = 2\n")
    first = ship_list(["job.py"])
    assert {arc for _, arc in first} == {"job.py", "helper_a.py"}
    st = os.stat(tmp_path / "job.py")
    (tmp_path / "job.py").write_text("import helper_b\n")  # same size, mtime put back: ctime still changed
    os.utime(tmp_path / "job.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert {arc for _, arc in ship_list(["job.py"])} == {"job.py", "helper_b.py"}
    poncho_wq.clear_caches()
    assert {arc for _, arc in ship_list(["job.py"])} == {"job.py", "helper_b.py"}


def test_from_script_memo_follows_the_settings_it_depends_on(tmp_path, monkeypatch):
    """Environment.from_script's memo is keyed by the settings its result depends on, read once at the entry:
    PONCHO_WQ_EXCLUDE (which package data ships), PONCHO_WQ_TARGET (the spec's target) and PONCHO_WQ_SOURCE (what
    is built) changed between two calls in one process give another environment, not the first one again."""
    import platform

    import poncho_wq
    from poncho_wq.assemble.environment import Environment

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    for name in ("PONCHO_WQ_EXCLUDE", "PONCHO_WQ_TARGET", "PONCHO_WQ_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "__init__.py").write_text("")
    (tmp_path / "mylib" / "table.json").write_text("{}")
    (tmp_path / "job.py").write_text("import mylib\n")
    poncho_wq.clear_caches()

    def arcs(env):
        return {arc for _, arc in env.local_files}

    first = Environment.from_script("job.py")
    assert "mylib/table.json" in arcs(first) and first.spec.target is None and first.source == "auto"
    monkeypatch.setenv("PONCHO_WQ_EXCLUDE", "*.json")
    excluded = Environment.from_script("job.py")
    assert "mylib/table.json" not in arcs(excluded)
    tag = "manylinux_2_17_" + platform.machine()
    monkeypatch.setenv("PONCHO_WQ_TARGET", tag)
    assert Environment.from_script("job.py").spec.target == tag
    monkeypatch.setenv("PONCHO_WQ_SOURCE", "index")
    assert Environment.from_script("job.py").source == "index"
    for name in ("PONCHO_WQ_EXCLUDE", "PONCHO_WQ_TARGET", "PONCHO_WQ_SOURCE"):
        monkeypatch.delenv(name)
    assert Environment.from_script("job.py") is first  # the same settings again: the memo
