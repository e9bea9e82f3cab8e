"""Environments as content-addressed parts on real Work Queue workers of both bindings (PONCHO_WQ_PARTS=1,
issue 28): two environments sharing a big distribution, one worker, one round each: the shared parts travel and
are unpacked once, each environment is assembled once, the tasks see their own versions, relocated."""

import os

from helpers.partenv import make_env
from helpers.projects import job_project
from poncho_wq.archive.parts import load_index
from poncho_wq.deliver.publish import serve

BIG = 6_000_000


def test_two_environments_share_their_big_part_on_a_worker(cluster, tmp_path, e2e_cache):
    d = tmp_path / "envs"
    a = make_env(d, "a1", {"bigpkg": ("1.0", BIG), "small": ("2.0", 1000)})
    b = make_env(d, "b2", {"bigpkg": ("1.0", BIG), "small": ("2.1", 1000)}, extra_file=("poncho/note", "b\n"))
    cache = str(tmp_path / "cache")  # parts are cut into this cache by the manager
    cluster.start_manager("parts_manager.py", ["--environment", a, "--environment", b, "--tasks", "2"],
                          cwd=str(tmp_path), cache_dir=cache, env={"PONCHO_WQ_PARTS": "1"})
    cluster.start_worker(cores=1)
    out = cluster.wait_results()["results"]
    assert [(r["round"], r["return_status"], r["shim_error"]) for r in out] == \
        [(0, 0, None), (0, 0, None), (1, 0, None), (1, 0, None)], out
    for r in out:
        version = "2.0" if r["round"] == 0 else "2.1"
        lines = r["output"].splitlines()
        assert lines[0] == "VERSION = {!r}".format(version)
        assert lines[1] == lines[2][len("prefix="):]  # the placeholder relocated to the assembled prefix
        assert " --part " in r["command"] and r["env"] not in r["command"].split("--part")[1]
    parts_a, parts_b = out[0]["parts"], out[2]["parts"]
    shared = set(parts_a) & set(parts_b)
    roles = {p.name: p.role for p in load_index(cache, out[0]["env"][:-len(".tar.gz")])}
    assert sorted(roles[p] for p in shared) == ["dist:bigpkg", "interpreter"]
    (sent,) = cluster.transfers()
    sent_by_part = {p: sum(n for name, n in sent.items() if name.endswith(p)) for p in set(parts_a) | set(parts_b)}
    assert sent_by_part == {p: 1 for p in sent_by_part}, sent  # every part sent once, the shared ones too
    assert not [name for name in sent if name.endswith(os.path.basename(a)) or name.endswith(os.path.basename(b))]
    (unpacked,) = cluster.unpacked_ids()
    assert sorted(unpacked) == sorted({p[:-len(".tar.gz")] for p in parts_a + parts_b} |
                                      {os.path.basename(x)[:-len(".tar.gz")] for x in (a, b)})


def test_url_mode_workers_fetch_each_part_once(cluster, tmp_path):
    d = tmp_path / "envs"
    a = make_env(d, "a1", {"bigpkg": ("1.0", BIG), "small": ("2.0", 1000)})
    b = make_env(d, "b2", {"bigpkg": ("1.0", BIG), "small": ("2.1", 1000)}, extra_file=("poncho/note", "b\n"))
    pub = tmp_path / "pub"
    pub.mkdir()
    log = tmp_path / "access.log"
    with serve(str(pub), log_path=str(log)) as server:
        env = {"PONCHO_WQ_PARTS": "1", "PONCHO_WQ_PUBLISH_DIR": str(pub), "PONCHO_WQ_PUBLISH_URL": server.url}
        cluster.start_manager("parts_manager.py", ["--environment", a, "--environment", b, "--tasks", "2"],
                              cwd=str(tmp_path), cache_dir=str(tmp_path / "cache"), env=env)
        cluster.start_worker(cores=1)
        out = cluster.wait_results()["results"]
    assert [(r["return_status"], r["shim_error"]) for r in out] == [(0, None)] * 4, out
    assert [r["output"].splitlines()[0] for r in out] == ["VERSION = '2.0'"] * 2 + ["VERSION = '2.1'"] * 2
    parts = set(out[0]["parts"]) | set(out[2]["parts"])
    with open(log) as f:
        gets = [line.split()[3].lstrip("/") for line in f if len(line.split()) > 3]
    assert sorted(g for g in gets if g.startswith("part-")) == sorted(parts)  # each part fetched once
    assert not [g for g in gets if g.startswith("env-")]
    (sent,) = cluster.transfers()
    assert not [name for name in sent if "part-" in name or "env-" in name]  # the manager sent none


def test_python_task_runs_in_an_environment_assembled_from_parts(cluster, tmp_path, e2e_cache, humanize_installed):
    """PonchoPythonTask (a function call, the analyzed environment of tests/e2e/manager.py's function: humanize)
    with PONCHO_WQ_PARTS=1: the function runs in the environment assembled from its parts, and the manager sends
    parts, never the environment's tarball."""
    project = job_project(tmp_path / "project", "import humanize\n", "import humanize\n")
    cluster.start_manager("manager.py", ["--tasks", "2", "--python-task", "--retries", "0"], project, e2e_cache,
                          env={"PONCHO_WQ_PARTS": "1"})
    cluster.start_worker(cores=1)
    out = cluster.wait_results()["results"]
    assert [(r["return_status"], r["shim_error"], r.get("value")) for r in out] == [(0, None, "0"), (0, None, "1")], out
    env_id = out[0]["env"][:-len(".tar.gz")]
    (sent,) = cluster.transfers()
    parts = [n for n in sent if "part-" in n]
    assert parts and all(sent[n] == 1 for n in parts), sent
    assert not [n for n in sent if n.endswith(out[0]["env"])], sent  # the tarball itself never travels
    (unpacked,) = cluster.unpacked_ids()
    assert env_id in unpacked and len([i for i in unpacked if i.startswith("part-")]) == len(parts), unpacked


def test_shared_mode_assembles_from_parts_in_the_shared_root(cluster, tmp_path):
    """PONCHO_WQ_DISTRIBUTION=shared: the parts are published into the shared directory and read from there by
    the shim (--part <shared path>), unpacked and assembled once in total in the shared root, for two workers; the
    manager sends neither parts nor tarballs."""
    d = tmp_path / "envs"
    a = make_env(d, "a1", {"bigpkg": ("1.0", BIG), "small": ("2.0", 1000)})
    b = make_env(d, "b2", {"bigpkg": ("1.0", BIG), "small": ("2.1", 1000)}, extra_file=("poncho/note", "b\n"))
    shared = tmp_path / "shared"
    env = {"PONCHO_WQ_PARTS": "1", "PONCHO_WQ_DISTRIBUTION": "shared", "PONCHO_WQ_PUBLISH_DIR": str(shared)}
    cluster.start_manager("parts_manager.py", ["--environment", a, "--environment", b, "--tasks", "2"],
                          cwd=str(tmp_path), cache_dir=str(tmp_path / "cache"), env=env)
    cluster.start_worker(cores=1)
    cluster.start_worker(cores=1)
    out = cluster.wait_results()["results"]
    assert [(r["return_status"], r["shim_error"]) for r in out] == [(0, None)] * 4, out
    for r in out:
        version = "2.0" if r["round"] == 0 else "2.1"
        lines = r["output"].splitlines()
        assert lines[0] == "VERSION = {!r}".format(version)
        assert lines[2] == "prefix={}/envs/{}".format(shared, r["env"][:-len(".tar.gz")])
        assert lines[1] == lines[2][len("prefix="):]  # relocated to the assembled prefix in the shared root
        assert " --part {}/part-".format(shared) in r["command"]
    parts = set(out[0]["parts"]) | set(out[2]["parts"])
    assert {os.path.basename(p) for p in parts} <= set(os.listdir(shared))
    for sent in cluster.transfers():
        assert not [name for name in sent if "part-" in name or "env-" in name], sent
    with open(shared / "envs" / "unpack.log") as f:
        ids = [line.split()[2] for line in f if len(line.split()) >= 3]
    envs = {r["env"][:-len(".tar.gz")] for r in out}
    assert sorted(ids) == sorted({os.path.basename(p)[:-len(".tar.gz")] for p in parts} | envs)  # once in total
