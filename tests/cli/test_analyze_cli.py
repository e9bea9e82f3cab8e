"""poncho_package_analyze / python_package_analyze, run as installed console scripts on real script trees.

Pins are checked against the environment the tests run in: the packages below are installed from PyPI in the
session set-up, and their versions are read back with importlib.metadata (no fake metadata anywhere). Their
import names differ from their distribution names on purpose (yaml/PyYAML, dateutil/python-dateutil,
bs4/beautifulsoup4, attr/attrs).
"""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from helpers.cli import run_cli

DISTS = {"yaml": "PyYAML", "dateutil": "python-dateutil", "bs4": "beautifulsoup4", "attr": "attrs"}


@pytest.fixture(scope="session")
def installed():
    """Install the real packages the tests import, and return {distribution: installed version}."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + list(DISTS.values()),
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    importlib.invalidate_caches()
    return {d: importlib.metadata.version(d) for d in DISTS.values()}


@pytest.fixture
def env(tmp_path):
    """Each test gets its own analyze cache (so caching is exercised but never shared between tests)."""
    return {"PONCHO_WQ_CACHE": str(tmp_path / "cache")}


def write(root, files):
    for rel, text in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))


def analyze(*args, env=None, input=None, cwd=None, name="poncho_package_analyze"):
    """Run the CLI with output on stdout; return (spec dict, stderr) after checking it succeeded."""
    proc = run_cli(name, *args, "-", env=env, input=input, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def closure(*dists):
    """The installed dependency closure of *dists* (names as installed), read with importlib.metadata and packaging
    here, independently of poncho_wq's own walk: the analyzer pins every distribution of it (issue 24)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = dict(default_environment(), extra="")
    seen, todo = {}, list(dists)
    while todo:
        name = todo.pop()
        meta = importlib.metadata.metadata(name)
        if canonicalize_name(meta["Name"]) in seen:
            continue
        seen[canonicalize_name(meta["Name"])] = "{}=={}".format(meta["Name"], meta["Version"])
        for text in importlib.metadata.requires(name) or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                try:
                    importlib.metadata.version(req.name)
                except importlib.metadata.PackageNotFoundError:
                    continue
                todo.append(req.name)
    return set(seen.values())


def pins(installed, *dists):
    """The lock of *dists*: themselves and their installed closure, each pinned to the installed version."""
    out = {"{}=={}".format(d, installed[d]) for d in dists}
    out |= closure(*dists)
    return sorted(out, key=str.lower)


def pip_set(spec):
    return sorted(spec.get("pip", []), key=str.lower)


def test_maps_import_names_to_installed_distributions_with_exact_pins(tmp_path, installed, env):
    write(tmp_path, {"job.py": """
        import os, sys, json, pickle
        import yaml
        import dateutil.parser
        from bs4 import BeautifulSoup
        import attr as attrs_alias
    """})
    spec, err = analyze(tmp_path / "job.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML", "python-dateutil", "beautifulsoup4", "attrs")
    assert spec["python"] == platform.python_version()
    assert "conda" not in spec
    assert "warning" not in err


def test_both_command_names_write_the_same_file(tmp_path, installed, env):
    write(tmp_path, {"job.py": "import yaml\n"})
    for name in ("poncho_package_analyze", "python_package_analyze"):
        out = tmp_path / (name + ".json")
        proc = run_cli(name, tmp_path / "job.py", out, env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(out.read_text()) == {"python": platform.python_version(),
                                               "pip": pins(installed, "PyYAML")}


def test_every_import_form_is_found(tmp_path, installed, env):
    write(tmp_path, {"job.py": """
        from __future__ import annotations
        import importlib
        import collections.abc as cabc
        from os import path as p

        if os_name := "x":
            import yaml.constructor as yc

        def f():
            from dateutil import tz

        class K:
            def m(self):
                with open("x") as fh:
                    for _ in range(3):
                        while True:
                            from bs4.element import Tag

        mod = importlib.import_module("attr")
    """})
    spec, _ = analyze(tmp_path / "job.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML", "python-dateutil", "beautifulsoup4", "attrs")


def test_dunder_import_literal_is_found(tmp_path, installed, env):
    write(tmp_path, {"job.py": "m = __import__('yaml')\nn = __import__(name_from_elsewhere)\n"})
    spec, _ = analyze(tmp_path / "job.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML")


def test_type_checking_imports_are_not_runtime_requirements(tmp_path, installed, env):
    write(tmp_path, {"job.py": """
        import typing
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import bs4
            from attr import Attribute
        if typing.TYPE_CHECKING:
            import dateutil
        else:
            import yaml
    """})
    spec, _ = analyze(tmp_path / "job.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML")


def test_missing_optional_import_is_not_an_error(tmp_path, installed, env):
    write(tmp_path, {"job.py": """
        try:
            import ujson_not_installed_xyz as json
        except ImportError:
            import json
        try:
            import yaml
        except ModuleNotFoundError:
            yaml = None
        try:
            import fast_thing_not_installed_xyz
        except ImportError:
            import fallback_not_installed_xyz
        import contextlib
        with contextlib.suppress(ImportError):
            import other_not_installed_xyz
    """})
    spec, err = analyze(tmp_path / "job.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML")  # optional but installed: pinned
    assert "warning" not in err
    assert "not_installed_xyz" not in json.dumps(spec)


def test_missing_required_import_is_an_error_unless_allowed(tmp_path, installed, env):
    """Issue 24: an import nothing provides is never sent to an index as a guessed package name (a typo, a local
    module the analysis cannot see, the dependency-confusion pattern): exit 1 naming file, line, module and the
    fixes, no output; --allow-unresolved NAME lists it unpinned."""
    write(tmp_path, {"job.py": "import yaml\nimport surely_not_installed_pkg_xyz\n"})
    out = tmp_path / "spec.json"
    proc = run_cli("poncho_package_analyze", tmp_path / "job.py", out, env=env)
    assert proc.returncode == 1 and not out.exists()
    (line,) = proc.stderr.strip().splitlines()
    assert "job.py:2: import surely_not_installed_pkg_xyz" in line
    assert "--allow-unresolved surely_not_installed_pkg_xyz" in line and "--pkg-mapping" in line
    spec, err = analyze("--allow-unresolved", "surely_not_installed_pkg_xyz", tmp_path / "job.py", env=env)
    assert pip_set(spec) == sorted(pins(installed, "PyYAML") + ["surely_not_installed_pkg_xyz"], key=str.lower)
    warning = [line for line in err.splitlines() if "surely_not_installed_pkg_xyz" in line]
    assert len(warning) == 1 and "warning" in warning[0] and "job.py:2" in warning[0]


def test_a_typo_is_an_error_and_nothing_is_built(tmp_path, installed, env):
    """The issue's case: `import tabulat` went to the index. Now analyze and create both stop at the analysis."""
    write(tmp_path, {"job.py": "import yaml\nimport tabulat\n"})
    proc = run_cli("poncho_package_analyze", tmp_path / "job.py", "-", env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "job.py:2: import tabulat is not installed here" in proc.stderr
    assert not os.path.exists(os.path.join(env["PONCHO_WQ_CACHE"], "envs"))


def test_standard_library_is_excluded_for_the_target_version(tmp_path, installed, env):
    write(tmp_path, {"job.py": "import tomllib\nimport asyncio, sqlite3, zoneinfo\nimport yaml\n"})
    spec, err = analyze(tmp_path / "job.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML")
    # tomllib and zoneinfo are not in Python 3.8's standard library (stdlib-list knows).
    proc = run_cli("poncho_package_analyze", "--python-version", "3.8", tmp_path / "job.py", "-", env=env)
    assert proc.returncode == 1 and "import tomllib" in proc.stderr and "import zoneinfo" in proc.stderr
    spec, err = analyze("--python-version", "3.8", "--allow-unresolved", "tomllib", "--allow-unresolved",
                        "zoneinfo", tmp_path / "job.py", env=env)
    assert spec["python"] == "3.8"
    assert pip_set(spec) == sorted(pins(installed, "PyYAML") + ["tomllib", "zoneinfo"], key=str.lower)
    assert "tomllib" in err and "zoneinfo" in err


def test_local_modules_and_packages_are_followed_not_listed(tmp_path, installed, env):
    write(tmp_path, {
        "proj/job.py": """
            import helper
            from mypkg import api
            import mypkg.util as u
        """,
        "proj/helper.py": "import yaml\n",
        "proj/mypkg/__init__.py": "from . import core\nfrom .sub import deep\n",
        "proj/mypkg/core.py": "import dateutil\n",
        "proj/mypkg/api.py": "from .core import *\n",
        "proj/mypkg/util.py": "from ..helper import *\n",
        "proj/mypkg/sub/__init__.py": "",
        "proj/mypkg/sub/deep.py": "def f():\n    import bs4\n",
        "proj/unused.py": "import attr\n",
    })
    spec, err = analyze("--local-files", tmp_path / "proj" / "job.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML", "python-dateutil", "beautifulsoup4")
    shipped = sorted(line.split(" -> ")[1] for line in err.splitlines() if "local file:" in line)
    assert shipped == ["helper.py", "mypkg/__init__.py", "mypkg/api.py", "mypkg/core.py", "mypkg/sub/__init__.py",
                       "mypkg/sub/deep.py", "mypkg/util.py"]
    assert "mypkg" not in json.dumps(spec) and "helper" not in json.dumps(spec)


def test_script_inside_a_package_resolves_its_project(tmp_path, installed, env):
    write(tmp_path, {
        "proj/app/__init__.py": "",
        "proj/app/cli/__init__.py": "",
        "proj/app/cli/main.py": "from .. import models\nfrom app.cli import opts\n",
        "proj/app/cli/opts.py": "import attr\n",
        "proj/app/models.py": "import yaml\n",
    })
    spec, err = analyze("--local-files", tmp_path / "proj/app/cli/main.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML", "attrs")
    shipped = sorted(line.split(" -> ")[1] for line in err.splitlines() if "local file:" in line)
    assert shipped == ["app/__init__.py", "app/cli/__init__.py", "app/cli/opts.py", "app/models.py"]


def test_toplevel_and_function_select_imports(tmp_path, installed, env):
    write(tmp_path, {"job.py": """
        import yaml
        if True:
            import attr
        def work():
            import dateutil
            def inner():
                import bs4
        class C:
            def run(self):
                import surely_not_installed_pkg_xyz
    """})
    script = tmp_path / "job.py"
    spec, _ = analyze("--toplevel", script, env=env)
    assert pip_set(spec) == pins(installed, "PyYAML", "attrs")
    spec, _ = analyze("--function", "work", script, env=env)
    assert pip_set(spec) == pins(installed, "python-dateutil", "beautifulsoup4")
    spec, _ = analyze("--function", "C.run", "--allow-unresolved", "surely_not_installed_pkg_xyz", script, env=env)
    assert pip_set(spec) == ["surely_not_installed_pkg_xyz"]
    proc = run_cli("poncho_package_analyze", "--function", "nope", script, "-", env=env)
    assert proc.returncode == 1 and "nope" in proc.stderr and proc.stdout == ""


def test_pkg_mapping_overrides_and_extra_pkg_adds(tmp_path, installed, env):
    write(tmp_path, {"job.py": "import yaml\nimport cv2_not_installed_xyz\n"})
    spec, err = analyze("--pkg-mapping", "cv2_not_installed_xyz=attrs", "--pkg-mapping", "yaml=ruamel.yaml>=0.17",
                        "--extra-pkg", "python-dateutil", "--extra-pkg", "beautifulsoup4<5", tmp_path / "job.py",
                        env=env)
    assert pip_set(spec) == sorted(pins(installed, "attrs", "python-dateutil") + ["beautifulsoup4<5",
                                                                                 "ruamel.yaml>=0.17"], key=str.lower)
    assert "warning" not in err
    spec, err = analyze("--extra-pkg", "not_installed_extra_xyz", "--pkg-mapping", "cv2_not_installed_xyz=attrs",
                        tmp_path / "job.py", env=env)
    assert "not_installed_extra_xyz" in spec["pip"] and "not_installed_extra_xyz" in err


def test_stdin_script_and_stdout_output(tmp_path, installed, env):
    spec, _ = analyze("-", env=env, input="import yaml\nfrom dateutil import tz\n")
    assert pip_set(spec) == pins(installed, "PyYAML", "python-dateutil")


def test_parsl_call_file_plus_stdin_to_yaml_named_output(tmp_path, installed, env):
    """Parsl runs `poncho_package_analyze <file.py> - <spec.yaml>` with more source on stdin."""
    write(tmp_path, {"app.py": "import yaml\n"})
    out = tmp_path / "spec.yaml"
    proc = run_cli("poncho_package_analyze", tmp_path / "app.py", "-", out, input="import bs4\n", env=env)
    assert proc.returncode == 0, proc.stderr
    assert pip_set(json.loads(out.read_text())) == pins(installed, "beautifulsoup4", "PyYAML")


def test_python_m_poncho_wq_analyze(tmp_path, installed, env):
    write(tmp_path, {"job.py": "import attr\n"})
    proc = subprocess.run([sys.executable, "-m", "poncho_wq", "analyze", str(tmp_path / "job.py"), "-"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stderr
    assert pip_set(json.loads(proc.stdout)) == pins(installed, "attrs")


def test_manager_only_modules_are_left_out_as_by_the_api(tmp_path, installed, env):
    """Issue 24: the CLI listed poncho_wq's own dependencies (conda-pack, py-rattler, ...) for a manager script
    importing poncho_wq; the API left them out. Both share one analysis now. (This test used poncho_wq, installed
    editable, to show editable distributions travelling as code: tests/engines/test_build_current.py covers that with a
    real editable project.)"""
    write(tmp_path, {"job.py": "import poncho_wq.spec\nimport work_queue\nimport ndcctools.taskvine\nimport yaml\n"})
    spec, err = analyze("--local-files", tmp_path / "job.py", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML")
    assert "poncho_wq" not in err and "local file" not in err
    from poncho_wq.analysis.analyzer import analyze as api_analyze

    assert api_analyze([tmp_path / "job.py"]).spec.to_dict() == spec


# ------------------------------------------------------------------------------------------------ bad inputs


def test_missing_script_exits_2_and_writes_nothing(tmp_path, env):
    out = tmp_path / "out.json"
    proc = run_cli("poncho_package_analyze", tmp_path / "nope.py", out, env=env)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope.py" in proc.stderr
    assert not out.exists() and os.listdir(tmp_path) == []


def test_syntax_error_names_file_and_line_and_writes_nothing(tmp_path, env):
    write(tmp_path, {"job.py": "import yaml\n\ndef broken(:\n    pass\n"})
    out = tmp_path / "out.json"
    proc = run_cli("poncho_package_analyze", tmp_path / "job.py", out, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "job.py:3" in lines[0] and "syntax" in lines[0]
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["job.py"]


def test_syntax_error_in_a_followed_local_module_is_reported(tmp_path, env):
    write(tmp_path, {"job.py": "import helper\n", "helper.py": "x = (\n"})
    proc = run_cli("poncho_package_analyze", tmp_path / "job.py", tmp_path / "out.json", env=env)
    assert proc.returncode == 1 and "helper.py:1" in proc.stderr
    assert not (tmp_path / "out.json").exists()


def test_syntax_error_on_stdin(tmp_path, env):
    proc = run_cli("poncho_package_analyze", "-", "-", input="if x\n", env=env)
    assert proc.returncode == 1 and "<stdin>:1" in proc.stderr and proc.stdout == ""


def test_existing_output_is_untouched_on_error(tmp_path, env):
    write(tmp_path, {"job.py": "def (\n"})
    out = tmp_path / "out.json"
    out.write_text("previous\n")
    proc = run_cli("poncho_package_analyze", tmp_path / "job.py", out, env=env)
    assert proc.returncode == 1 and out.read_text() == "previous\n"
    assert sorted(os.listdir(tmp_path)) == ["job.py", "out.json"]


@pytest.mark.parametrize("args", [
    [],
    ["only_one.py"],
    ["--toplevel", "--function", "f", "a.py", "out.json"],
    ["--pkg-mapping", "novalue", "a.py", "out.json"],
    ["--bogus-option", "a.py", "out.json"],
    ["-", "-", "-"],
    ["--python-version", "2.7", "a.py", "-"],
])
def test_usage_errors_exit_1(tmp_path, env, args):
    write(tmp_path, {"a.py": "import os\n"})
    proc = run_cli("poncho_package_analyze", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 1, (args, proc.stderr)
    assert "error" in proc.stderr and proc.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["a.py"]


def test_directory_argument_and_non_utf8_file(tmp_path, installed, env):
    write(tmp_path, {"tree/a.py": "import yaml\n", "tree/sub/b.py": "import a\nimport attr\n"})
    (tmp_path / "tree" / "bad.py").write_bytes(b"# no coding cookie\nx = '\xff'\n")
    proc = run_cli("poncho_package_analyze", tmp_path / "tree", "-", env=env)
    assert proc.returncode == 1 and "bad.py" in proc.stderr
    (tmp_path / "tree" / "bad.py").unlink()
    spec, _ = analyze(tmp_path / "tree", env=env)
    assert pip_set(spec) == pins(installed, "PyYAML", "attrs")


def test_quiet_silences_warnings(tmp_path, env):
    write(tmp_path, {"job.py": "import surely_not_installed_pkg_xyz\n"})
    proc = run_cli("poncho_package_analyze", "--quiet", "--allow-unresolved", "surely_not_installed_pkg_xyz",
                   tmp_path / "job.py", "-", env=env)
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink", "second script", "inside dir"])
def test_output_that_is_an_input_is_refused(tmp_path, env, how):
    """Issue 11 item 13: writing the JSON over a script destroyed it. Same path after resolving symlinks, or the
    same file through a hard link, or a .py file of a directory argument: exit 1, both named, nothing changed."""
    write(tmp_path, {"a.py": "import os\n", "b.py": "import json\n", "tree/c.py": "import sys\n"})
    scripts, out = [tmp_path / "a.py"], tmp_path / "a.py"
    if how == "relative":
        out = "./a.py"
    elif how == "symlink":
        out = tmp_path / "out.json"
        out.symlink_to(tmp_path / "a.py")
    elif how == "hardlink":
        out = tmp_path / "out.json"
        os.link(tmp_path / "a.py", out)
    elif how == "second script":
        scripts, out = [tmp_path / "a.py", tmp_path / "b.py"], tmp_path / "b.py"
    elif how == "inside dir":
        scripts, out = [tmp_path / "tree"], tmp_path / "tree" / "c.py"
    before = {p: p.read_text() for p in tmp_path.rglob("*.py")}
    proc = run_cli("poncho_package_analyze", *scripts, out, cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and str(out) in proc.stderr and "is the input" in proc.stderr
    assert {p: p.read_text() for p in tmp_path.rglob("*.py")} == before
    ok = run_cli("poncho_package_analyze", *scripts, "-", cwd=tmp_path, env=env)  # stdout is never an input
    assert ok.returncode == 0 and json.loads(ok.stdout) is not None, ok.stderr
