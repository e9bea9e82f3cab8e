"""poncho_wq/tools.py: run_group's supervisor reports the tool's own end (exit code, or the signal it died of); every
tool started by start_tool dies with the process that started it, with setpriv or without."""

import os
import subprocess
import sys
import time

import pytest

from poncho_wq.errors import Interrupted
from poncho_wq.tools import check_interrupted, run_group


@pytest.mark.parametrize("script, code", [("exit 3", 3), ("kill -TERM $$", -15), ("kill -KILL $$", -9)])
def test_run_group_reports_the_tools_exit_or_signal(script, code):
    # A tool killed by SIGKILL (the OOM killer) made the supervisor fail to reset a SIGKILL handler: exit 1 and a
    # Python traceback in the tool's output, which a BuildError then showed as the tool's message.
    r = run_group(["sh", "-c", "echo out; " + script])
    assert r.returncode == code and r.stdout == "out\n", r


def test_a_tool_stopped_by_sigterm_is_our_interruption():
    with pytest.raises(Interrupted):
        check_interrupted(run_group(["sh", "-c", "kill -TERM $$"]).returncode)


# A manager that starts a tool (sleep) the way the builds do, prints the tool's pid and waits to be killed.
_MANAGER = r"""
import sys, time
from poncho_wq.tools import StartedTool, start_tool
how = sys.argv[1]
if how == "start_tool":
    proc = start_tool(["sleep", "300"])
else:
    proc = StartedTool(["sleep", "300"], "sleeping").proc
print(proc.pid, flush=True)
time.sleep(300)
"""


def _runs_sleep(pid, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open("/proc/{}/cmdline".format(pid), "rb") as f:
            if f.read().split(b"\0")[0].endswith(b"sleep"):
                return True
        time.sleep(0.02)
    return False


def _gone(pid, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open("/proc/{}/stat".format(pid)) as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True  # dead, waiting for init to reap it
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["start_tool", "StartedTool"])
@pytest.mark.parametrize("setpriv", [True, False], ids=["setpriv", "preexec_fn"])
def test_a_tool_dies_with_the_manager_that_started_it(tmp_path, how, setpriv):
    """SIGKILL of the manager (the OOM killer, a batch system) must not leave uv or pigz writing into a scratch
    directory that the next build reuses: with setpriv --pdeathsig (what lets Python start tools with vfork) and,
    where setpriv is missing, with the preexec_fn."""
    env = dict(os.environ)
    if not setpriv:
        # a PATH where sleep is found and setpriv is not
        bindir = tmp_path / "bin"
        bindir.mkdir()
        os.symlink(subprocess.check_output(["sh", "-c", "command -v sleep"], text=True).strip(), str(bindir / "sleep"))
        env["PATH"] = str(bindir)
    manager = subprocess.Popen([sys.executable, "-c", _MANAGER, how], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid = int(manager.stdout.readline())
        assert _runs_sleep(pid), "the tool did not start (setpriv executes it in its own place)"
    finally:
        manager.kill()
        manager.wait()
    assert _gone(pid), "the tool outlived its manager"


def test_tools_start_without_a_preexec_fn_where_setpriv_can_set_the_signal():
    """The fast path is taken on this machine (Debian's util-linux has setpriv --pdeathsig)."""
    from poncho_wq.tools import _pdeathsig_prefix

    assert _pdeathsig_prefix() is not None


def test_a_tool_started_in_another_directory_finds_setpriv_found_through_a_relative_path_entry(tmp_path):
    """A PATH entry may be relative (``bin``, ``./node_modules/.bin``): the setpriv found there is used by its
    absolute path, or every tool started with a cwd of its own (git in its work tree, run_tool(cwd=...)) or after
    the manager changed directory failed to start (FileNotFoundError: ``bin/setpriv`` looked up from there)."""
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    os.symlink(subprocess.check_output(["sh", "-c", "command -v setpriv"], text=True).strip(),
               str(home / "bin" / "setpriv"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys\nfrom poncho_wq.tools import _pdeathsig_prefix, run_tool\n"
            "assert _pdeathsig_prefix() is not None\n"
            "print(run_tool(['pwd'], 'pwd', cwd=sys.argv[1]).stdout.strip())\n")
    env = dict(os.environ, PATH="bin" + os.pathsep + os.environ["PATH"])
    r = subprocess.run([sys.executable, "-c", code, str(elsewhere)], cwd=str(home), env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(elsewhere)
