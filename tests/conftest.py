"""Shared test helpers: run the installed console scripts as real subprocesses."""

import os
import socket
import subprocess
import sys
import sysconfig

import pytest

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


# The fast subset for the inner loop is `bash dev/test.sh -m "not e2e"` (unit-level, under a minute). These
# modules start real workers, build whole environments or run long process scenarios: marked e2e here, in one place,
# so a new slow module is added to one list instead of each file carrying its own marker.
E2E_MODULES = frozenset({
    "test_task_e2e", "test_examples", "test_parsl", "test_interop_pythontask", "test_interop_tarballs",
    "test_shim_concurrency", "test_shim_security", "test_build_current", "test_build_current_conda",
    "test_cli_outputs", "test_installation", "test_cache", "test_pack", "test_build_portable", "test_environment",
    "test_create_cli", "test_bytecode", "test_taskvine_clients", "test_taskvine_upstream", "test_build_speed",
    "test_progress", "test_floor", "test_package_data",
    "test_layers_e2e", "test_shim_layers", "test_taskvine_layers",
})


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: real workers, whole builds or long process scenarios (deselect with "
                            "-m 'not e2e' for the fast subset)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="module")
def shells():
    """The shells of tests/shimutil.py, installed with apt when missing (modules that run the shim use it with
    ``pytestmark = pytest.mark.usefixtures("shells")``)."""
    from shimutil import ensure_shells

    return ensure_shells()


@pytest.fixture(scope="session")
def python():
    return sys.executable
