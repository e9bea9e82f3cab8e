"""The test suite runs from declared dependencies only (issue 23).

A fresh machine failed where the developer's passed because a module a test imported (``threadpoolctl``) was on the
developer's machine but declared nowhere. dev/test.sh therefore runs the suite in the checkout's own ``.venv``, made
from setup.cfg alone; these tests check that this holds (a run from another interpreter would hide the next missing
declaration) and name, in one message, every module the tests and examples import that no declared distribution
provides.
"""

import ast
import configparser
import importlib.metadata
import importlib.util
import os
import re
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Provided by the system, not by pip: CCTools (Debian's python3-workqueue, or the source build of dev/test.sh).
NOT_FROM_PIP = {"work_queue", "ndcctools", "vine", "taskvine"}


def _declared():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["test"].splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def _closure(requirements):
    """Canonical names of the declared distributions and everything they require (as installed here)."""
    seen, todo = set(), list(requirements)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in dist.requires or ():
            sub = Requirement(line)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}) or any(
                    sub.marker.evaluate({"extra": e}) for e in req.extras):
                todo.append(sub)
    return seen


def _imported_top_level_names():
    """{module: first file:line} of the absolute imports in tests/ and examples/ (not the code in strings)."""
    found = {}
    local = set()
    for where in ("tests", "examples"):
        for d, _dirs, files in os.walk(os.path.join(ROOT, where)):
            local.update(os.path.splitext(f)[0] for f in files if f.endswith(".py"))
            local.update(_dirs)
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                path = os.path.join(d, f)
                with open(path, encoding="utf-8") as fh:
                    tree = ast.parse(fh.read(), path)
                for node in ast.walk(tree):
                    names = []
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                        names = [node.module]
                    for name in names:
                        found.setdefault(name.split(".")[0], "{}:{}".format(os.path.relpath(path, ROOT), node.lineno))
    return {k: v for k, v in found.items() if k not in local}


def test_the_suite_runs_in_a_virtual_environment_without_the_machines_packages():
    assert sys.prefix != sys.base_prefix, (
        "the tests run from {}, not a virtual environment: run them with `bash dev/test.sh`, which builds .venv from "
        "setup.cfg's declared dependencies".format(sys.executable))
    with open(os.path.join(sys.prefix, "pyvenv.cfg"), encoding="utf-8") as f:
        cfg = f.read()
    assert re.search(r"^include-system-site-packages\s*=\s*false", cfg, re.M), cfg


def test_every_imported_module_comes_from_a_declared_distribution():
    declared = _closure(_declared())
    by_module = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for module, where in sorted(_imported_top_level_names().items()):
        if module in stdlib or module in NOT_FROM_PIP or module == "poncho_wq":
            continue
        dists = {canonicalize_name(d) for d in by_module.get(module, ())}
        if not dists:
            if importlib.util.find_spec(module) is None:
                problems.append("{} ({}): not installed; add the distribution that provides it to setup.cfg's test "
                                "extra".format(module, where))
            continue
        if not dists & declared:
            problems.append("{} ({}): installed from {} but declared nowhere in setup.cfg".format(
                module, where, ", ".join(sorted(dists))))
    assert not problems, "; ".join(problems)
