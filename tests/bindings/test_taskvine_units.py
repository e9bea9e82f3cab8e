"""The TaskVine adapter's parts that need no worker: the ndcctools wheel, the submodule-extras table, runtime
packages added to a spec, per-manager declarations that do not keep managers alive, argument errors, and upstream's
dict_to_env on a bad spec. Real ndcctools (the source build dev/test.sh puts on PYTHONPATH), real Managers."""

import gc
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from poncho_wq import Environment, SpecError


def _ndcctools_dir():
    from poncho_wq.deliver.ndcctools_wheel import installed_package_dir

    return installed_package_dir()


def test_ndcctools_wheel_installs_the_managers_copy(tmp_path):
    """The wheel holds the installed package (extension modules included, bytecode left out), carries the CCTools
    version and cp<XY> tags, is byte-identical when made again, and a fresh venv that installs it imports
    ndcctools.taskvine.utils (what TaskVine's library runtime imports) from it, not from PYTHONPATH."""
    from poncho_wq.deliver.ndcctools_wheel import ndcctools_wheel

    whl = ndcctools_wheel(str(tmp_path / "a"))
    name = os.path.basename(whl)
    assert name.startswith("ndcctools-") and "-cp{}{}-cp{}{}-linux_".format(*sys.version_info[:2] * 2) in name
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        assert "ndcctools/taskvine/_cvine.so" in names and "ndcctools/taskvine/utils.py" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert zf.testzip() is None
    again = ndcctools_wheel(str(tmp_path / "b"))
    assert os.path.basename(again) == name
    with open(whl, "rb") as f1, open(again, "rb") as f2:
        assert f1.read() == f2.read()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", whl, "cloudpickle",
                        "packaging"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH: only the venv's own site-packages
    r = subprocess.run([py, "-c", "import ndcctools.taskvine.utils, ndcctools.taskvine as v; print(v.__file__)"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(venv))


def test_ndcctools_wheel_name_follows_the_content(tmp_path):
    """A changed installed file gives another wheel name, hence another spec and build cache key."""
    from poncho_wq.deliver.ndcctools_wheel import ndcctools_wheel

    copy = tmp_path / "site" / "ndcctools"
    shutil.copytree(_ndcctools_dir(), str(copy), ignore=shutil.ignore_patterns("__pycache__"))
    first = ndcctools_wheel(str(tmp_path / "w"), package_dir=str(copy))
    with open(str(copy / "taskvine" / "utils.py"), "a") as f:
        f.write("\n# changed\n")
    second = ndcctools_wheel(str(tmp_path / "w"), package_dir=str(copy))
    assert first != second and os.path.exists(first) and os.path.exists(second)


def test_missing_ndcctools_is_a_one_line_error():
    from poncho_wq.errors import InputMissing
    from poncho_wq.deliver.ndcctools_wheel import installed_package_dir

    with pytest.raises(InputMissing) as e:
        installed_package_dir("no_such_package_xyz")
    assert "no_such_package_xyz is not importable" in str(e.value) and "install" in str(e.value)


def test_submodule_extras(tmp_path):
    from poncho_wq.analysis.import_extras import extra_distributions

    script = tmp_path / "g.py"
    script.write_text("import dask.array as da\nfrom dask import delayed\n")
    assert extra_distributions([str(script)]) == ["numpy"]
    assert extra_distributions(sources=["from dask import dataframe\n"]) == ["dask-expr", "numpy", "pandas",
                                                                            "pyarrow"]
    assert extra_distributions(sources=["import dask\nimport numpyish\n"]) == []
    assert extra_distributions(sources=["this is not python"]) == []


def test_runtime_packages_join_a_spec_pinned():
    """TaskVine's library runtime is added to a spec (pinned to the manager's versions; a package the spec already
    names is left alone), with the manager's ndcctools wheel; any ndcctools the spec names is replaced."""
    from importlib.metadata import version

    from poncho_wq.taskvine import LIBRARY_RUNTIME, with_packages

    env = Environment.from_spec({"python": "3.11", "pip": ["packaging", "ndcctools==7.0", "humanize"]})
    out = with_packages(env, LIBRARY_RUNTIME)
    pip = out.spec.pip
    assert "cloudpickle=={}".format(version("cloudpickle")) in pip
    assert "packaging" in pip  # the spec's own requirement wins
    nd = [p for p in pip if p.startswith("ndcctools")]
    assert len(nd) == 1 and nd[0].startswith("ndcctools @ file:///") and nd[0].endswith(".whl")
    tarball = Environment(tarball="/nonexistent/env.tar.gz")
    assert with_packages(tarball, LIBRARY_RUNTIME) is tarball
    # A current-engine environment (source="auto" offline) becomes an index build: the current engine copies
    # installed distributions, and neither a source-built ndcctools nor its wheel is one.
    current = with_packages(Environment.from_spec({"python": "3.11", "pip": ["humanize"]}, engine="current"),
                            LIBRARY_RUNTIME)
    assert (current.engine, current.source) == (None, "index")
    # Another Python than the manager's cannot load its ndcctools: said before any build starts.
    with pytest.raises(SpecError) as e:
        with_packages(Environment.from_spec({"python": "3.9", "pip": ["humanize"]}), LIBRARY_RUNTIME)
    assert "spec field python: '3.9'" in str(e.value) and "Python {}.{}".format(*sys.version_info[:2]) in str(e.value)


def test_declarations_are_per_manager_and_do_not_keep_managers_alive(tmp_path):
    """The same tarball declared twice to one manager is one File; a second manager gets its own; a manager that
    is no longer referenced is freed (taskvine._declared used to keep every manager alive, keyed by id())."""
    from ndcctools import taskvine as vine

    from poncho_wq import taskvine as ptv

    tarball = tmp_path / "env.tar.gz"
    with tarfile.open(str(tarball), "w:gz"):
        pass
    m1 = vine.Manager(port=0, run_info_path=str(tmp_path / "r1"))
    m2 = vine.Manager(port=0, run_info_path=str(tmp_path / "r2"))
    f1 = ptv.declare_environment(m1, str(tarball))
    assert ptv.declare_environment(m1, str(tarball)) is f1
    assert ptv.declare_environment(m2, str(tarball)) is not f1
    assert len(ptv._declared) == 2
    del m1, m2, f1
    gc.collect()
    assert len(ptv._declared) == 0


def test_only_content_named_tarballs_are_declared_below_forever():
    """A tarball named by its content (env-<hex>, code-<hex>) is declared at the workflow level (TaskVine then names
    it by path, size and mtime instead of reading it for an md5 in every manager process); any other name may be
    rewritten in place, so it keeps "forever" and TaskVine's content digest."""
    from poncho_wq.taskvine import ENV_CACHE, _tarball_cache

    assert _tarball_cache("/c/envs/env-5b23cffe11851d3fd79979519356c618.tar.gz") is True
    assert _tarball_cache("/c/code/code-0123456789abcdef0123.tar.gz") is True
    for other in ("/data/env.tar.gz", "/data/my-env.tar.gz", "/c/env-5B23CFFE11851D3F.tar.gz",
                  "/c/env-5b23cffe11851d3f.tar.gz.bak", "/c/env-0.tar.gz"):
        assert _tarball_cache(other) == ENV_CACHE, other


def test_poncho_vine_task_is_a_task_and_refuses_bad_arguments(tmp_path):
    from ndcctools import taskvine as vine

    from poncho_wq.taskvine import PonchoVineTask

    tarball = tmp_path / "env.tar.gz"
    with tarfile.open(str(tarball), "w:gz"):
        pass
    m = vine.Manager(port=0, run_info_path=str(tmp_path / "r"))
    t = PonchoVineTask(m, "echo hi", environment=str(tarball), cores=1, tag="x", retries=2)
    assert isinstance(t, vine.Task) and issubclass(PonchoVineTask, vine.Task)
    assert t.command.endswith("/bin/run_in_env echo hi") and t.tag == "x"  # TaskVine wraps it with the env
    with pytest.raises(SpecError) as e:
        PonchoVineTask(m, "echo hi", environment=str(tarball), specify_cores=1)
    assert "PonchoVineTask option specify_cores=" in str(e.value) and "set_specify_cores" in str(e.value)
    with pytest.raises(SpecError) as e:
        PonchoVineTask(m, "", environment=str(tarball))
    assert "PonchoVineTask command: '' (str) is not valid" in str(e.value)


def test_create_library_refuses_bad_arguments(tmp_path):
    from ndcctools import taskvine as vine

    from poncho_wq.taskvine import create_library

    m = vine.Manager(port=0, run_info_path=str(tmp_path / "r"))
    cases = [
        (("", len), {}, "create_library name: '' is not valid"),
        (("lib",), {}, "create_library functions: none given"),
        (("lib", "len"), {}, "create_library functions: 'len' (str) is not valid"),
        (("lib", len), {"poncho_env": "x.tar.gz"}, "create_library option poncho_env=: poncho_wq declares"),
        (("lib", len), {"colors": 3}, "create_library option colors=: expected one of init_command"),
        (("lib", len), {"environment": 42}, "create_library environment: 42 (int) is not valid"),
    ]
    for args, kwargs, words in cases:
        with pytest.raises(SpecError) as e:
            create_library(m, *args, **kwargs)
        assert words in str(e.value), str(e.value)


def test_shim_error_from_run_in_env_lines():
    from poncho_wq.taskvine import ShimError, shim_error_from

    assert shim_error_from(4, "run_in_env: could not relocate /x\n") == ShimError(4, "could not relocate /x")
    assert shim_error_from(3, "Traceback...\nValueError: x\n") is None  # the command's own failure
    assert shim_error_from(0, "run_in_env: could not relocate /x\n") is None


def test_dict_to_env_bad_spec_names_the_field():
    from poncho_wq.upstream import dict_to_env

    with pytest.raises(SpecError) as e:
        dict_to_env({"conda": ["numpy"]})
    assert "conda[0]" in str(e.value) and "'conda-forge::numpy'" in str(e.value)
    with pytest.raises(SpecError) as e:
        dict_to_env('{"pip": [1]}')
    assert "pip[0]" in str(e.value)


def test_a_publish_url_without_a_publish_dir_is_an_error_for_taskvine_too(monkeypatch, tmp_path):
    """As for Work Queue (poncho_wq.deliver.publish): PONCHO_WQ_PUBLISH_URL alone used to mean a silent `direct` here, every
    worker getting the tarball from the manager; it is a SpecError naming both variables, before any declare."""
    from poncho_wq.errors import SpecError
    from poncho_wq.taskvine import _source_file

    monkeypatch.delenv("PONCHO_WQ_PUBLISH_DIR", raising=False)
    monkeypatch.delenv("PONCHO_WQ_DISTRIBUTION", raising=False)
    monkeypatch.setenv("PONCHO_WQ_PUBLISH_URL", "http://cache.example/envs/")
    with pytest.raises(SpecError) as e:
        _source_file(None, str(tmp_path / "env-0.tar.gz"))  # no manager needed: refused first
    assert "PONCHO_WQ_PUBLISH_URL" in str(e.value) and "PONCHO_WQ_PUBLISH_DIR" in str(e.value)


def test_the_taskvine_fetch_gives_up_on_a_stalled_transfer(tmp_path):
    """The fetch mini task's command, run with sh as the worker runs it, against a server that stalls: it gives up
    after its stall limit, and leaves a stub environment whose run_in_env exits 3 naming the URL (a hung server
    must not hold a worker's mini task for ever, and nothing of the transfer is kept)."""
    import hashlib
    import http.server
    import subprocess
    import tarfile
    import threading
    import time

    from poncho_wq.deliver.fetch import Fetch
    from poncho_wq.taskvine import fetch_task_command

    class Stall(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"s" * 1000)
            self.wfile.flush()
            time.sleep(30)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:{}/env-0.tar.gz".format(server.server_address[1])
    try:
        fetch = Fetch("env-0.tar.gz", url, 100000, hashlib.sha256(b"s" * 100000).hexdigest())
        r = subprocess.run(["/bin/sh", "-c", fetch_task_command(fetch, 60, stall_seconds=2)], cwd=str(tmp_path),
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stderr  # the mini task succeeds: a failed one would hang the task (TaskVine 7.17.1)
    with tarfile.open(str(tmp_path / "env-0.tar.gz")) as tar:
        tar.extractall(str(tmp_path / "env"))
    stub = subprocess.run([str(tmp_path / "env" / "bin" / "run_in_env"), "true"], capture_output=True, text=True)
    assert stub.returncode == 3 and url in stub.stderr and stub.stderr.startswith("run_in_env: "), stub.stderr
    assert subprocess.run([str(tmp_path / "env" / "bin" / "run_in_env")]).returncode == 0  # TaskVine's preparation
    assert sorted(os.listdir(tmp_path)) == ["env", "env-0.tar.gz", "stub"]  # no part file
