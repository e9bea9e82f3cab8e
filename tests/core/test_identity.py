"""poncho_wq.identity.tree_digest: the one digest of a directory tree (a project's build key, a local file://
requirement's part of the cache key)."""

import os

from poncho_wq.identity import tree_digest


def _tree(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    outside.mkdir()
    (outside / "model.json").write_text("{}")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    (root / "build").mkdir()
    (root / "build" / "out.txt").write_text("build output")
    os.symlink(str(outside / "model.json"), str(root / "pkg" / "model.json"))
    os.symlink("..", str(root / "pkg" / "loop"))
    return outside, root


def test_a_link_counts_as_its_target_text_unless_links_are_followed(tmp_path):
    outside, root = _tree(tmp_path)
    plain, followed = tree_digest(str(root)), tree_digest(str(root), follow_links=True)
    assert plain != followed
    (outside / "model.json").write_text('{"v": 2}')
    assert tree_digest(str(root)) == plain  # the link's text is unchanged
    assert tree_digest(str(root), follow_links=True) != followed  # the linked file's bytes count
    (root / "build" / "out.txt").write_text("another build")
    (root / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"other")
    assert tree_digest(str(root)) == plain  # build output and bytecode are not the tree's content


def test_listed_files_are_digested_in_the_order_given(tmp_path):
    _outside, root = _tree(tmp_path)
    files = [("pkg/__init__.py", str(root / "pkg" / "__init__.py")), ("b", str(root / "build" / "out.txt"))]
    assert tree_digest(str(root), files=files) != tree_digest(str(root), files=files[::-1])
    before = tree_digest(str(root), files=files)
    os.chmod(str(root / "build" / "out.txt"), 0o755)
    assert tree_digest(str(root), files=files) != before  # the executable bit counts
