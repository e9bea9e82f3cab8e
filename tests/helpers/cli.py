"""Running the installed console scripts as real subprocesses, and a closed local port."""

import os
import socket
import subprocess
import sysconfig

SCRIPTS = sysconfig.get_path("scripts")


def script(name):
    """Path of an installed console script (the interpreter's own scripts dir, never a pyenv shim)."""
    path = os.path.join(SCRIPTS, name)
    assert os.path.exists(path), "{} is not installed: run `bash dev/setup.sh`".format(path)
    return path


def run_cli(name, *args, input=None, cwd=None, env=None, timeout=600):
    """Run an installed command with arguments; return the CompletedProcess (text mode, output captured)."""
    full_env = dict(os.environ)
    full_env["PATH"] = SCRIPTS + os.pathsep + full_env.get("PATH", "")
    if env:
        full_env.update(env)
    return subprocess.run(
        [script(name)] + [str(a) for a in args],
        input=input if input is not None else "",
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def closed_port():
    """A localhost TCP port nothing listens on (bound, then released): connecting to it is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_ok(cmd, **kw):
    """Run *cmd* (stdin closed, output captured as text; keyword arguments go to subprocess.run) and assert that
    it succeeded, with its output in the message; return the CompletedProcess. Default timeout 600 s."""
    kw.setdefault("timeout", 600)
    r = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)
    assert r.returncode == 0, "{} failed ({}):\n{}\n{}".format(cmd, r.returncode, r.stdout, r.stderr)
    return r
