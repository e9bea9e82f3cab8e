"""run_in_env, the worker-side wrapper conda-pack tarballs carry (bin/run_in_env): regressions of a hostile review of
the worker scripts, each run under dash and busybox sh; each failed before its fix: run_in_env with no argument no longer
preparing an environment used in place, a bad lock wait not named in one line, concurrent first tasks relocating
more than once, a directory moved twice. (test_shim.py runs run_in_env beside the shim too.)"""

import os
import subprocess

import pytest

from helpers.shimutil import floor_tarballs, shim_env

pytestmark = pytest.mark.usefixtures("shells")

SHELLS = {"dash": ("dash",), "busybox": ("busybox", "sh")}


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    """helpers.shimutil.floor_tarballs' "plain": conda-pack's own tarball of a small prefix, with bin/run_in_env."""
    return floor_tarballs(tmp_path_factory.mktemp("review"), ())



@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_without_a_command_prepares_in_place_except_for_taskvine(envs, tmp_path, shell):
    """Upstream's run_in_env with no argument prepares the environment (poncho_package_run -e DIR), and whoever
    then runs its files directly needs them relocated: issue 14's no-op is for TaskVine's mini task only, which
    always calls it as output/bin/run_in_env (vine_file.c)."""
    here = tmp_path / "prepared"
    here.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(here)], check=True)
    r = subprocess.run(list(SHELLS[shell]) + [str(here / "bin" / "run_in_env")], env=shim_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert (here / ".poncho_ready").read_text() == "{}\n".format(here)
    hello = subprocess.run([str(here / "bin" / "hello")], capture_output=True, text=True, check=True)
    assert hello.stdout == "prefix={}\n".format(here)
    # TaskVine's mini task: cwd = its sandbox, the tarball unpacked as output/, moved right after: untouched.
    sandbox = tmp_path / "sandbox"
    (sandbox / "output").mkdir(parents=True)
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(sandbox / "output")], check=True)
    r = subprocess.run(list(SHELLS[shell]) + ["output/bin/run_in_env"], cwd=str(sandbox), env=shim_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (0, "")
    assert not (sandbox / "output" / ".poncho_ready").exists()
    assert not (sandbox / "output" / ".poncho_relocations").exists()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_names_a_bad_lock_wait_in_one_line(envs, tmp_path, shell):
    """PONCHO_WAIT_FOR_LOCK=5m reached the relocator's int(): a Python traceback in the task's output."""
    d = tmp_path / "env"
    d.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(d)], check=True)
    r = subprocess.run(list(SHELLS[shell]) + [str(d / "bin" / "run_in_env"), "hello"],
                       env=shim_env(PONCHO_WAIT_FOR_LOCK="5m"), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True)
    assert r.returncode == 4 and r.stderr == (
        "run_in_env: PONCHO_WAIT_FOR_LOCK must be a whole number of seconds, not '5m'\n"), r.stderr


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_concurrent_first_tasks_relocate_once(envs, tmp_path, shell):
    """Guard: eight first tasks at once (TaskVine starts a worker's tasks together): one relocation, all run."""
    d = tmp_path / "env"
    d.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(d)], check=True)
    procs = [subprocess.Popen(list(SHELLS[shell]) + [str(d / "bin" / "run_in_env"), "hello"], env=shim_env(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, o) for p, (o, _) in zip(procs, outs)] == [(0, "prefix={}\n".format(d))] * 8, outs
    assert len((d / ".poncho_relocations").read_text().splitlines()) == 1


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_run_in_env_follows_a_directory_moved_twice(envs, tmp_path, shell):
    """Guard: each move is one relocation, from the recorded prefix to the new one; warm calls add none."""
    first = tmp_path / "one"
    first.mkdir()
    subprocess.run(["tar", "-xzf", envs["plain"], "-C", str(first)], check=True)
    where = first
    for name in ("one", "two", "three"):
        if where.name != name:
            os.rename(str(where), str(tmp_path / name))
            where = tmp_path / name
        for _ in range(2):
            r = subprocess.run(list(SHELLS[shell]) + [str(where / "bin" / "run_in_env"), "hello"], env=shim_env(),
                               stdin=subprocess.DEVNULL, capture_output=True, text=True)
            assert (r.returncode, r.stdout) == (0, "prefix={}\n".format(where)), r.stderr
    lines = (where / ".poncho_relocations").read_text().splitlines()
    assert [line.split()[2:] for line in lines] == [
        ["(placeholder)", str(tmp_path / "one")], [str(tmp_path / "one"), str(tmp_path / "two")],
        [str(tmp_path / "two"), str(tmp_path / "three")]]
