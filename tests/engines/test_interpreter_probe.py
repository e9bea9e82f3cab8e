"""probe_interpreter's in-process path (the running interpreter) must not touch ``sys.stdout``: managers run builds
in threads, and a process-wide stdout redirection captured another thread's output (lost) and could put it into
the probe's JSON. The subprocess path runs the same probe source, and the in-process path is taken only where it
gives the same answer (not inside a venv): asked by the base itself, by a venv of it or by another interpreter,
one answer."""

import json
import os
import subprocess
import sys
import threading

import pytest

from helpers.venvs import tools_last
from poncho_wq.engines.interpreter import _PROBE, _probe_here

#: The interpreter the suite's venv was made from.
BASE = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


class _Collect:
    """A stdout stand-in that keeps every write (the lock keeps writes from two threads whole)."""

    def __init__(self):
        self.parts = []
        self.lock = threading.Lock()

    def write(self, text):
        with self.lock:
            self.parts.append(text)
        return len(text)

    def flush(self):
        pass


def test_in_process_probe_leaves_other_threads_output_alone(monkeypatch):
    # _probe_here itself: the suite runs in a venv, where probe_interpreter asks a subprocess instead.
    expected = _probe_here()
    out = _Collect()
    monkeypatch.setattr(sys, "stdout", out)
    # Switch threads as often as possible, so the printer runs inside the probe's window many times over.
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    stop = threading.Event()
    printed = []

    def printer():
        n = 0
        while not stop.is_set():
            print("line", n)
            printed.append(n)
            n += 1

    thread = threading.Thread(target=printer)
    thread.start()
    answers, errors = [], []
    try:
        for _ in range(300):
            try:
                answers.append(_probe_here())
            except Exception as e:  # the old code: the printer's lines inside the JSON
                errors.append(repr(e))
    finally:
        stop.set()
        thread.join(30)
        sys.setswitchinterval(old_interval)
    assert not thread.is_alive()
    assert not errors, errors[:3]
    assert all(a == expected for a in answers)
    lines = "".join(out.parts).splitlines()
    assert len(printed) > 0
    assert lines == ["line {}".format(n) for n in printed], "the printer's output was lost or reordered"


#: Children that ask probe_interpreter() and print its JSON: run by another interpreter (poncho_wq importable from
#: the end of sys.path, helpers.venvs.tools_last), so that the running interpreter is the one the test chooses.
_ASK = "import json, sys; from poncho_wq.engines.interpreter import probe_interpreter; " \
       "print(json.dumps(probe_interpreter(sys.argv[1])))"


def _ask(python, about, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"))}
    env["PYTHONPATH"] = tools_last(tmp_path)
    r = subprocess.run([python, "-c", _ASK, about], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("base", [BASE, "/usr/bin/python3"], ids=["suite-base", "debian"])
def test_the_answer_about_an_interpreter_does_not_depend_on_who_asks(tmp_path, base):
    """The same base, asked about by itself (in-process, no venv), by a venv made from it (its sys.executable
    resolves to the base: the in-process path once took it, and sysconfig inside a venv answers with the 'venv'
    scheme; Debian's python otherwise uses posix_local: purelib local/lib/python3.X/dist-packages, not
    lib/python3.X/site-packages) and by another interpreter (the subprocess path): one answer. The interpreter base
    cached for it (keyed without purelib_rel) must not depend on whether the manager that prepared it ran in a venv."""
    base = os.path.realpath(base)
    venv = tmp_path / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, stdin=subprocess.DEVNULL,
                   capture_output=True)
    itself = _ask(base, base, tmp_path)
    from_venv = _ask(str(venv / "bin" / "python"), base, tmp_path)
    r = subprocess.run([base, "-I", "-S", "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60, check=True)  # the subprocess path, for any other asker
    other = json.loads(r.stdout)
    assert {k: v for k, v in from_venv.items() if v != itself[k]} == {}
    assert {k: v for k, v in other.items() if v != itself[k]} == {}
