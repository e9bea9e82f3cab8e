"""Progress (issue 17): nothing with -q, one line per phase without a terminal, a live line on a terminal (a real
pty), and the same phases as events for a Python callback. The CLI runs as a real subprocess."""

import io
import json
import os
import pty
import subprocess
import sys

from helpers.cli import run_cli, script

from poncho_wq.engines import create
from poncho_wq.progress import Progress, ProgressEvent

SHORT = "{}.{}".format(*sys.version_info[:2])
PHASES = ("install", "pip", "pack")


def _spec(tmp_path, doc=None):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(doc or {"python": SHORT, "pip": ["six"]}))
    return path


def _run_on_pty(argv, env):
    """Run *argv* with stdout and stderr on a new pseudo-terminal; return everything it wrote (bytes)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=600) == 0, out.decode(errors="replace")
    return out


def test_quiet_prints_nothing(tmp_path):
    r = run_cli("poncho_package_create", "-q", "--cache-dir", tmp_path / "cache", _spec(tmp_path),
                tmp_path / "e.tar.gz")
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout == ""


def test_one_line_per_phase_without_a_terminal(tmp_path):
    r = run_cli("poncho_package_create", "--cache-dir", tmp_path / "cache", _spec(tmp_path), tmp_path / "e.tar.gz")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\x1b" not in r.stderr and r.stdout == ""
    lines = r.stderr.splitlines()
    for phase in PHASES:
        mine = [line for line in lines if line.startswith("poncho: {} ".format(phase))]
        assert len(mine) == 1 and mine[0].startswith("poncho: {} done in ".format(phase)), lines
    assert "MB" in next(line for line in lines if line.startswith("poncho: pack"))
    # Every line is a finished phase (whatever phases the pipeline has), then the command's own result line.
    assert all(" done in " in line for line in lines[:-1]), lines
    assert lines[-1].startswith("poncho_package_create: "), lines


def test_live_line_on_a_terminal_and_nothing_with_quiet(tmp_path):
    env = dict(os.environ, TERM="xterm", COLUMNS="200")
    env.pop("PONCHO_DEBUG", None)
    argv = [script("poncho_package_create"), "--cache-dir", str(tmp_path / "cache"), str(_spec(tmp_path))]
    out = _run_on_pty(argv + [str(tmp_path / "a.tar.gz")], env).decode()
    assert "\r\x1b[Kponcho: pack" in out  # redrawn in place
    # What stays on the screen: each phase's line replaced by its summary, one per phase.
    screen = [segment for line in out.replace("\r\n", "\n").split("\n") for segment in line.split("\r")[-1:]]
    screen = [s.replace("\x1b[K", "") for s in screen if s.strip()]
    for phase in PHASES:
        assert len([s for s in screen if s.startswith("poncho: {} done in".format(phase))]) == 1, screen
    (tmp_path / "cache").rename(tmp_path / "cache-old")  # cold again
    assert _run_on_pty(argv + ["-q", str(tmp_path / "b.tar.gz")], env) == b""


def test_api_callback_gets_the_phases_and_pack_bytes(tmp_path, capfd):
    events = []
    result = create({"python": SHORT}, cache_dir=str(tmp_path / "cache"), progress=events.append)
    assert not result.cache_hit and all(isinstance(e, ProgressEvent) for e in events)
    kinds = [(e.kind, e.phase) for e in events if e.kind in ("start", "end")]
    # Each phase starts and ends before the next one starts (other phases may come between install and pack).
    assert kinds[::2] == [("start", phase) for _kind, phase in kinds[1::2]]
    assert kinds[1::2] == [("end", phase) for _kind, phase in kinds[::2]]
    phases = [phase for _kind, phase in kinds[::2]]
    assert phases[0] == "install" and phases[-1] == "pack" and "pip" not in phases
    pack = [e for e in events if e.phase == "pack" and e.kind == "update" and e.done is not None]
    assert pack and pack[-1].unit == "B" and pack[-1].done == pack[-1].total > 1000000
    assert [e.done for e in pack] == sorted(e.done for e in pack)
    end = [e for e in events if e.kind == "end" and e.phase == "install"][0]
    assert "interpreter base" in end.detail and end.elapsed >= 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # a callback alone renders nothing


def test_progress_subclass_and_terminal_rendering():
    """A subclass sees every event; on a terminal the phase is one line redrawn with \\r and closed with \\n."""
    seen = []

    class Recording(Progress):
        def event(self, ev):
            seen.append(ev)
            super().event(ev)

    stream = io.StringIO()
    progress = Recording(stream=stream, tty=True)
    with progress.phase("pack", "test", unit="B") as phase:
        phase.update(0, 2000000)
        progress.interval = 0  # draw every update from here on
        phase.update(1000000)
        phase.status("writing")
        phase.update(2000000)
        phase.note("2 files")
    progress.info("after")
    text = stream.getvalue()
    assert "\r\x1b[Kponcho: pack test | 1.0/2.0 MB 50%" in text
    assert text.count("\n") == 2 and "\rponcho" not in text.replace("\r\x1b[K", "")
    assert text.split("\n")[-3].split("\r\x1b[K")[-1].startswith("poncho: pack done in")  # (splitlines splits at \r)
    assert text.endswith("poncho: after\n") and "2 files" in text
    assert [e.kind for e in seen][:1] == ["start"] and seen[-1].kind == "info" and "pack" in progress.timings


#: A manager script whose PonchoTask builds its environment (issue 25: such builds printed nothing).
TASK_MANAGER = r'''
import sys
from poncho_wq import PonchoTask
PonchoTask("python3 -c pass", environment={"python": "%s"})
print("BUILT")
''' % SHORT


def test_a_ponchotask_build_shows_its_phases_on_a_terminal_and_nothing_otherwise(tmp_path):
    (tmp_path / "manager.py").write_text(TASK_MANAGER)
    env = dict(os.environ, TERM="xterm", COLUMNS="200", PONCHO_WQ_BINDING="debian",
               PONCHO_WQ_CACHE=str(tmp_path / "cache"))
    env.pop("PONCHO_DEBUG", None)
    env.pop("PONCHO_WQ_PROGRESS", None)  # the default: auto
    out = _run_on_pty([sys.executable, str(tmp_path / "manager.py")], env).decode()
    assert "\r\x1b[Kponcho: pack" in out and "BUILT" in out, out  # the live line, redrawn in place
    screen = [line.split("\r")[-1].replace("\x1b[K", "") for line in out.replace("\r\n", "\n").split("\n")]
    for phase in ("install", "pack"):
        assert len([s for s in screen if s.startswith("poncho: {} done in".format(phase))]) == 1, screen
    # Not a terminal (a log file, a pipe): the same cold build says nothing.
    env["PONCHO_WQ_CACHE"] = str(tmp_path / "cache2")
    r = subprocess.run([sys.executable, str(tmp_path / "manager.py")], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout == "BUILT\n", r.stdout + r.stderr
    assert r.stderr == "", r.stderr
    assert os.listdir(tmp_path / "cache2")  # it did build
