"""Layered environments on TaskVine (issue 13): ``PonchoVineTask`` declares the base and the code layer as two
nested environments (the code layer's ``bin/run_in_env`` stacks it on the activated base), on real ``vine_worker``s
with the workers' scrubbed environment. One manager session edits an editable package, a local module and the job
script between rounds; every later task must run the new code, and each worker must unpack the base once.
"""

import json
import sys

import pytest

from helpers.cli import run_ok as _run

from helpers import drivers
from helpers.parslutil import client_env
from helpers.venvs import child_venv

DRIVER = '''
import json, os, sys, tempfile
from ndcctools import taskvine as vine
from poncho_wq.taskvine import PonchoVineTask

out, port_file, edits_file = sys.argv[1], sys.argv[2], sys.argv[3]
with open(edits_file) as f:
    edits = json.load(f)
m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
rounds = []
for rnd in range(len(edits) + 1):
    if rnd:
        for path, text in edits[rnd - 1].items():
            with open(path, "w") as f:
                f.write(text)
    names = set()
    for i in range(4):
        t = PonchoVineTask(m, "python3 job.py {}".format(i), cores=1, tag="{}".format(i))
        names.add((os.path.basename(t.environment.build()),
                   t.code_layer.remote_name if getattr(t, "code_layer", None) else None))
        m.submit(t)
    results = {}
    while not m.empty():
        t = m.wait(5)
        if t:
            results[t.tag] = [t.result, t.exit_code, t.std_output, t.shim_error]
    rounds.append({"results": results, "names": sorted(list(n) for n in names)})
with open(out, "w") as f:
    json.dump(rounds, f)
'''

JOB = '''import sys
import humanize
import edpkg
from helpers.fmt import VERSION
print("RESULT", sys.argv[1], "job={}", VERSION, edpkg.VERSION, humanize.intword(10 ** 6))
'''


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A venv over this interpreter's site-packages (poncho_wq, humanize, cloudpickle) with ``edpkg`` editable."""
    _run([sys.executable, "-m", "pip", "install", "-q", "humanize"])
    root = tmp_path_factory.mktemp("vine-layers")
    v = root / "venv"
    py = child_venv(v)  # not `venv --system-site-packages`: that venv sees the base python's site, not this one's
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "wheel"])
    ed = root / "edpkg"
    (ed / "edpkg").mkdir(parents=True)
    (ed / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "edpkg"\nversion = "0.1"\ndependencies = ["humanize"]\n\n'
        '[tool.setuptools]\npackages = ["edpkg"]\n')
    (ed / "edpkg" / "__init__.py").write_text("VERSION = 'ed1'\n")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
          "-e", ed])
    return {"python": py, "edpkg": ed}


def test_vine_tasks_run_the_edited_code_and_unpack_the_base_once(tmp_path, venv, e2e_cache):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text("")
    (tmp_path / "helpers" / "fmt.py").write_text("VERSION = 'lib1'\n")
    (tmp_path / "job.py").write_text(JOB.format("J1"))
    ed_init = venv["edpkg"] / "edpkg" / "__init__.py"
    ed_init.write_text("VERSION = 'ed1'\n")
    edits = [{str(tmp_path / "helpers" / "fmt.py"): "VERSION = 'lib2'\n", str(ed_init): "VERSION = 'ed2'\n"},
             {str(tmp_path / "job.py"): JOB.format("J2")}]
    (tmp_path / "edits.json").write_text(json.dumps(edits))
    # the run's shared build cache (tests/conftest.py): the base is the humanize environment other tests build
    env = client_env(PONCHO_WQ_CACHE=e2e_cache, PONCHO_WQ_SOURCE="index")
    rounds, workers = drivers.run_driver(tmp_path, DRIVER, env, args=[tmp_path / "edits.json"],
                                         worker_args=["--keep-workspace"], python=venv["python"])
    expected = [("J1", "lib1", "ed1"), ("J1", "lib2", "ed2"), ("J2", "lib2", "ed2")]
    for rnd, (job, lib, ed) in enumerate(expected):
        results = rounds[rnd]["results"]
        assert sorted(results) == ["0", "1", "2", "3"], results
        for i, (result, code, output, shim_error) in results.items():
            assert (result, code, shim_error) == ("success", 0, None), results[i]
            assert "RESULT {} job={} {} {} 1.0 million".format(i, job, lib, ed) in output, (rnd, output)
    names = [r["names"] for r in rounds]
    assert all(len(n) == 1 for n in names), names
    bases = {n[0][0] for n in names}
    codes = [n[0][1] for n in names]
    assert len(bases) == 1, names  # code edits never touch the base
    assert codes[0] != codes[1] == codes[2] and None not in codes, names
    # Three environments in the whole session (the base and two code layers), each unpacked by TaskVine's mini
    # task at most once per worker: a re-unpacked base would be a fourth.
    used = workers.debug_lines("via mini task")
    assert sum(used) >= 2 and max(used) <= 3, used
