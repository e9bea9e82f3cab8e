"""poncho_wq.analyze library API, its caches, and the conda branch on a real rattler-installed conda prefix."""

import asyncio
import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

from helpers.cli import run_cli
from poncho_wq.errors import PonchoError, SpecError
from poncho_wq.spec import Spec

import poncho_wq.analysis.analyzer as an  # noqa: E402

PY = "{}.{}".format(*sys.version_info[:2])


@pytest.fixture(scope="module")
def installed():
    return {d: importlib.metadata.version(d) for d in ("PyYAML", "attrs")}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(d))
    monkeypatch.setattr(an.ScanCache, "_memo", {})  # a fresh process-wide memo per test
    return d


def write(root, files, age=None):
    for rel, text in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
    if age:
        age_tree(root, age)


def age_tree(root, age):
    """Move mtimes into the past: files changed in the last seconds are deliberately not cached (racy stat)."""
    t = time.time() - age
    for d, _, fs in os.walk(str(root)):
        for f in fs:
            os.utime(os.path.join(d, f), (t, t))
        os.utime(d, (t, t))


def test_analysis_fields(tmp_path, installed, cache):
    write(tmp_path, {
        "proj/job.py": "import yaml\nimport helper\nimport work_queue\nimport missing_pkg_xyz\n",
        "proj/helper.py": "from pkg import mod\n",
        "proj/pkg/__init__.py": "",
        "proj/pkg/mod.py": "import attr\n",
    })
    with pytest.raises(SpecError) as e:  # issue 24: a required import that resolves to nothing stops the analysis
        an.analyze([tmp_path / "proj" / "job.py"], exclude=("work_queue",))
    assert "job.py:4: import missing_pkg_xyz" in str(e.value) and e.value.exit_code == 1
    a = an.analyze([tmp_path / "proj" / "job.py"], exclude=("work_queue",), allow_unresolved=["missing_pkg_xyz"])
    assert isinstance(a.spec, Spec)
    assert a.imports == frozenset({"yaml", "attr", "missing_pkg_xyz"})
    assert dict(a.distributions) == {"PyYAML": installed["PyYAML"], "attrs": installed["attrs"]}
    proj = str(tmp_path / "proj")
    assert a.local_files == ((os.path.join(proj, "helper.py"), "helper.py"),
                             (os.path.join(proj, "pkg", "__init__.py"), os.path.join("pkg", "__init__.py")),
                             (os.path.join(proj, "pkg", "mod.py"), os.path.join("pkg", "mod.py")))
    assert a.unresolved == ("missing_pkg_xyz",)
    assert len(a.warnings) == 1 and "missing_pkg_xyz" in a.warnings[0]
    assert a.spec.python == platform.python_version()
    assert sorted(a.spec.pip) == sorted(["PyYAML==" + installed["PyYAML"], "attrs==" + installed["attrs"],
                                         "missing_pkg_xyz"])
    assert dict(a.local_distributions) == {}


def test_script_inside_site_packages_is_analyzed_as_source(tmp_path, installed, cache):
    """Parsl hands over its installed exec_parsl_function.py: site-packages must not become a local root."""
    write(tmp_path, {
        "lib/python3/site-packages/tool/run.py": "import yaml\nimport tool.other\nimport attr\n",
        "lib/python3/site-packages/tool/__init__.py": "",
        "lib/python3/site-packages/tool/other.py": "import dateutil\n",
        "lib/python3/site-packages/neighbour.py": "import bs4\n",
    })
    a = an.analyze([tmp_path / "lib/python3/site-packages/tool/run.py"], exclude=("tool",))
    assert a.local_files == ()
    assert dict(a.distributions) == {"PyYAML": installed["PyYAML"], "attrs": installed["attrs"]}


def test_sources_mapping_and_errors(tmp_path, installed, cache):
    a = an.analyze([], sources={"<stdin>": "import yaml\n"})
    assert dict(a.distributions) == {"PyYAML": installed["PyYAML"]}
    with pytest.raises(PonchoError) as e:
        an.analyze([tmp_path / "nope.py"])
    assert e.value.exit_code == 2
    with pytest.raises(PonchoError) as e:
        an.analyze([], sources={"cell": "x = = 1\n"})
    assert e.value.exit_code == 1 and "cell:1" in str(e.value)
    with pytest.raises(PonchoError):
        an.analyze([])


def test_scan_flags_and_scopes():
    scan = an.scan_source(textwrap.dedent("""
        from __future__ import annotations
        import a.b as c
        from . import sib
        from ..up import thing
        try:
            import opt
        except (ValueError, ImportError):
            import fallback
        if TYPE_CHECKING:
            import tc
        def f():
            import inner
        class K:
            async def g(self):
                x = importlib.import_module(".rel", __package__)
    """), "t.py")
    got = {(r.module, r.level): (r.flags, r.scope, r.names) for r in scan.imports}
    T, O, TC, D = an.TOPLEVEL, an.OPTIONAL, an.TYPE_CHECKING, an.DYNAMIC
    assert got == {
        ("a.b", 0): (T, (), ()),
        ("", 1): (T, (), ("sib",)),
        ("up", 2): (T, (), ("thing",)),
        ("opt", 0): (T | O, (), ()),
        ("fallback", 0): (T | O, (), ()),
        ("tc", 0): (T | TC, (), ()),
        ("inner", 0): (0, ("f",), ()),
        ("rel", 1): (D, ("K", "g"), ()),
    }
    assert scan.functions == ("f", "K.g")


def test_cached_scans_equal_fresh_parses_and_second_call_parses_nothing(tmp_path, installed, cache, monkeypatch):
    write(tmp_path, {"p/job.py": "import helper\nimport yaml\n", "p/helper.py": "def f():\n    import attr\n"},
          age=100)
    first = an.analyze([tmp_path / "p" / "job.py"])
    sc = an.ScanCache()
    sc._memo.clear()
    for name in ("job.py", "helper.py"):
        path = str(tmp_path / "p" / name)
        assert sc.get(path, os.stat(path)) == an.scan_file(path)
    parsed = []
    real = an.scan_source
    monkeypatch.setattr("poncho_wq.analysis.scan.scan_source", lambda src, fn: parsed.append(fn) or real(src, fn))
    second = an.analyze([tmp_path / "p" / "job.py"])
    assert parsed == [] and second == first
    uncached = an.analyze([tmp_path / "p" / "job.py"], use_cache=False)
    assert uncached == first and parsed  # the uncached pass really parsed again


def test_cache_follows_changes_between_processes(tmp_path, installed, cache):
    """Run by run through the CLI: an unchanged tree hits the cache; an edited module, a new module shadowing an
    import, and a deleted one are all noticed (file stats and directory mtimes key the cache)."""
    write(tmp_path, {"p/job.py": "import helper\nimport attr\n", "p/helper.py": "x = 1\n"}, age=100)
    env = {"PONCHO_WQ_CACHE": str(cache)}

    def run():
        proc = run_cli("poncho_package_analyze", tmp_path / "p" / "job.py", "-", env=env)
        assert proc.returncode == 0, proc.stderr
        return sorted(json.loads(proc.stdout)["pip"])

    assert run() == ["attrs==" + installed["attrs"]]
    assert os.listdir(cache / "analyze" / "runs") and [f for f in os.listdir(cache / "analyze") if f.endswith(
        ".marshal")]
    assert run() == ["attrs==" + installed["attrs"]]
    (tmp_path / "p" / "helper.py").write_text("x = 1\nimport yaml\n")  # edited (new size, new mtime)
    age_tree(tmp_path / "p", 50)
    assert run() == sorted(["attrs==" + installed["attrs"], "PyYAML==" + installed["PyYAML"]])
    (tmp_path / "p" / "attr.py").write_text("# a local module now shadows the installed one\n")
    age_tree(tmp_path / "p", 40)
    assert run() == ["PyYAML==" + installed["PyYAML"]]
    (tmp_path / "p" / "attr.py").unlink()
    age_tree(tmp_path / "p", 30)
    assert run() == sorted(["attrs==" + installed["attrs"], "PyYAML==" + installed["PyYAML"]])


def test_same_size_same_mtime_rewrite_within_racy_window_is_not_cached(tmp_path, installed, cache):
    write(tmp_path, {"job.py": "import yaml\n"})  # fresh mtime: inside the racy window, so never cached
    an.analyze([tmp_path / "job.py"])
    assert not (cache / "analyze" / "runs").exists()
    st = os.stat(tmp_path / "job.py")
    (tmp_path / "job.py").write_text("import attr\n")  # same size
    os.utime(tmp_path / "job.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    an.ScanCache._memo.clear()
    assert set(an.analyze([tmp_path / "job.py"]).distributions) == {"attrs"}


# ------------------------------------------------------------------------------------------- conda branch


def conda_package(channel, name, version, build, files, subdir="linux-64"):
    """A real (tiny) conda package: info/index.json, info/paths.json, info/files and the payload, .tar.bz2."""
    index = {"name": name, "version": version, "build": build, "build_number": 0, "depends": [], "subdir": subdir,
             "platform": "linux", "arch": "x86_64", "license": "MIT", "timestamp": 1700000000000}
    paths = {"paths_version": 1, "paths": [
        {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(c.encode()).hexdigest(),
         "size_in_bytes": len(c.encode())} for p, c in files.items()]}
    members = dict(files)
    members.update({"info/index.json": json.dumps(index), "info/paths.json": json.dumps(paths),
                    "info/files": "".join(p + "\n" for p in files)})
    os.makedirs(os.path.join(channel, subdir), exist_ok=True)
    with tarfile.open(os.path.join(channel, subdir, "{}-{}-{}.tar.bz2".format(name, version, build)), "w:bz2") as t:
        for arc, content in members.items():
            data = content.encode()
            info = tarfile.TarInfo(arc)
            info.size, info.mtime = len(data), 1700000000
            t.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def conda_prefix(tmp_path_factory):
    """A conda prefix installed by py-rattler from a local channel: python (a tiny stand-in record with this
    interpreter's version), condamod (module files only, no .dist-info), distmod-conda (a module plus the
    .dist-info conda packages usually carry), and six installed into it by pip (not owned by any conda record)."""
    from rattler import install, solve
    from rattler.index import index_fs

    base = tmp_path_factory.mktemp("conda")
    channel, prefix = str(base / "channel"), str(base / "prefix")
    sp = "lib/python{}/site-packages/".format(PY)
    conda_package(channel, "python", platform.python_version(), "h0_cpython", {"share/python-test/README": "x\n"})
    conda_package(channel, "condamod", "1.2.3", "h1_0", {sp + "condamod/__init__.py": "X = 1\n",
                                                        sp + "condamod/sub.py": "Y = 2\n"})
    conda_package(channel, "distmod-conda", "2.0", "py_0", {
        sp + "distmod/__init__.py": "import condamod\n",
        sp + "distmod-2.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: distmod\nVersion: 2.0\n",
        sp + "distmod-2.0.dist-info/INSTALLER": "conda\n",
        sp + "distmod-2.0.dist-info/RECORD": "distmod/__init__.py,,\n",
    })
    os.makedirs(os.path.join(channel, "noarch"), exist_ok=True)
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    records = asyncio.run(solve(["file://" + channel], ["python", "condamod", "distmod-conda"],
                                platforms=["linux-64", "noarch"]))
    asyncio.run(install(records, prefix, cache_dir=str(base / "pkgs"), show_progress=False))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--target", os.path.join(prefix, sp), "six"], check=True, stdin=subprocess.DEVNULL,
                   capture_output=True)
    return channel, prefix


def test_conda_prefix_pins_conda_packages_from_conda_meta(tmp_path, conda_prefix):
    channel, prefix = conda_prefix
    assert sorted(f for f in os.listdir(os.path.join(prefix, "conda-meta")) if f.endswith(".json")) == [
        "condamod-1.2.3-h1_0.json", "distmod-conda-2.0-py_0.json",
        "python-{}-h0_cpython.json".format(platform.python_version())]
    write(tmp_path, {"job.py": "import condamod.sub\nimport distmod\nimport six\nimport yaml\n"})
    proc = run_cli("poncho_package_analyze", "--prefix", prefix, "--allow-unresolved", "yaml", tmp_path / "job.py",
                   "-", env={"PONCHO_WQ_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    spec = json.loads(proc.stdout)
    ch = "file://" + channel
    six_version = [d.version for d in importlib.metadata.distributions(
        path=[os.path.join(prefix, "lib", "python" + PY, "site-packages")]) if d.metadata["Name"] == "six"][0]
    assert spec == {
        "conda": {"channels": [ch], "packages": sorted([
            "{}::python={}=h0_cpython".format(ch, platform.python_version()),
            "{}::condamod=1.2.3=h1_0".format(ch),
            "{}::distmod-conda=2.0=py_0".format(ch)])},
        "pip": ["six==" + six_version, "yaml"],  # yaml is not installed in that prefix
    }
    assert "python" not in spec  # recorded as the conda python package instead
    assert "yaml" in proc.stderr and "warning" in proc.stderr


def test_conda_prefix_pkg_mapping_and_extra_by_conda_name(tmp_path, conda_prefix):
    channel, prefix = conda_prefix
    write(tmp_path, {"job.py": "import cm_alias_xyz\n"})
    a = an.analyze([tmp_path / "job.py"], prefix=prefix, pkg_mapping={"cm_alias_xyz": "condamod"},
                   extra_pkgs=["distmod-conda", "six"], use_cache=False)
    ch = "file://" + channel
    assert set(a.spec.conda.packages) == {"{}::python={}=h0_cpython".format(ch, platform.python_version()),
                                          "{}::condamod=1.2.3=h1_0".format(ch),
                                          "{}::distmod-conda=2.0=py_0".format(ch)}
    assert [p.split("==")[0] for p in a.spec.pip] == ["six"]
    assert a.distributions["condamod"] == "1.2.3" and a.distributions["distmod-conda"] == "2.0"


# --------------------------------------------------------------------------------- nothing invented (issue 24)


def test_the_swig_guard_inside_a_package_invents_nothing(tmp_path, installed, cache):
    """`import _native` in the else branch of SWIG's guard became the pip requirement `native`."""
    from test_scan import SWIG

    write(tmp_path, {
        "job.py": "import mypkg.wrap\nimport flatwrap\n",
        "mypkg/__init__.py": "",
        "mypkg/wrap.py": SWIG.replace("_cwork_queue", "_native"),
        "mypkg/_native.cpython-311-x86_64-linux-gnu.so": "not loaded by the analysis\n",
        # the same guard in a top-level module: there the else branch is the live one, and resolves locally
        "flatwrap.py": SWIG.replace("_cwork_queue", "_flatnative"),
        "_flatnative.py": "",
    })
    a = an.analyze([tmp_path / "job.py"])
    assert a.spec.pip == () and a.unresolved == ()
    assert {arc for _src, arc in a.local_files} == {
        "mypkg/__init__.py", "mypkg/wrap.py", "mypkg/_native.cpython-311-x86_64-linux-gnu.so", "flatwrap.py",
        "_flatnative.py"}


def test_import_work_queue_through_cctools_alias_module(tmp_path, installed, cache):
    """CCTools' top-level work_queue.py (on PYTHONPATH, no metadata) is `import ndcctools.work_queue` plus a
    sys.modules alias; ndcctools.work_queue imports the SWIG modules cwork_queue/cresource_monitor. The issue's
    manager got cwork_queue, cresource_monitor and ipython in its spec. Manager-only modules are left out by default
    (API and CLI alike); analyzed anyway, the SWIG modules resolve to their shipped extension modules."""
    import importlib.util

    spec = importlib.util.find_spec("work_queue")
    assert spec is not None and "ndcctools.work_queue" in open(spec.origin).read(), (
        "run the tests with CCTools' build on PYTHONPATH (dev/test.sh does)")
    write(tmp_path, {"job.py": "import work_queue\nimport yaml\n"})
    a = an.analyze([tmp_path / "job.py"])
    assert list(a.spec.pip) == ["PyYAML==" + installed["PyYAML"]] and a.local_files == ()
    cli = run_cli("poncho_package_analyze", tmp_path / "job.py", "-", env={"PONCHO_WQ_CACHE": str(cache)})
    assert cli.returncode == 0 and json.loads(cli.stdout) == a.spec.to_dict()
    b = an.analyze([tmp_path / "job.py"], exclude=())
    text = json.dumps(b.spec.to_dict()).lower()
    assert not [w for w in ("cwork", "cresource", "ipython", "native") if w in text], text
    assert b.unresolved == ()
    arcs = {arc for _src, arc in b.local_files}
    assert {"work_queue.py", "ndcctools/work_queue.py", "ndcctools/cwork_queue.py"} <= arcs
    assert any(arc.startswith("ndcctools/_cwork_queue") and arc.endswith(".so") for arc in arcs)


def test_a_sys_path_directory_is_local_code(tmp_path, installed, cache, monkeypatch):
    """`import utils` through sys.path.insert(0, <script dir>/lib) became the index's unrelated `utils`; the task
    failed with AttributeError on the worker."""
    write(tmp_path, {
        "proj/job.py": """
            import os, sys
            from pathlib import Path
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
            sys.path.append(str(Path(__file__).parent / "extra"))
            import utils
            import attr          # lib/attr.py: inserted in front, it shadows the installed attrs
            import yaml          # extra/yaml.py: appended, the installed PyYAML wins
            import helpers_only_in_extra
        """,
        "proj/lib/utils.py": "def hello():\n    return 'hi'\nimport deeper\n",
        "proj/lib/deeper.py": "",
        "proj/lib/attr.py": "",
        "proj/extra/yaml.py": "",
        "proj/extra/helpers_only_in_extra.py": "",
    })
    monkeypatch.chdir(tmp_path)
    a = an.analyze([tmp_path / "proj" / "job.py"])
    assert list(a.spec.pip) == ["PyYAML==" + installed["PyYAML"]]
    assert {arc for _src, arc in a.local_files} == {"utils.py", "deeper.py", "attr.py", "helpers_only_in_extra.py"}


def test_a_typo_is_an_error_before_any_build(tmp_path, installed, cache):
    from poncho_wq import Environment

    write(tmp_path, {"job.py": "import yaml\nimport tabulat\n"})
    with pytest.raises(SpecError) as e:
        Environment.from_script(str(tmp_path / "job.py")).build()
    assert "job.py:2: import tabulat is not installed here" in str(e.value)
    assert "--allow-unresolved tabulat" in str(e.value) and "allow_unresolved=['tabulat']" in str(e.value)
    assert not os.path.exists(os.path.join(str(cache), "envs"))
    a = an.analyze([tmp_path / "job.py"], allow_unresolved=["tabulat"])
    assert "tabulat" in a.spec.pip and a.unresolved == ("tabulat",)
    assert a.why("tabulat")[0].startswith("import tabulat, allowed unresolved (")


def test_optional_and_dead_imports_are_not_requirements(tmp_path, installed, cache):
    write(tmp_path, {
        "job.py": """
            import sys, os
            import pkg.mod
            try:
                import fast_json_not_installed_xyz as json
            except ImportError:
                import json
            if sys.version_info[0] == 2:
                import urllib2
            if sys.platform == "win32":
                import winthing_not_installed_xyz
            elif os.name == "nt":
                import ntthing_not_installed_xyz
            __import__("os;rm -rf /")
        """,
        "pkg/__init__.py": "",
        # the relative-import fallback: `import yaml` would pin the unrelated installed PyYAML
        "pkg/mod.py": "try:\n    from . import yaml\nexcept ImportError:\n    import yaml\n",
        "pkg/yaml.py": "",
    })
    a = an.analyze([tmp_path / "job.py"])
    assert a.spec.pip == () and a.unresolved == () and a.warnings == ()


def test_the_lock_is_the_installed_closure_with_why(tmp_path, installed, cache):
    import importlib.metadata

    write(tmp_path, {"job.py": "from bs4 import BeautifulSoup\nimport yaml\n"})
    a = an.analyze([tmp_path / "job.py"])
    v = importlib.metadata.version
    assert list(a.spec.pip) == ["beautifulsoup4==" + v("beautifulsoup4"), "PyYAML==" + v("PyYAML"),
                                "soupsieve==" + v("soupsieve"), "typing_extensions==" + v("typing_extensions")]
    assert list(a.direct_spec.pip) == ["beautifulsoup4==" + v("beautifulsoup4"), "PyYAML==" + v("PyYAML")]
    assert a.why("beautifulsoup4") == ("import bs4 ({}:1)".format(tmp_path / "job.py"),)
    assert a.why("Soupsieve") == ("required by beautifulsoup4",)
    assert a.build_why()["typing-extensions"] == ("required by beautifulsoup4",)
    assert a.build_why()["pyyaml"] == ("import yaml",)
    assert dict(a.distributions)["soupsieve"] == v("soupsieve")


def test_the_why_an_environment_carries_does_not_move_with_lines(tmp_path, installed, cache):
    """poncho/lock.json's why is part of the base's cache key: an edit that only moves an import must not make a
    new base (layered environments exist so that code edits do not rebuild it); Analysis.why keeps the line."""
    write(tmp_path, {"job.py": "import yaml\n"})
    first = an.analyze([tmp_path / "job.py"], use_cache=False)
    write(tmp_path, {"job.py": "# a comment\n\nimport yaml\n"})
    moved = an.analyze([tmp_path / "job.py"], use_cache=False)
    assert first.why("PyYAML") != moved.why("PyYAML") and moved.why("PyYAML")[0].endswith("job.py:3)")
    assert first.build_why() == moved.build_why() == {"pyyaml": ("import yaml",)}
