"""TaskVine distribution (issue 16) on real vine_workers that start together: ``seed`` sends the tarball from the
manager once and the other workers get it from peers; ``url`` publishes it and each worker fetches it itself (a
``curl -f`` mini task); ``url`` + ``seed`` makes one GET in all. Counted from the manager's own statistics, its
transaction log and the local HTTP server's access log."""

import json
import os
import subprocess
import sys

import pytest

from helpers.drivers import run_driver
from helpers.paths import HELPERS, path_without

pytestmark = pytest.mark.e2e

N_WORKERS = 3

DRIVER = r"""
import json, os, sys
from ndcctools import taskvine as vine
from poncho_wq.deliver.publish import Distribution, serve
from poncho_wq.taskvine import declare_environment, shim_error_from

out, port_file, tarball, mode = sys.argv[1:5]
n = int(sys.argv[5])
m = vine.Manager(port=0, run_info_path=os.path.abspath("runinfo"), run_info_template="x")
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
while m.stats.workers_connected < n:
    m.wait(1)
server, dist = None, "direct"
if mode.startswith("url"):
    os.makedirs("pub", exist_ok=True)
    server = serve("pub", log_path=os.path.abspath("access.log"))
    dist = Distribution("url", os.path.abspath("pub"), server.url)
env = declare_environment(m, tarball, distribution=dist, seed=120 if mode.endswith("seed") else 0)
if mode == "url404":
    os.unlink(os.path.join("pub", os.path.basename(tarball)))  # published, then gone: every GET is a 404
for i in range(2 * n):
    t = vine.Task("python3 -c 'import six; print(six.__name__)'")
    t.add_environment(env)
    t.set_cores(1)
    m.submit(t)
results = []
while not m.empty():
    t = m.wait(5)
    if t is not None:
        results.append([t.exit_code, t.std_output, shim_error_from(t.exit_code, t.std_output)])
if server:
    server.stop()
gets = 0
if os.path.exists("access.log"):
    with open("access.log") as f:
        gets = sum(1 for line in f if line.split()[2:5] == ["GET", "/" + os.path.basename(tarball), "200"])
size = os.path.getsize(tarball)
copies = 0
with open(os.path.join(m.logging_directory, "transactions")) as f:
    for line in f:
        p = line.split()
        if len(p) > 6 and p[4] == "CACHE_UPDATE" and int(p[6]) == size:
            copies += 1
json.dump({"results": results, "egress": m.stats.bytes_sent, "size": size, "gets": gets, "copies": copies},
          open(out, "w"))
"""


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    """A small real environment (six), under a content-addressed name as publish() expects."""
    d = tmp_path_factory.mktemp("vine-dist")
    spec = d / "spec.json"
    spec.write_text(json.dumps({"python": "{}.{}".format(*sys.version_info[:2]), "pip": ["six"]}))
    out = d / "env-0123456789abcdef0123456789abcdef.tar.gz"
    subprocess.run([sys.executable, "-m", "poncho_wq", "create", "-q", str(spec), str(out)], check=True,
                   stdin=subprocess.DEVNULL)
    return out


def drive(tmp_path, tarball, mode, ok=True):
    env = dict(os.environ)
    env.pop("PONCHO_WQ_PUBLISH_DIR", None)
    env.pop("PONCHO_WQ_DISTRIBUTION", None)
    out, _workers = run_driver(tmp_path, DRIVER, env, args=(tarball, mode, N_WORKERS), n_workers=N_WORKERS,
                               worker_args=("--cores", "1"), timeout=300)
    assert len(out["results"]) == 2 * N_WORKERS
    for code, output, _shim_error in out["results"]:
        assert not ok or (code == 0 and output.strip() == "six"), output
    return out


def test_seed_sends_the_tarball_once_and_peers_spread_it(tmp_path, tarball):
    out = drive(tmp_path, tarball, "seed")
    size = out["size"]
    # Without the seed a batch start costs N x the tarball (the manager sends every worker its copy).
    assert out["egress"] < 1.5 * size, out
    # The seed worker's own input and temp, then copies from it to the others (TaskVine may instead hand a late
    # worker the unpacked environment from a peer, so not necessarily one per worker).
    assert out["copies"] >= 3, out


def test_url_mode_each_worker_fetches_the_published_tarball(tmp_path, tarball):
    out = drive(tmp_path, tarball, "url")
    assert out["egress"] < 0.05 * out["size"], out
    assert out["gets"] == N_WORKERS, out
    assert (tmp_path / "pub" / tarball.name).is_file()


def test_url_and_seed_fetch_once_in_all(tmp_path, tarball):
    out = drive(tmp_path, tarball, "url+seed")
    assert out["egress"] < 0.05 * out["size"], out
    assert out["gets"] == 1, out


def test_url_that_404s_fails_each_task_with_a_shim_error_instead_of_hanging(tmp_path, tarball):
    # TaskVine 7.17.1 leaves a task whose input cannot be fetched pending for good; the fetch mini task turns the
    # failure into a stub environment whose run_in_env exits 2 (an HTTP error) naming the URL and curl's error.
    out = drive(tmp_path, tarball, "url404", ok=False)
    for code, _output, shim_error in out["results"]:
        assert code == 2 and shim_error is not None, out
        assert "could not fetch env-" in shim_error[1] and " from http://" in shim_error[1], shim_error
        assert "error: 404" in shim_error[1], shim_error


# -- url mode against a hostile server and on workers without curl (issues 25 and 29) ----------------------------
HOSTILE_DRIVER = r"""
import json, os, subprocess, sys, time
from ndcctools import taskvine as vine
from poncho_wq.deliver.publish import serve
from poncho_wq.taskvine import PonchoVineTask

out, port_file, tarball, mode, hostile = sys.argv[1:6]
m = vine.Manager(port=0, run_info_path=os.path.abspath("runinfo"), run_info_template="x")
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
while m.stats.workers_connected < 1:
    m.wait(1)
os.makedirs("pub", exist_ok=True)
if mode in ("lie", "cut-once"):
    server = subprocess.Popen([sys.executable, hostile, "pub", "hostile.port", os.path.abspath("gets.log"), mode])
    while not os.path.exists("hostile.port"):
        time.sleep(0.05)
    url = "http://127.0.0.1:{}/".format(open("hostile.port").read())
else:
    server = serve("pub")
    url = server.url
os.environ.update(PONCHO_WQ_PUBLISH_DIR=os.path.abspath("pub"), PONCHO_WQ_PUBLISH_URL=url)
rounds = []
for _ in range(2 if mode == "cut-once" else 1):  # cut-once: the first fetch is cut, a second round follows
    t = PonchoVineTask(m, "python3 -c 'import six; print(six.__name__)'", environment=tarball, cores=1)
    m.submit(t)
    while not m.empty():
        done = m.wait(5)
        if done is not None:
            err = done.shim_error  # reading it undeclares an environment whose fetch failed
            rounds.append([done.exit_code, done.std_output, list(err) if err else None])
server.kill() if hasattr(server, "kill") else server.stop()
json.dump({"rounds": rounds, "url": url, "name": os.path.basename(tarball)}, open(out, "w"))
"""
HOSTILE = os.path.join(HELPERS, "hostile_server.py")


def drive_hostile(tmp_path, tarball, mode, worker_path=None):
    env = dict(os.environ)
    for var in ("PONCHO_WQ_PUBLISH_DIR", "PONCHO_WQ_DISTRIBUTION", "PONCHO_WQ_PUBLISH_URL"):
        env.pop(var, None)
    out, _workers = run_driver(tmp_path, HOSTILE_DRIVER, env, args=(tarball, mode, HOSTILE), n_workers=1,
                               worker_args=("--cores", "1"), timeout=300,
                               worker_env={"PATH": worker_path} if worker_path else None)
    return out


def test_url_mode_a_lying_server_is_exit_3_and_nothing_of_it_runs(tmp_path, tarball):
    out = drive_hostile(tmp_path, tarball, "lie")
    ((code, output, shim_error),) = out["rounds"]
    assert "INJECTED-ACTIVATION" not in output
    assert code == 3 and shim_error and shim_error[0] == 3, out
    assert out["url"] + out["name"] in shim_error[1] and "published" in shim_error[1], shim_error


def test_url_mode_a_cut_fetch_fails_one_task_and_the_next_fetches_again(tmp_path, tarball):
    out = drive_hostile(tmp_path, tarball, "cut-once")
    (first, second) = out["rounds"]
    assert first[0] == 3 and first[2] and out["url"] + out["name"] in first[2][1], first
    assert second[0] == 0 and second[1].strip() == "six" and second[2] is None, second
    gets = [ln for ln in (tmp_path / "gets.log").read_text().splitlines() if ln.startswith("GET /env-")]
    assert len(gets) == 2, gets


@pytest.mark.parametrize("missing", [("curl",), ("curl", "wget", "busybox")])
def test_url_mode_on_a_worker_without_curl(tmp_path, tarball, missing):
    out = drive_hostile(tmp_path, tarball, "serve", path_without(tmp_path, *missing))
    ((code, output, shim_error),) = out["rounds"]
    if missing == ("curl",):
        assert code == 0 and output.strip() == "six", out
    else:
        assert code == 4 and shim_error and shim_error[0] == 4, out
        assert out["url"] + out["name"] in shim_error[1] and "wget" in shim_error[1], shim_error
