"""probe_interpreter's in-process path (the running interpreter) must not touch ``sys.stdout``: managers run builds
in threads, and a process-wide stdout redirection captured another thread's output (lost) and could put it into
the probe's JSON. The subprocess path runs the same probe source, so both answers agree."""

import json
import subprocess
import sys
import threading

from poncho_wq.engines.interpreter import _PROBE, probe_interpreter


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
    expected = probe_interpreter.__wrapped__(sys.executable)
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
                answers.append(probe_interpreter.__wrapped__(sys.executable))
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


def test_subprocess_probe_agrees_with_in_process():
    r = subprocess.run([sys.executable, "-I", "-S", "-c", _PROBE], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60, check=True)
    assert json.loads(r.stdout) == probe_interpreter.__wrapped__(sys.executable)
