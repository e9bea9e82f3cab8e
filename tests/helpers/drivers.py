"""Running a manager script ("driver") against real local workers, for the client tests (TaskVine, Work Queue)."""

import json
import os
import subprocess
import sys
import time

from helpers.parslutil import Workers, tail
from helpers.wqutil import cctools_bin


def run_driver(tmp_path, source, env, worker="vine_worker", args=(), n_workers=2, worker_args=(), files=None,
               timeout=600, python=None, worker_env=None):
    """Run *source* as ``driver.py out.json port-file *args`` in *tmp_path* (with *files*, ``{relative name:
    text}``, written beside it); once it has written its port, start *n_workers* scrubbed *worker* processes
    (a CCTools binary name) against it, with *worker_env* added to their scrubbed environment. *python*: the
    driver's interpreter (default: this one). Returns ``(the JSON the driver wrote to out.json, Workers)``; the driver's
    log ends any assertion message."""
    (tmp_path / "driver.py").write_text(source)
    for name, text in (files or {}).items():
        os.makedirs(os.path.dirname(str(tmp_path / name)), exist_ok=True)
        (tmp_path / name).write_text(text)
    out, port_file, log = tmp_path / "out.json", tmp_path / "port", tmp_path / "driver.log"
    with open(str(log), "w") as logf:
        proc = subprocess.Popen([str(python or sys.executable), "driver.py", str(out), str(port_file)] + [str(a) for a in args],
                                cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT)
    workers = Workers(tmp_path / "workers")
    try:
        deadline = time.time() + timeout
        while not port_file.exists():
            assert proc.poll() is None, "driver exited early:\n" + tail(str(log))
            assert time.time() < deadline, "driver did not start:\n" + tail(str(log))
            time.sleep(0.1)
        workers.start(cctools_bin(worker), int(port_file.read_text()), n=n_workers, extra=list(worker_args),
                      env=worker_env)
        try:
            proc.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            raise AssertionError("driver did not finish:\n" + tail(str(log)))
        assert proc.returncode == 0, tail(str(log))
        with open(str(out)) as f:
            return json.load(f), workers
    finally:
        workers.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
