"""README.md and docs/ as a user meets them (issue 25): a front door of about 200 lines, every code block either run
by tests/test_docs_e2e.py or marked as a fragment, the spec examples valid, the links alive.

These checks are static (no workers, no builds): the blocks themselves run in tests/test_docs_e2e.py."""

import ast
import json
import os
import re

import pytest

from helpers.docblocks import LANGUAGES, ROOT, blocks, doc_files, runnable
from poncho_wq.spec import parse_spec

ALL = [b for path in doc_files() for b in blocks(path)]


def test_readme_is_a_front_door():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert len(text.splitlines()) <= 210, "README.md grew past a front door: move details to docs/"
    for needle in ("python3 -m venv", "pip install -e", "apt-get install coop-computing-tools",
                   "bash dev/demo.sh", "bash dev/test.sh", "work_queue_worker localhost", "vine_worker localhost",
                   "create_library", "DaskVine", "parsl", "docs/security.md", "docs/settings.md"):
        assert needle in text, needle
    readme_blocks = [b for b in blocks("README.md") if runnable(b)]
    assert sum(b.language == "python" for b in readme_blocks) >= 6


@pytest.mark.parametrize("block", ALL, ids=[b.where for b in ALL])
def test_every_block_has_a_known_language(block):
    assert block.language in LANGUAGES, (
        "{}: a ```{} block: use ```python, ```sh, ```json (run or validated) or ```text (output, never run)".format(
            block.where, block.language))


@pytest.mark.parametrize("block", [b for b in ALL if b.language == "python"],
                         ids=[b.where for b in ALL if b.language == "python"])
def test_python_blocks_compile(block):
    ast.parse(block.code, block.where)


@pytest.mark.parametrize("block", [b for b in ALL if b.language == "json"],
                         ids=[b.where for b in ALL if b.language == "json"])
def test_json_blocks_are_valid_specs(block):
    parse_spec(json.loads(block.code))


def test_runnable_blocks_define_what_they_use():
    """The defect of issue 25: snippets used `q`, `func` or `my-env.tar.gz` nobody had made. A runnable Python
    block must define (or import) every name it reads; builtins aside."""
    import builtins

    problems = []
    for b in ALL:
        if b.language != "python" or not runnable(b):
            continue
        tree = ast.parse(b.code)
        bound = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
                bound.update(a.arg for a in node.args.args) if isinstance(node, ast.FunctionDef) else None
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound:
                problems.append("{}: {} is never defined".format(b.where, node.id))
    assert not problems, problems


def test_relative_links_resolve():
    missing = []
    for path in doc_files():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            file_part = target.split("#", 1)[0]
            if not os.path.exists(os.path.normpath(os.path.join(ROOT, os.path.dirname(path), file_part))):
                missing.append("{}: {}".format(path, target))
    assert not missing, missing


def test_nothing_was_lost_in_the_move():
    """Every section of the 880-line README of main 23d74b5 has a home; the figures a user may look for are still
    written somewhere under docs/ or README.md."""
    text = ""
    for path in doc_files():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            text += f.read()
    for needle in ("Jobs as projects", "The project as an analysis hint", "Files a task reads by path",
                   "Layers: edit, re-run, no rebuild", "Many workers starting together", "Upstream's Python entry point",
                   "The reliability claims", "What the tools do better than upstream", "Parsl, WorkQueueExecutor",
                   "Parsl, TaskVineExecutor", "Tarballs both ways", "What did not work, and the workarounds",
                   "Requirements files", "Secrets are refused and masked", "Data variable names", "Which mode when",
                   "uv knows manylinux 2.17", "Worker disk budget", "What dominates a cold build", "66.9 min",
                   "| 8 | url+seed | 0.00 | 1 | 7 | 16.1 s |", "0.13 s from", "bench/taskvine_spread.py"):
        assert needle in text, needle
