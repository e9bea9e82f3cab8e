"""poncho_wq's own TaskVine unpack mini task (issue 27) on a real ``vine_worker``: environments are unpacked by the
run shim's ``--extract-to`` (pigz when the worker has it, the shim's refusals), not by ``declare_poncho``'s
``tar xf``.  An archive the shim refuses is refused by the exact mini task command too, on the worker, with nothing
written outside its sandbox.  (Run as a plain task: a mini task that fails leaves TaskVine 7.17.1's waiting task
pending for good, see poncho_wq/worker/fetch.sh's vine-stub.)
"""

import io
import os
import tarfile

import pytest

from helpers import drivers
from helpers.parslutil import client_env
from helpers.shimutil import make_prefix, pack

DRIVER = '''
import json, os, sys, tempfile
from ndcctools import taskvine as vine
from poncho_wq.shim import shim_path
from poncho_wq.taskvine import UNPACK_COMMAND, declare_environment

out, port_file, good, hostile = sys.argv[1:5]
m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
t = vine.Task("hello")
t.add_environment(declare_environment(m, good))
t.set_tag("good")
m.submit(t)
t = vine.Task(UNPACK_COMMAND)
t.add_input(m.declare_file(hostile, cache=False), "package.tar.gz")
t.add_input(m.declare_file(shim_path(), cache=False), "poncho_package_run")
t.set_tag("hostile")
m.submit(t)
results = {}
while not m.empty():
    t = m.wait(5)
    if t:
        results[t.tag] = [t.result, t.exit_code, t.std_output]
with open(out, "w") as f:
    json.dump(results, f)
'''


@pytest.mark.e2e
@pytest.mark.parametrize("attack", ["dot-dot", "link"])
def test_unpack_mini_task_unpacks_with_the_shim_and_refuses_what_it_refuses(tmp_path, attack):
    prefix = make_prefix(tmp_path, run_in_env=True)
    good = pack(prefix, tmp_path / ("env-" + "9d" * 16 + ".tar.gz"))
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = str(tmp_path / "hostile.tar.gz")
    with tarfile.open(good) as tin, tarfile.open(hostile, "w:gz") as tout:
        for m in tin.getmembers():
            tout.addfile(m, tin.extractfile(m) if m.isfile() else None)
        if attack == "link":
            link = tarfile.TarInfo("share/out")
            link.type, link.linkname = tarfile.SYMTYPE, str(outside)
            tout.addfile(link)
            names = ["share/out/owned"]
        else:
            names = ["../escaped", "../../escaped"]
        for name in names:
            m = tarfile.TarInfo(name)
            m.size = 2
            tout.addfile(m, io.BytesIO(b"x\n"))

    results, workers = drivers.run_driver(tmp_path, DRIVER, client_env(PONCHO_WQ_CACHE=str(tmp_path / "cache")),
                                          args=[good, hostile], n_workers=1, worker_args=["--keep-workspace"])
    result, code, output = results["good"]
    assert (result, code) == ("success", 0), output
    assert output.startswith("prefix=") and "/ws/cache/" in output, output
    assert sum(workers.debug_lines("via mini task")) == 1  # the environment, by our mini task

    result, code, output = results["hostile"]
    assert code == 3, (result, output)
    assert "poncho_package_run: could not extract package.tar.gz into output" in output, output
    assert list(outside.iterdir()) == []
    found = [os.path.join(d, f) for d, _, fs in os.walk(str(tmp_path)) for f in fs if f in ("escaped", "owned")]
    assert found == [], found
