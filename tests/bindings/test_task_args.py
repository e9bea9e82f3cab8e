"""PonchoTask / PonchoPythonTask / PonchoVineTask argument errors (issue 11, Low): a SpecError naming the argument,
its value and what is accepted, raised before anything is analyzed or built, and no "Exception ignored in
Task.__del__" on stderr. Run in a subprocess per binding (Debian's ``work_queue`` and ``ndcctools.work_queue``),
because the __del__ noise only shows on a real interpreter's stderr when the half-made task is collected; no worker
is needed to construct a task."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from helpers.wqutil import BINDINGS

SCRIPT = r'''
import gc, json, sys
import poncho_wq
from poncho_wq import PonchoError

T, PT = poncho_wq.PonchoTask, poncho_wq.PonchoPythonTask
tarball = sys.argv[1]
cases = {
    "env-int": lambda: T("echo hi", environment=42),
    "env-list": lambda: T("echo hi", environment=["six"]),
    "env-bytes": lambda: T("echo hi", environment=b"x"),
    "env-empty": lambda: T("echo hi", environment=""),
    "cmd-none": lambda: T(None, environment=tarball),
    "cmd-blank": lambda: T("  ", environment=tarball),
    "option": lambda: T("echo hi", environment=tarball, no_such_option=1),
    "missing-tarball": lambda: T("echo hi", environment="/nonexistent/env.tar.gz"),
    "missing-spec": lambda: T("echo hi", environment="/nonexistent/spec.json"),
    "pytask-env": lambda: PT(len, [1], environment=42),
    "pytask-func": lambda: PT("len", [1], environment=tarball),
    "pytask-missing-spec": lambda: PT(len, [1], environment="/nonexistent/spec.json"),
    "ok": lambda: T("echo hi", environment=tarball, cores=1),
}
results = {}
for name, make in cases.items():
    try:
        task = make()
        results[name] = ["constructed", task.command if hasattr(task, "command") else ""]
        del task
    except PonchoError as e:
        results[name] = [type(e).__name__, e.exit_code, str(e)]
    except Exception as e:
        results[name] = ["raw " + type(e).__name__, None, str(e)]
    gc.collect()
if len(sys.argv) > 2:  # TaskVine: the same checks in PonchoVineTask (no manager is needed to refuse them)
    from poncho_wq.taskvine import PonchoVineTask
    for name, args in {"vine-env-int": ("echo hi", 42), "vine-cmd-none": (None, tarball)}.items():
        try:
            PonchoVineTask(None, args[0], environment=args[1])
            results[name] = ["constructed"]
        except PonchoError as e:
            results[name] = [type(e).__name__, e.exit_code, str(e)]
        except Exception as e:
            results[name] = ["raw " + type(e).__name__, None, str(e)]
print(json.dumps(results))
'''

ACCEPTED = 'a tarball path (.tar.gz, .tgz, .tar), a spec (a path to a JSON/YAML file, a dict or a Spec), an ' \
           'Environment, "auto" or None'


@pytest.fixture(params=BINDINGS, scope="module")
def outcome(request, tmp_path_factory):
    """One run of SCRIPT per binding (every case is one call in it), shared by the module's tests."""
    tmp_path = tmp_path_factory.mktemp("task-args")
    tarball = tmp_path / "env.tar.gz"
    with tarfile.open(str(tarball), "w:gz"):
        pass  # a real (empty) tarball: enough to construct a task, which is all this test does
    script = tmp_path / "make_tasks.py"
    script.write_text(SCRIPT)
    args = [sys.executable, str(script), str(tarball)]
    if request.param == "ndcctools.work_queue":
        args.append("taskvine")
    env = dict(os.environ, PONCHO_WQ_BINDING=request.param, PONCHO_WQ_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=str(tmp_path),
                          stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr, request.param


def test_no_exception_ignored_in_del(outcome):
    results, stderr, _ = outcome
    assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr
    assert results["ok"][0] == "constructed" and "poncho_package_run" in results["ok"][1]


@pytest.mark.parametrize("case,shown", [
    ("env-int", "42 (int)"), ("env-list", "['six'] (list)"), ("env-bytes", "b'x' (bytes)"), ("env-empty", "'' (str)"),
])
def test_bad_environment_argument_is_a_spec_error(outcome, case, shown):
    kind, code, msg = outcome[0][case]
    assert (kind, code) == ("SpecError", 1), msg
    assert msg == "PonchoTask environment: {} is not valid; expected {}".format(shown, ACCEPTED)


@pytest.mark.parametrize("case,words", [
    ("cmd-none", ["PonchoTask command: None (NoneType) is not valid", "a shell command string"]),
    ("cmd-blank", ["PonchoTask command: '  ' (str) is not valid"]),
    ("option", ["PonchoTask option no_such_option=", "no specify_no_such_option method"]),
    ("pytask-env", ["PonchoPythonTask environment: 42 (int) is not valid"]),
    ("pytask-func", ["PonchoPythonTask function: 'len' (str) is not valid"]),
])
def test_bad_command_option_and_function_arguments_are_spec_errors(outcome, case, words):
    kind, code, msg = outcome[0][case]
    assert (kind, code) == ("SpecError", 1), msg
    for word in words:
        assert word in msg


@pytest.mark.parametrize("case,words", [
    ("missing-tarball", ["/nonexistent/env.tar.gz"]),
    ("missing-spec", ["/nonexistent/spec.json"]),
    ("pytask-missing-spec", ["/nonexistent/spec.json"]),
])
def test_missing_environment_files_exit_2_without_del_noise(outcome, case, words):
    kind, code, msg = outcome[0][case]
    assert code == 2 and kind in ("InputMissing", "PonchoError"), msg
    for word in words:
        assert word in msg


def test_ponchovinetask_refuses_the_same_arguments(outcome):
    results, _, binding = outcome
    if binding != "ndcctools.work_queue":  # TaskVine comes with the current CCTools only, not Debian's
        assert "vine-env-int" not in results
        return
    assert results["vine-env-int"][:2] == ["SpecError", 1]
    assert results["vine-env-int"][2].startswith("PonchoVineTask environment: 42 (int) is not valid")
    assert results["vine-cmd-none"][2].startswith("PonchoVineTask command: None (NoneType) is not valid")
