"""What a manager process loads before its first submit when the environment needs no analysis and no build
(issue 27): ``import poncho_wq.task`` and a ``PonchoTask`` of a prebuilt tarball load neither the analysis nor the
builders, the code layers, the parts cutter or the packer. A second workflow on warm workers paid 0.15 s (290
modules) for them before its first task, 5-7x a warm rerun. Counted in a fresh interpreter, never timed (the
deferred imports are named in tests/test_structure.py, LAZY_INTERNAL)."""

import json
import subprocess
import sys

#: Loaded only to analyze, build, cut parts or give a task code: never by a task of a prebuilt tarball.
HEAVY = ("poncho_wq.analysis", "poncho_wq.engines", "poncho_wq.archive.pack", "poncho_wq.archive.parts",
         "poncho_wq.archive.lock", "poncho_wq.archive.basemember", "poncho_wq.assemble.layers",
         "poncho_wq.assemble.project", "conda_pack", "requests", "rattler", "stdlib_list", "asyncio",
         "importlib.metadata")
#: The light path's own modules: 27 when this test was written (62 before issue 27). A new one is fine if the
#: task path needs it; raise this with the reason in the commit.
MAX_PONCHO_MODULES = 30

_PROBE = r"""
import json, sys
exec(sys.argv[2])
before = set(sys.modules)
exec(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded(code, cwd=None, setup=""):
    """The modules *code* loads in a fresh interpreter, after *setup* ran (what *setup* loads is not counted)."""
    r = subprocess.run([sys.executable, "-c", _PROBE, code, setup], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def _heavy(modules):
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_import_of_the_task_module_loads_no_builder():
    modules = loaded("import poncho_wq.task")
    assert _heavy(modules) == []
    ours = [m for m in modules if m.split(".")[0] == "poncho_wq"]
    assert len(ours) <= MAX_PONCHO_MODULES, sorted(ours)


def test_a_task_of_a_prebuilt_tarball_loads_no_builder(tmp_path):
    """The whole submission path up to the Task object (direct distribution), in a fresh process; the counterpart
    (the same probe with a spec loads the builders) shows the probe sees a deferred import."""
    tarball = tmp_path / ("env-" + "ab" * 16 + ".tar.gz")
    tarball.write_bytes(b"not read: the name gives the environment's id")
    make = ("import poncho_wq; t = poncho_wq.PonchoTask('echo hi', environment={!r}); "
            "assert 'poncho_package_run' in t.command, t.command").format(str(tarball))
    # The Work Queue binding is loaded first: what it imports is its own (Debian's work_queue imports distutils,
    # which setuptools' shim answers with importlib.metadata), not the submission path's.
    modules = loaded(make, cwd=str(tmp_path), setup="from poncho_wq import wq; wq.load()")
    assert "poncho_wq.task" in modules
    assert _heavy(modules) == []
    spec = "import poncho_wq.assemble.environment as e; e.Environment(spec=e.parse_spec({'pip': ['six']}))"
    assert "poncho_wq.engines" in loaded(spec, cwd=str(tmp_path))
