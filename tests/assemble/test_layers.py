"""The code layer's key and the memos over local code: a change of content is seen at once, anything else is not
a change (real files, real tarballs, no mocks)."""

import os
import tarfile
import time

import pytest

import poncho_wq
from poncho_wq.assemble.layers import CodeLayer, content_copy, local_file_members, merge
from poncho_wq.errors import PonchoError
from poncho_wq.identity import content_mtime


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "proj"
    (d / "pkg").mkdir(parents=True)
    (d / "pkg" / "__init__.py").write_text("")
    (d / "pkg" / "a.py").write_text("X = 1\n")
    (d / "mod.py").write_text("import pkg.a\n")
    return d


def _layer(d):
    return CodeLayer([("lib/pkg/__init__.py", str(d / "pkg" / "__init__.py")),
                      ("lib/pkg/a.py", str(d / "pkg" / "a.py")), ("lib/mod.py", str(d / "mod.py"))])


def test_changed_content_gives_a_new_key_unchanged_a_hit(tree, tmp_path):
    cache = str(tmp_path / "cache")
    first = _layer(tree).build(cache)
    assert os.path.basename(first) == "code-{}.tar.gz".format(_layer(tree).hash)
    with tarfile.open(first) as t:
        assert sorted(t.getnames()) == ["lib/mod.py", "lib/pkg/__init__.py", "lib/pkg/a.py"]
        assert t.extractfile("lib/pkg/a.py").read() == b"X = 1\n"
    stat1 = os.stat(first)
    again = _layer(tree).build(cache)
    assert again == first and os.stat(again).st_ino == stat1.st_ino  # a hit: not rewritten
    # Same size, same mtime: only the content (and ctime) differ, still a new key.
    st = os.stat(tree / "pkg" / "a.py")
    (tree / "pkg" / "a.py").write_text("X = 2\n")
    os.utime(tree / "pkg" / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    second = _layer(tree).build(cache)
    assert second != first
    with tarfile.open(second) as t:
        assert t.extractfile("lib/pkg/a.py").read() == b"X = 2\n"
    # Back to the old content: the old name, the old file.
    (tree / "pkg" / "a.py").write_text("X = 1\n")
    assert _layer(tree).build(cache) == first


def test_touch_without_change_keeps_the_key(tree, tmp_path):
    before = _layer(tree).hash
    later = time.time() + 5
    for p in tree.rglob("*.py"):
        os.utime(p, (later, later))
    assert _layer(tree).hash == before


def test_mode_and_path_are_part_of_the_key(tree):
    before = _layer(tree).hash
    os.chmod(tree / "mod.py", 0o755)
    assert _layer(tree).hash != before
    os.chmod(tree / "mod.py", 0o644)
    assert _layer(tree).hash == before
    moved = CodeLayer([("lib/other.py", str(tree / "mod.py"))]).hash
    assert moved != CodeLayer([("lib/mod.py", str(tree / "mod.py"))]).hash


def test_layers_are_reproducible_and_read_only(tree, tmp_path):
    a = _layer(tree).build(str(tmp_path / "c1"))
    b = _layer(tree).build(str(tmp_path / "c2"))
    assert open(a, "rb").read() == open(b, "rb").read()
    assert not os.stat(a).st_mode & 0o222


def test_a_layer_packed_again_has_the_same_mtime(tree, tmp_path):
    """The mtime of a layer comes from its content-derived name (issue 27: TaskVine names a workflow-level file by
    path, size and mtime), its atime is when it was packed (the cache's last use)."""
    cache = str(tmp_path / "cache")
    start = time.time()
    path = _layer(tree).build(cache)
    st = os.stat(path)
    assert st.st_mtime_ns == content_mtime(_layer(tree).hash) * 10**9 and st.st_atime >= start - 1
    os.chmod(path, 0o644)
    os.unlink(path)
    poncho_wq.clear_caches()
    assert _layer(tree).build(cache) == path and os.stat(path).st_mtime_ns == st.st_mtime_ns


def test_damaged_layer_is_rebuilt(tree, tmp_path):
    cache = str(tmp_path / "cache")
    path = _layer(tree).build(cache)
    good = open(path, "rb").read()
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(good[:20])
    poncho_wq.clear_caches()
    assert _layer(tree).build(cache) == path
    assert open(path, "rb").read() == good


def test_two_files_under_one_name_are_refused(tree, tmp_path):
    other = tmp_path / "mod.py"
    other.write_text("different\n")
    with pytest.raises(PonchoError, match="two different files"):
        merge(local_file_members([(str(tree / "mod.py"), "mod.py")]), local_file_members([(str(other), "mod.py")]))


def test_content_copy_follows_content(tree, tmp_path):
    cache = str(tmp_path / "cache")
    one = content_copy(str(tree / "mod.py"), cache)
    assert content_copy(str(tree / "mod.py"), cache) == one
    (tree / "mod.py").write_text("import pkg\n")
    two = content_copy(str(tree / "mod.py"), cache)
    assert two != one and open(two).read() == "import pkg\n" and open(one).read() == "import pkg.a\n"
    assert os.path.basename(two) == "mod.py"


def _project(root, version):
    (root / "proj" / "proj").mkdir(parents=True, exist_ok=True)
    (root / "proj" / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0.1"\n')
    (root / "proj" / "proj" / "__init__.py").write_text("VERSION = {!r}\n".format(version))
    return root / "proj"


def test_a_file_project_in_a_spec_is_keyed_by_its_content(tmp_path):
    """``name @ file:///dir`` in a spec: the cache key changes with the project's files (it held only the URL, so
    an edited project was a cache hit of the old build), and stays when nothing but build outputs changed."""
    from poncho_wq.engines import cache_key
    from poncho_wq.spec import parse_spec

    proj = _project(tmp_path, "one")
    spec = parse_spec({"python": "3.11", "pip": ["proj @ file://{}".format(proj)]})
    first = cache_key(spec, engine="portable")
    assert cache_key(spec, engine="portable") == first
    later = time.time() + 5
    os.utime(proj / "proj" / "__init__.py", (later, later))
    (proj / "build" / "lib").mkdir(parents=True)  # what building it writes into the tree
    (proj / "build" / "lib" / "x.py").write_text("")
    (proj / "proj.egg-info").mkdir()
    assert cache_key(spec, engine="portable") == first
    _project(tmp_path, "two")
    second = cache_key(spec, engine="portable")
    assert second != first
    (proj / "proj" / "new.py").write_text("")
    assert cache_key(spec, engine="portable") != second


def test_manager_only_distributions_never_ship():
    """poncho_wq is installed editable here (dev/setup.sh): a module of its checkout reached by a manager script
    made it a local distribution, and the whole package with its requirements went to the workers."""
    from poncho_wq.analysis.installation import installation
    from poncho_wq.assemble.layers import distribution_members

    assert installation().distribution("poncho_wq") is not None
    assert distribution_members(["poncho_wq", "poncho-wq", "ndcctools"]) == []


def test_cache_cli_lists_and_prunes_code_layers_not_build_inputs(tree, tmp_path):
    """Code layers and script copies pile up with every edit: `cache list` shows them, `prune` removes the ones
    unused for --max-age (and counts them in --max-size), and leaves build inputs (interpreter bases, pyc cache)
    alone: a build may be reading those."""
    from helpers.cli import run_cli

    cache = tmp_path / "cache"
    old = _layer(tree).build(str(cache))
    (tree / "pkg" / "a.py").write_text("X = 2\n")
    new = _layer(tree).build(str(cache))
    copy = content_copy(str(tree / "mod.py"), str(cache))
    (cache / "interpreters" / "base").mkdir(parents=True)
    (cache / "interpreters" / "base" / "python").write_bytes(b"x" * 10)
    day = 86400
    os.utime(old, (time.time() - 3 * day, time.time() - 3 * day))  # last used three days ago
    os.utime(copy, (time.time() - 3 * day, time.time() - 3 * day))

    listing = run_cli("poncho_wq", "cache", "--cache-dir", cache, "list")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("code layer") == 2 and "script copy mod.py" in listing.stdout
    assert "interpreters/: 1 files" in listing.stderr

    pruned = run_cli("poncho_wq", "cache", "--cache-dir", cache, "prune", "--max-age", "1d")
    assert pruned.returncode == 0 and "removed 2 entries" in pruned.stderr, pruned.stderr
    assert not os.path.exists(old) and not os.path.exists(os.path.dirname(copy)) and os.path.exists(new)
    assert (cache / "interpreters" / "base" / "python").exists()

    key = "code-" + os.path.basename(new)[5:13]
    assert run_cli("poncho_wq", "cache", "--cache-dir", cache, "rm", key).returncode == 0
    assert not os.path.exists(new)
