"""TaskVine's path relocates an environment once per worker, at its final place (issue 14), on real
``vine_worker``s: TaskVine's mini task unpacks the tarball as ``output`` in a sandbox and calls
``output/bin/run_in_env`` with no argument, then moves ``output`` into its cache; tasks run
``__vine_env_<id>/bin/run_in_env <cmd>`` through a symlink.  The relocator appends a line per relocation to
``<env>/.poncho_relocations``, which moves with the directory, so a relocation in the sandbox would be counted
too.  And the floor check (issue 19), which runs in the task's call rather than the mini task, reaches the
manager as the task's ``shim_error``.
"""

import os
import shutil

import pytest

from helpers import drivers
from helpers.parslutil import client_env
from helpers.shimutil import make_prefix, pack
from poncho_wq.archive.floor import FLOOR_MEMBER, write_floor
from poncho_wq.archive.pack import pack_prefix

DRIVER = '''
import json, os, sys, tempfile
from ndcctools import taskvine as vine
from poncho_wq.taskvine import PonchoVineTask, declare_environment

out, port_file, tarball, foreign = sys.argv[1:5]
m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
env = declare_environment(m, tarball)
for i in range(8):
    t = vine.Task("sh -c 'hello; cat \\"$CONDA_PREFIX/.poncho_relocations\\"'")
    t.add_environment(env)
    t.set_cores(1)
    t.set_tag("ok{}".format(i))
    m.submit(t)
m.submit(PonchoVineTask(m, "hello", environment=foreign, cores=1, tag="foreign"))
results = {}
while not m.empty():
    t = m.wait(5)
    if t:
        results[t.tag] = [t.result, t.exit_code, t.std_output, getattr(t, "shim_error", None)]
with open(out, "w") as f:
    json.dump(results, f)
'''


@pytest.mark.e2e
def test_each_worker_relocates_once_at_the_final_place(tmp_path):
    prefix = make_prefix(tmp_path, run_in_env=True)
    tarball = pack(prefix, tmp_path / "env.tar.gz")
    # A poncho_wq archive whose recorded floor is another architecture (aarch64).
    foreign_prefix = make_prefix(tmp_path, "foreign", run_in_env=True)
    write_floor(foreign_prefix)
    with open(os.path.join(foreign_prefix, FLOOR_MEMBER), "a") as f:
        f.write("machine=aarch64\n")  # the last value read wins
    foreign = str(tmp_path / ("env-" + "f" * 32 + ".tar.gz"))
    pack_prefix(foreign_prefix, foreign, n_threads=1)
    shutil.rmtree(prefix)
    shutil.rmtree(foreign_prefix)

    env = client_env(PONCHO_WQ_CACHE=str(tmp_path / "cache"))
    results, workers = drivers.run_driver(tmp_path, DRIVER, env, args=[tarball, foreign],
                                          worker_args=["--keep-workspace"])
    ok = {tag: r for tag, r in results.items() if tag.startswith("ok")}
    assert len(ok) == 8
    for tag, (result, code, output, _) in ok.items():
        assert (result, code) == ("success", 0), (tag, output)
        assert output.startswith("prefix=") and "/ws/cache/" in output, output

    # The floor line, from the task's own call of run_in_env, in shim_error; nothing relocated for it.
    result, code, output, shim_error = results["foreign"]
    assert code == 4, output
    assert shim_error and shim_error[0] == 4, output
    assert "was built for aarch64 and cannot run on this {} worker".format(os.uname().machine) in shim_error[1]

    # The relocation log as each task saw it (TaskVine's manager has the workers delete their cache when it
    # ends, so the tasks report it): one line, from the placeholder to the cache directory the task ran in.
    by_worker = {}
    for tag, (_, _, output, _) in ok.items():
        first, *log = output.strip().splitlines()
        final = first[len("prefix="):]
        assert len(log) == 1, (tag, output)  # once per worker, however many tasks (and concurrent first tasks)
        epoch, pid, old, new = log[0].split()
        assert (old, new) == ("(placeholder)", final), (tag, output)
        by_worker.setdefault(final, set()).add((epoch, pid))
    # Every task of a worker saw the same relocation (one per worker), and no worker relocated more than once.
    assert all(len(v) == 1 for v in by_worker.values()), by_worker
    assert 1 <= len(by_worker) <= len(workers.procs), by_worker
    # One mini task per environment and worker: each environment that ran there, and the foreign one's.
    assert sum(workers.debug_lines("via mini task")) == len(by_worker) + 1
