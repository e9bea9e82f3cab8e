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
from helpers.partenv import make_env
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


PARTS_DRIVER = '''
import json, os, sys, tempfile
from ndcctools import taskvine as vine
from poncho_wq.archive.parts import load_index
from poncho_wq.assemble.environment import as_environment
from poncho_wq.config import settings
from poncho_wq.taskvine import declare_environment

out, port_file = sys.argv[1:3]
m = vine.Manager(port=0, run_info_path=os.path.join(os.path.dirname(out), "runinfo"))
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
site = "$CONDA_PREFIX/lib/python3.11/site-packages"
results = []
for tarball in sys.argv[3:]:
    t = vine.Task("sh -c 'cat {0}/small/__init__.py {0}/bigpkg/where.txt; echo prefix=$CONDA_PREFIX'".format(site))
    t.add_environment(declare_environment(m, tarball))
    m.submit(t)
    while not m.empty():
        t = m.wait(5)
        if t:
            env_id = as_environment(tarball).remote_name[:-len(".tar.gz")]
            parts = [p.name for p in load_index(settings().cache_dir, env_id)]
            results.append([t.result, t.exit_code, t.std_output, parts])
with open(out, "w") as f:
    json.dump(results, f)
'''


@pytest.mark.e2e
def test_parts_travel_once_and_each_environment_is_assembled_from_them(tmp_path):
    """PONCHO_WQ_PARTS=1 on TaskVine (issue 28): two environments sharing a big distribution, one vine_worker, one
    after the other: every part is sent once (the shared ones too), never a tarball; each part is unpacked once in
    the shim's per-worker root; each environment is one mini task, relocated at its place in TaskVine's cache."""
    d = tmp_path / "envs"
    a = make_env(d, "a1", {"bigpkg": ("1.0", 6_000_000), "small": ("2.0", 1000)}, run_in_env=True)
    b = make_env(d, "b2", {"bigpkg": ("1.0", 6_000_000), "small": ("2.1", 1000)}, extra_file=("poncho/note", "b\n"),
                 run_in_env=True)
    env = client_env(PONCHO_WQ_CACHE=str(tmp_path / "cache"), PONCHO_WQ_PARTS="1")
    root = tmp_path / "root"  # the shim's per-worker root (by default beside the worker's workspace, else /tmp)
    results, workers = drivers.run_driver(tmp_path, PARTS_DRIVER, env, args=[a, b], n_workers=1,
                                          worker_args=["--keep-workspace"], worker_env={"PONCHO_ENV_DIR": str(root)})
    assert [(r[0], r[1]) for r in results] == [("success", 0)] * 2, results
    for (_, _, output, _), version in zip(results, ("2.0", "2.1")):
        lines = output.splitlines()
        assert lines[0] == "VERSION = {!r}".format(version) and "/ws/cache/" in lines[-1], output
        assert lines[1] == lines[-1][len("prefix="):], output  # the placeholder relocated to the final prefix
    parts_a, parts_b = results[0][3], results[1][3]
    assert len(set(parts_a) & set(parts_b)) == 2  # the interpreter and bigpkg
    for top, _, files in os.walk(str(tmp_path / "runinfo")):
        if "transactions" in files:
            with open(os.path.join(top, "transactions")) as f:
                sent = [line.split() for line in f if " TRANSFER INPUT " in line]
    # The shim and each distinct part, once; nothing else (no tarball).
    assert len(sent) == len(set(parts_a) | set(parts_b)) + 1, sent
    with open(root / "unpack.log") as f:
        ids = sorted(line.split()[2] for line in f)
    assert ids == sorted(p[:-len(".tar.gz")] for p in set(parts_a) | set(parts_b))
    assert sum(workers.debug_lines("via mini task")) == 2


URL_PARTS_DRIVER = """
import json, os, sys
from ndcctools import taskvine as vine
from poncho_wq.archive.parts import load_index
from poncho_wq.assemble.environment import as_environment
from poncho_wq.config import settings
from poncho_wq.deliver.publish import Distribution, serve
from poncho_wq.taskvine import declare_environment, forget_environment, shim_error_from

out, port_file, a, b = sys.argv[1:5]
m = vine.Manager(port=0, run_info_path=os.path.abspath("runinfo"))
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
os.makedirs("pub")
server = serve("pub", log_path=os.path.abspath("access.log"))
dist = Distribution("url", os.path.abspath("pub"), server.url)
site = "$CONDA_PREFIX/lib/python3.11/site-packages"
parts, results, env = {}, [], None
for tarball in (a, b, b):
    if env is not None and results[-1][2]:  # what PonchoVineTask.shim_error does (declaring publishes the part again)
        forget_environment(m, tarball, env, results[-1][2][1])
    env = declare_environment(m, tarball, distribution=dist)
    parts[tarball] = [p.name for p in load_index(settings().cache_dir, as_environment(tarball).remote_name[:-7])]
    if tarball == b and len(results) == 1:  # b's own small part: published, then gone (every GET of it a 404)
        gone = [p for p in parts[b] if p not in parts[a]][-1]
        os.unlink(os.path.join("pub", gone))
    t = vine.Task("sh -c 'cat {0}/small/__init__.py {0}/bigpkg/where.txt'".format(site))
    t.add_environment(env)
    m.submit(t)
    while not m.empty():
        t = m.wait(5)
        if t:
            results.append([t.exit_code, t.std_output, shim_error_from(t.exit_code, t.std_output)])
    if len(results) == 2:
        unpacked = sorted(n for n in os.listdir(os.environ["ROOT"]) if n.startswith("part-"))
server.stop()
with open("access.log") as f:
    gets = [line.split()[2:5] for line in f]
with open(out, "w") as f:
    json.dump({"results": results, "parts": [parts[a], parts[b]], "gone": gone, "gets": gets,
               "egress": m.stats.bytes_sent, "unpacked": unpacked}, f)
"""


@pytest.mark.e2e
def test_url_mode_parts_are_fetched_once_and_a_failed_fetch_is_a_stub_not_a_part(tmp_path):
    """PONCHO_WQ_PARTS=1 in url mode on TaskVine: each part published and fetched by its own mini task, once
    (shared parts too); a part that 404s fails the environment's task with the shim error (exit 2, the part's name
    and URL) and is never unpacked into the shim's per-worker root (no part-<hex> made of a failure note); once the
    environment is forgotten (as PonchoVineTask.shim_error does) and the part published again, the next task
    fetches that part only, and succeeds."""
    d = tmp_path / "envs"
    a = make_env(d, "a1", {"bigpkg": ("1.0", 3_000_000), "small": ("2.0", 1000)}, run_in_env=True)
    b = make_env(d, "b2", {"bigpkg": ("1.0", 3_000_000), "small": ("2.1", 1000)}, run_in_env=True)
    root = tmp_path / "root"
    env = client_env(PONCHO_WQ_CACHE=str(tmp_path / "cache"), PONCHO_WQ_PARTS="1", ROOT=str(root))
    # timeout: a mini task that fails (the old shim unpacking a note) leaves the task pending for good
    out, _workers = drivers.run_driver(tmp_path, URL_PARTS_DRIVER, env, args=[a, b], n_workers=1, timeout=120,
                                       worker_env={"PONCHO_ENV_DIR": str(root)})
    (code_a, output_a, _), (code_b, _, error_b), (code_c, output_c, _) = out["results"]
    assert code_a == 0 and output_a.startswith("VERSION = '2.0'"), out
    gone = out["gone"]
    assert code_b == 2 and error_b is not None, out
    assert error_b[1].startswith("could not fetch {} from http://".format(gone)) and "404" in error_b[1], error_b
    parts_a, parts_b = out["parts"]
    assert sorted(out["unpacked"]) == sorted(p[:-len(".tar.gz")] for p in parts_a)  # b's good parts: not even those
    assert code_c == 0 and output_c.startswith("VERSION = '2.1'"), out
    assert sorted(g[1][1:] for g in out["gets"] if g[2] == "200") == sorted(set(parts_a) | set(parts_b)), \
        out["gets"]  # once each: the other parts were not fetched again
    assert [g[1][1:] for g in out["gets"] if g[2] == "404"] == [gone], out["gets"]
    assert out["egress"] < 1_000_000, out  # the manager sent the shim and the tasks, never a part
