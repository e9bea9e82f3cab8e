"""What a command line loads before it answers ``--help``, ``--version`` or a bad argument: the parsers
(poncho_wq/cli/parsers.py) and nothing of the library; a command's module (the analyzer, the engines) is imported
only after its arguments parsed (poncho_wq.cli.main.COMMANDS). Counted in a fresh interpreter that runs the
installed console script, never timed."""

import json
import subprocess
import sys

import pytest

from helpers.cli import script

#: What answering --help may load: the package's light top, the command line's entry, parsers and helpers.
STARTUP = {"poncho_wq", "poncho_wq.cli", "poncho_wq.cli.common", "poncho_wq.cli.main", "poncho_wq.cli.parsers",
           "poncho_wq.config", "poncho_wq.errors", "poncho_wq.target", "poncho_wq.version"}

_PROBE = r"""
import gc, json, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({"code": code, "frozen": gc.get_freeze_count(), "modules": sorted(
    m for m in sys.modules if m.split(".")[0] in ("poncho_wq", "packaging", "conda_pack", "requests"))}),
    file=sys.stderr)
"""


def run_script(name, *args, cwd=None):
    """What console script *name* reported as it exited: its exit code, how many objects it left frozen, and the
    poncho_wq / heavy third-party modules it loaded."""
    r = subprocess.run([sys.executable, "-c", _PROBE, script(name)] + list(args), capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL, cwd=cwd)
    return json.loads(r.stderr.strip().splitlines()[-1])


def loaded(name, *args, cwd=None):
    """(exit code, the poncho_wq / heavy third-party modules loaded) of running console script *name*."""
    doc = run_script(name, *args, cwd=cwd)
    return doc["code"], set(doc["modules"])


@pytest.mark.parametrize("name, args", [
    ("poncho_package_analyze", ["--help"]), ("python_package_analyze", ["--version"]),
    ("poncho_package_create", ["--help"]), ("python_package_create", ["--no-such-option"]),
    ("poncho_package_analyze", ["--toplevel", "--function", "f", "job.py", "out.json"]),
    ("poncho_wq", ["--help"]), ("poncho_wq", ["create", "--help"]), ("poncho_wq", ["cache", "list", "--help"]),
    ("poncho_wq", ["cache"]), ("poncho_wq", ["inspect", "--help"]), ("poncho_wq", ["diff", "a.tar.gz"]),
    ("poncho_wq", ["shim", "--help"]),
])
def test_help_and_bad_arguments_load_only_the_parsers(name, args):
    code, modules = loaded(name, *args)
    assert code in (0, 1, 2, None), code
    assert modules <= STARTUP, sorted(modules - STARTUP)


def test_a_command_loads_its_module_once_its_arguments_parsed(tmp_path):
    """The counterpart: the same entry point does load the library when there is work to do (a missing spec
    file is only found by the command itself), so the test above would see a module imported too early."""
    code, modules = loaded("poncho_package_create", "missing.json", "out.tar.gz", cwd=str(tmp_path))
    assert code == 2
    assert {"poncho_wq.cli.create", "poncho_wq.engines", "packaging"} <= modules


def test_a_command_run_as_its_program_freezes_the_collector_before_it_exits(tmp_path):
    """The console script's last step (poncho_wq.cli.main.exiting): the objects left are frozen, so that the
    collections of the interpreter's shutdown skip them."""
    doc = run_script("poncho_wq", "cache", "--cache-dir", str(tmp_path), "list")
    assert doc["code"] == 0 and doc["frozen"] > 1000, doc


def test_a_command_called_with_arguments_leaves_the_collector_alone(tmp_path):
    """An embedding program (or a test) that calls main(argv) keeps its own process's collector as it was."""
    code = ("import gc, sys; from poncho_wq.cli.main import main; "
            "rc = main(['cache', '--cache-dir', sys.argv[1], 'list']); print(rc, gc.get_freeze_count(), gc.isenabled())")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.stdout.split()[-3:] == ["0", "0", "True"], r.stdout + r.stderr


def test_create_does_not_load_the_installation_model(tmp_path):
    """A build reads conda-meta through poncho_wq.analysis.condameta; the analysis' installation model (and the
    importlib.metadata and email it loads: about 15 ms) is for analyses and the current engine."""
    code, modules = loaded("poncho_package_create", "missing.json", "out.tar.gz", cwd=str(tmp_path))
    assert code == 2
    assert "poncho_wq.analysis.condameta" in modules and "poncho_wq.analysis.installation" not in modules
