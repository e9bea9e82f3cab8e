"""A manager script ends quietly: nothing on stderr at interpreter exit (issue 25).

Every manager run used to end with ``Exception ignored in ... PonchoTask.__del__ ... TypeError: 'NoneType' object is
not callable`` once per task still referenced plus once for the queue: at exit Python wipes module globals before it
frees what ``__main__`` still holds, and Debian's binding calls its module's functions from ``__del__``. Real queue,
real worker, both bindings; tasks kept in a list, the last one in a variable, the queue in a global.
"""

import subprocess
import sys
import time

import pytest

from helpers.wqutil import (BINDINGS, fixed_disk_args, manager_env, start_worker_process, stop_worker_process,
                            worker_binary)

MANAGER = r'''
import os, sys
from poncho_wq import PonchoTask, PonchoPythonTask, wq

binding = wq.load()
q = binding.WorkQueue(port=0)
with open("port", "w") as f:
    f.write(str(q.port))
tasks = [PonchoTask("python3 job.py {}".format(i), environment={"pip": []}) for i in range(3)]
tasks.append(binding.Task("echo plain"))
for t in tasks:
    q.submit(t)
done = []
while not q.empty():
    t = q.wait(5)
    if t:
        done.append(t)
        print("RESULT", t.return_status, (t.output if hasattr(t, "output") else t.std_output).strip())
        sys.stdout.flush()
'''


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_manager_script_leaves_stderr_empty_at_exit(tmp_path, binding, e2e_cache):
    (tmp_path / "job.py").write_text("import sys\nprint('job', sys.argv[1])\n")
    (tmp_path / "manager.py").write_text(MANAGER)
    env = manager_env(binding, e2e_cache)
    proc = subprocess.Popen([sys.executable, "manager.py"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = None
    try:
        for _ in range(600):
            if (tmp_path / "port").exists() and (tmp_path / "port").read_text():
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        port = (tmp_path / "port").read_text()
        worker = start_worker_process(worker_binary(binding), port, str(tmp_path / "worker"),
                                      extra=fixed_disk_args(tmp_path))  # as Cluster.start_worker's
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        if worker is not None:
            stop_worker_process(worker)
    assert proc.returncode == 0, err
    assert sorted(line for line in out.splitlines() if line.startswith("RESULT")) == [
        "RESULT 0 job 0", "RESULT 0 job 1", "RESULT 0 job 2", "RESULT 0 plain"], out + err
    # ndcctools prints two lines about plain-text communication when the queue is made: not at exit
    noise = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert noise == [], err
