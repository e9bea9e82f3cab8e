"""Fixtures and collection hooks shared by the tests (plain helper functions live in tests/helpers/)."""

import json
import os
import sys

import pytest

from helpers.cli import run_cli
from helpers.wqutil import BINDINGS, Cluster

# The fast subset for the inner loop is `bash dev/test.sh -m "not e2e"` (unit-level, under a minute). These
# modules start real workers, build whole environments or run long process scenarios: marked e2e here, in one place,
# so a new slow module is added to one list instead of each file carrying its own marker. Named by basename, whatever
# the folder (tests/<stage>/ mirrors the package; basenames are unique under tests/, see docs/development.md).
E2E_MODULES = frozenset({
    "test_task_e2e", "test_examples", "test_parsl", "test_interop_pythontask", "test_interop_tarballs",
    "test_shim_concurrency", "test_shim_security", "test_build_current", "test_build_current_conda",
    "test_cli_outputs", "test_installation", "test_cache", "test_pack", "test_build_portable", "test_environment",
    "test_create_cli", "test_bytecode", "test_taskvine_clients", "test_taskvine_upstream", "test_build_speed",
    "test_progress", "test_floor", "test_package_data",
    "test_layers_e2e", "test_shim_layers", "test_taskvine_layers",
    "test_old_glibc", "test_unpack_speed", "test_shim_shared_fs", "test_exit", "test_interrupts",
    "test_build_locked", "test_waiting", "test_waiting_e2e", "test_docs_e2e", "test_parts_e2e",
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
    """The shells of tests/helpers/shimutil.py, installed with apt when missing (modules that run the shim use it with
    ``pytestmark = pytest.mark.usefixtures("shells")``)."""
    from helpers.shimutil import ensure_shells

    return ensure_shells()


@pytest.fixture(params=BINDINGS)
def cluster(request, tmp_path):
    """A manager script plus real local workers (tests/helpers/wqutil.Cluster), once per Work Queue binding:
    Debian's ``work_queue`` (CCTools 8) and ``ndcctools.work_queue`` (CCTools 7.17.1 built by dev/test.sh)."""
    c = Cluster(tmp_path / "cluster", request.param)
    os.makedirs(c.tmp, exist_ok=True)
    yield c
    c.close()


@pytest.fixture(scope="session")
def python():
    return sys.executable


@pytest.fixture(scope="session")
def humanize_installed():
    """The manager's environment has humanize (a declared test dependency); the workers' Debian python3 does not."""
    import importlib
    import subprocess

    importlib.import_module("humanize")  # declared in setup.cfg's test extra

    r = subprocess.run(["/usr/bin/python3", "-c", "import humanize"], capture_output=True)
    assert r.returncode != 0, "the workers' python3 must lack humanize for these tests to prove anything"


def run_dir(tmp_path_factory):
    """The directory of this whole run: pytest's base temporary directory, or with pytest-xdist its parent (each
    process's own base is ``popen-gwN`` inside the controller's). pytest removes it after a run that passed."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def e2e_cache(tmp_path_factory):
    """One build cache for the end-to-end modules, shared by the run's processes: the same small environments are
    built once per run, not once per xdist process. Sharing needs no lock of its own: the cache is made for
    concurrent processes (a lock per key; the second process waits for the first one's build and hits it), as
    users' workflows share it. Tests that count builds or need a cold build use a cache of their own."""
    path = run_dir(tmp_path_factory) / "poncho-e2e-cache"
    path.mkdir(exist_ok=True)
    return str(path)


@pytest.fixture(scope="session")
def prepared_cache(e2e_cache, tmp_path_factory):
    """``e2e_cache`` once it holds the interpreter base of this interpreter (a real build of ``{"python": X.Y}``
    through the CLI; a hit when another process did it first): the source of
    :func:`helpers.paths.link_interpreter_bases` for tests whose subject is a later build in a cache of their own,
    not the base's preparation (tests/engines/test_build_speed.py)."""
    d = tmp_path_factory.mktemp("base-spec")
    (d / "spec.json").write_text(json.dumps({"python": "{}.{}".format(*sys.version_info[:2])}))
    r = run_cli("poncho_package_create", "-q", "--cache-dir", e2e_cache, d / "spec.json", d / "env.tar.gz")
    assert r.returncode == 0, r.stderr
    return e2e_cache
