"""Upstream's own poncho clients, run unchanged except for their inputs, against poncho_wq:

* cctools ``poncho/src/poncho_test.py``: Work Queue ``PythonTask.specify_environment(tarball)`` on
  ``work_queue_worker``s, the function reading numpy and the spec's git data (``DATA_DIR``); the spec is
  ``poncho/src/test.json``'s shape with offline inputs (a local git repository, an http server on localhost,
  pip instead of the unreachable conda channels), built with ``poncho_wq.upstream.dict_to_env``;
* TaskVine's ``vine_example_poncho_in_python.py``: ``dict_to_env(spec, cache=True)`` -> ``declare_poncho`` ->
  ``PythonTask.add_poncho_package``, with poncho_wq's ``dict_to_env`` in place of upstream's (which needs conda).

Workers run with ``PATH=/usr/bin:/bin`` (Debian's python3: no numpy, no cloudpickle).
"""

import functools
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading

import pytest

from helpers import drivers
from helpers.parslutil import client_env, pip_pin

PONCHO_TEST = '''
import json, os, sys
import work_queue as wq   # as upstream's poncho_test.py (ndcctools installs this alias)
from poncho_wq.upstream import dict_to_env

out, port_file, spec_file = sys.argv[1:4]


def test_poncho(i):
    import numpy as np
    import os

    total = 0
    x = np.arange(15)
    total += x.sum()

    f = open(os.environ['DATA_DIR'] + '/numbers', 'r')
    for ln in f.readlines():
        nums = ln.split(',')
        for num in nums:
            total += int(num)
    total += i
    # the spec's http section too (upstream's test declares it but never reads it)
    with open(os.path.join(os.environ['CCTOOLS'], 'cctools-src', 'VERSION')) as f:
        total += 1000 * int(f.read().split('.')[0])
    return int(total)


def main():
    with open(spec_file) as f:
        tarball = dict_to_env(json.load(f), cache=True)
    q = wq.WorkQueue(0)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(q.port))
    os.rename(port_file + ".tmp", port_file)
    for x in range(10):
        t = wq.PythonTask(test_poncho, x)
        t.specify_environment(tarball)
        q.submit(t)
    results = []
    while not q.empty():
        t = q.wait(5)
        if t:
            x = t.output
            if isinstance(x, wq.PythonTaskNoResult):
                x = 'error executing the function {}'.format(t.std_output)
            results.append(x)
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == '__main__':
    main()
'''

VINE_EXAMPLE = '''
import json, os, sys
import ndcctools.taskvine as vine
from poncho_wq.upstream import dict_to_env   # was: from ndcctools.poncho import package_create

out, port_file, spec_file = sys.argv[1:4]


def divide(dividend, divisor):
    import math
    return dividend/math.sqrt(divisor)


def main():
    q = vine.Manager(0, run_info_path=os.path.join(os.path.dirname(out), "vine-run-info"))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(q.port))
    os.rename(port_file + ".tmp", port_file)
    with open(spec_file) as f:
        spec = json.load(f)
    tarball = dict_to_env(spec, cache=True)       # was: package_create.dict_to_env(spec, cache=True)
    package = q.declare_poncho(tarball, cache=True)

    for i in range(1, 16):
        p_task = vine.PythonTask(divide, 1, i**2)
        p_task.add_poncho_package(package)
        q.submit(p_task)

    total_sum = 0
    failed = 0
    while not q.empty():
        t = q.wait(5)
        if t:
            x = t.output
            if isinstance(x, vine.PythonTaskNoResult):
                failed += 1
            else:
                total_sum += x
    with open(out, "w") as f:
        json.dump({"sum": total_sum, "failed": failed}, f)


if __name__ == '__main__':
    main()
'''


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    for module in ("numpy", "cloudpickle"):
        r = subprocess.run(["/usr/bin/python3", "-c", "import " + module], capture_output=True,
                           env={"PATH": "/usr/bin:/bin"})
        assert r.returncode != 0, "the workers' python3 has {}: these tests would prove nothing".format(module)
    return str(tmp_path_factory.mktemp("upstream-cache"))


@pytest.fixture
def data_sources(tmp_path):
    """A git repository with upstream's test data file ``numbers`` (at a commit) and an http server on localhost
    serving a ``.tar.gz`` shaped like a CCTools source tarball."""
    repo = tmp_path / "poncho_test_data"
    repo.mkdir()
    (repo / "numbers").write_text("1,2,3\n4,5\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo)]
    for args in (["init", "-q"], ["add", "numbers"], ["commit", "-q", "-m", "data"]):
        subprocess.run(git + args, check=True, capture_output=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

    served = tmp_path / "www"
    served.mkdir()
    with tarfile.open(str(served / "cctools-7.2.13-source.tar.gz"), "w:gz") as tf:
        data = b"7.2.13\n"
        info = tarfile.TarInfo("cctools-src/VERSION")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"remote": str(repo), "ref": commit,
               "url": "http://127.0.0.1:{}/cctools-7.2.13-source.tar.gz".format(server.server_address[1])}
    finally:
        server.shutdown()
        server.server_close()


def run_driver(tmp_path, source, spec, cache, worker, timeout=600):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    return drivers.run_driver(tmp_path, source, client_env(PONCHO_WQ_CACHE=cache), worker=worker, args=[spec_file],
                              worker_args=["--keep-workspace"] if worker == "vine_worker" else [], timeout=timeout)


def test_upstream_poncho_test_on_work_queue(tmp_path, cache, data_sources):
    # poncho/src/test.json, with offline inputs: its conda list (defaults::python=3.9, conda-forge::numpy, pip,
    # ndcctools) becomes the manager's Python + pip numpy and cloudpickle (Work Queue's PythonTask pickler); the
    # list form itself is parsed in tests/core/test_spec.py.
    spec = {
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "pip": [pip_pin("numpy"), pip_pin("cloudpickle"), "dill"],
        "git": {"DATA_DIR": {"remote": data_sources["remote"], "ref": data_sources["ref"]}},
        "http": {"CCTOOLS": {"type": "tar", "compression": "gzip", "url": data_sources["url"]}},
    }
    results, _ = run_driver(tmp_path, PONCHO_TEST, spec, cache, "work_queue_worker")
    # np.arange(15).sum() = 105, numbers = 15, + i, + 7000 from the http data.
    assert sorted(results) == [7000 + 105 + 15 + i for i in range(10)], results


def test_taskvine_example_poncho_in_python(tmp_path, cache):
    # The example's spec asks conda-forge for python, pip, conda, conda-pack, cloudpickle, xrootd and pip
    # matplotlib; offline, the part its PythonTasks need: Python and cloudpickle.
    spec = {"python": "{}.{}.{}".format(*sys.version_info[:3]), "pip": [pip_pin("cloudpickle")]}
    results, workers = run_driver(tmp_path, VINE_EXAMPLE, spec, cache, "vine_worker")
    assert results["failed"] == 0
    assert abs(results["sum"] - sum(1 / i for i in range(1, 16))) < 1e-9, results
    assert max(workers.debug_lines("via mini task")) == 1


def test_pack_env_from_dict_writes_a_copy_of_the_cached_build(tmp_path, cache, monkeypatch):
    """Upstream's other entry point: the output is a copy of the cache entry (same bytes), so writing to it never
    touches the cache; dict_to_env(cache=False) builds anew into a fresh directory, not the current one."""
    from poncho_wq.upstream import dict_to_env, pack_env_from_dict

    monkeypatch.setenv("PONCHO_WQ_CACHE", cache)
    monkeypatch.chdir(tmp_path)
    spec = {"python": "{}.{}.{}".format(*sys.version_info[:3]), "pip": [pip_pin("cloudpickle")]}
    cached = dict_to_env(spec)
    out = pack_env_from_dict(spec, str(tmp_path / "env.tar.gz"))
    assert out == str(tmp_path / "env.tar.gz") != cached
    with open(out, "rb") as a, open(cached, "rb") as b:
        assert a.read() == b.read()
    fresh = dict_to_env(spec, cache=False)
    assert not fresh.startswith(str(tmp_path)) and os.path.getsize(fresh) > 0
    assert sorted(os.listdir(str(tmp_path))) == ["env.tar.gz"]
