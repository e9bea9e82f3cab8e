"""Ctrl-C in every phase of a build: the CLI exits 128 + n with one line and leaves nothing; the API raises
KeyboardInterrupt, never a PonchoError (issue 25).

Ctrl-C reaches the whole process group; the tool the build runs (uv in the pip phase, pigz in the pack phase)
often dies of it first, and the build used to see only a broken pipe or a failed exit: ``error: build failed:
BrokenPipeError``, exit 3, and a BuildError that ``except PonchoError`` swallowed. These tests make that race
certain: a real pigz, started through a wrapper that records its pid, gets SIGINT alone (the first of the group to
act on it: pigz then exits 4, EINTR, without a word); or the whole group gets it while a phase runs.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from helpers.cli import SCRIPTS, script
from poncho_wq.errors import PonchoError

SPEC = {"pip": ["six"]}


def _wrapper(bin_dir, name, pidfile):
    """``name`` on a PATH of its own: records its pid, then becomes the real tool (same pid: exec)."""
    real = subprocess.run(["which", name], capture_output=True, text=True, check=True).stdout.strip()
    path = bin_dir / name
    path.write_text('#!/bin/sh\necho $$ > {}\nexec {} "$@"\n'.format(pidfile, real))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _signal_when_started(pidfile, sig=signal.SIGINT, timeout=120, then=None):
    """In a thread: once *pidfile* names a process, send it *sig*, then (20 ms later) to the pid *then* if given:
    the group's Ctrl-C with the tool first to get it, made certain."""
    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.002)
                continue
            for target in (pid, then):
                if target is not None:
                    try:
                        os.kill(target, sig)
                    except ProcessLookupError:
                        pass
                    time.sleep(0.02)
            return
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("tool", ["pigz"])
def test_a_tool_killed_by_ctrl_c_stops_the_cli_with_130_and_leaves_nothing(tmp_path, tool):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pidfile = tmp_path / "pid"
    _wrapper(bin_dir, tool, pidfile)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pip": ["numpy"]} if tool == "pigz" else SPEC))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PATH=os.pathsep.join([str(bin_dir), SCRIPTS, os.environ["PATH"]]))
    p = subprocess.Popen([script("poncho_package_create"), "--no-cache", str(spec), str(out_dir / "env.tar.gz")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watcher = _signal_when_started(pidfile)  # pigz alone: it exits 4 (EINTR), quietly
    _out, err = p.communicate(timeout=600)
    watcher.join()
    r = subprocess.CompletedProcess(p.args, p.returncode, _out, err)
    assert pidfile.exists(), "the build never ran {}: {}".format(tool, r.stderr)
    assert r.returncode == 130, r.stderr
    assert "interrupted by SIGINT" in r.stderr and "error:" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("tool", ["pigz"])
def test_a_tool_killed_by_ctrl_c_raises_keyboard_interrupt_in_the_api(tmp_path, monkeypatch, tool):
    from poncho_wq import create

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pidfile = tmp_path / "pid"
    _wrapper(bin_dir, tool, pidfile)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), SCRIPTS, os.environ["PATH"]]))
    watcher = _signal_when_started(pidfile)
    caught = None
    try:
        create({"pip": ["numpy"]} if tool == "pigz" else SPEC, cache_dir=str(tmp_path / "cache"))
    except PonchoError as e:  # what `except PonchoError` in a manager would have swallowed
        caught = e
    except KeyboardInterrupt as e:
        caught = e
    watcher.join()
    assert pidfile.exists()
    assert isinstance(caught, KeyboardInterrupt) and not isinstance(caught, PonchoError), repr(caught)
    assert os.listdir(tmp_path / "cache" / "tmp") == [] and not os.listdir(tmp_path / "cache" / "envs")


@pytest.mark.parametrize("phase", ["pip", "pack"])
def test_ctrl_c_to_the_process_group_in_each_phase(tmp_path, phase):
    """SIGINT to the group (the terminal's Ctrl-C) as soon as the phase starts: exit 130, one line, nothing left."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pip": ["numpy"]}))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PATH=SCRIPTS + os.pathsep + os.environ["PATH"], PYTHONUNBUFFERED="1")
    # A sitecustomize that prints each phase as it starts (progress prints a phase when it ends).
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\nfrom poncho_wq import progress\n_orig = progress.Progress.phase\n"
        "def phase(self, name, *a, **k):\n    sys.stderr.write('PHASE ' + name + '\\n'); sys.stderr.flush()\n"
        "    return _orig(self, name, *a, **k)\nprogress.Progress.phase = phase\n")
    env["PYTHONPATH"] = str(hook) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.Popen([sys.executable, "-c", "import sys; from poncho_wq.cli.create import main; sys.exit(main())", "--no-cache",
                          str(spec), str(out_dir / "env.tar.gz")], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    lines = []
    for line in p.stderr:
        lines.append(line)
        if line.strip() == "PHASE " + phase:
            time.sleep(0.05)
            os.killpg(p.pid, signal.SIGINT)
            break
    rest = p.stderr.read()
    p.wait(timeout=120)
    err = "".join(lines) + rest
    assert "PHASE " + phase in err, err
    assert p.returncode == 130, err
    assert "interrupted by SIGINT" in err and "error:" not in err and "Traceback" not in err, err
    assert os.listdir(out_dir) == []
