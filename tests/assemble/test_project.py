"""Jobs as projects and requirements files (issue 18): ``Environment.from_project`` / ``--from-project`` (a
Klio-style setup.py job and a PEP 621 package, built here as real wheels), ``Environment.from_requirements``, bad
input in one line with its exit code and nothing partial left, the analysis taking a project as a hint, and each
entry point running as PonchoTasks on real workers with a scrubbed PATH, reading its data.

The sections marked "review of issue 18" hold the regressions of a careless-or-hostile-user review (each failed
before its fix): projects whose cache lies inside them, whose package data is a link to a shared file, whose setup.py
only *mentions* apt-get, extras that do not exist; requirements with credentials in URLs or a missing ``-r``; the
analysis hint without ``tomllib``, with a malformed pyproject.toml, and a project edited between two tasks of one
process. The review's ``files=`` cases are in tests/deliver/test_task_files.py."""

import json
import os
import sys
import tarfile

import pytest

from helpers.cli import run_cli, run_ok, script
from helpers.paths import REPO
from helpers.venvs import child_venv, make_venv
from poncho_wq import Environment, analyze
from poncho_wq.errors import BuildError, InputMissing, SpecError
from poncho_wq.assemble.project import build_project, check_os_installs

KLIO_SETUP = '''\
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildInfo(build_py):
    """A custom build step (Beam's recipe): it runs on the manager at build time, its output ships."""

    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, "build_info.py"), "w") as f:
            f.write("STEP = 'cmdclass'\\n")


setup(
    name="klio-job",
    version="0.1",
    py_modules=["run", "transforms"],
    install_requires=["attrs>=21"],
    data_files=[(".", ["job.yaml", "my-model.h5"])],
    cmdclass={"build_py": BuildInfo},
)
'''
KLIO_RUN = '''\
import os
import sys
import sys

import attr
import build_info
import transforms

with open("job.yaml") as f:
    name = f.read().split(":")[1].strip()
with open("my-model.h5", "rb") as f:
    model = f.read().decode()
print("RESULT", sys.argv[1], transforms.double(21), model, name, build_info.STEP,
      attr.__file__.startswith(sys.prefix), os.path.exists("notes.txt"), os.path.exists("setup.py"))
'''
PEP621 = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "pepjob"
version = "1.2"
dependencies = ["humanize>=4"]

[project.optional-dependencies]
fmt = ["attrs"]

[project.scripts]
pepjob-hello = "pepjob.cli:main"

[tool.setuptools]
packages = ["pepjob"]

[tool.setuptools.package-data]
pepjob = ["schema.json", "templates/*.txt"]
'''
PEP_MAIN = '''\
import importlib.metadata
import importlib.resources
import json
import sys

import attr
import humanize

schema = json.loads(importlib.resources.files("pepjob").joinpath("schema.json").read_text())
greeting = importlib.resources.files("pepjob").joinpath("templates/hello.txt").read_text().strip()
print("RESULT", sys.argv[1], schema["kind"], greeting, importlib.metadata.version("pepjob"),
      humanize.intword(3 * 10 ** 6), attr.__name__)
'''


def klio_project(root):
    root.mkdir(parents=True)
    (root / "setup.py").write_text(KLIO_SETUP)
    (root / "run.py").write_text(KLIO_RUN)
    (root / "transforms.py").write_text("def double(x):\n    return 2 * x\n")
    (root / "job.yaml").write_text("job_name: klio-job\n")
    (root / "my-model.h5").write_bytes(b"MODEL")
    (root / "notes.txt").write_text("an sdist input only\n")
    (root / "MANIFEST.in").write_text("include notes.txt\n")
    return root


def pep621_project(root):
    (root / "pepjob" / "templates").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PEP621)
    (root / "pepjob" / "__init__.py").write_text("")
    (root / "pepjob" / "__main__.py").write_text(PEP_MAIN)
    (root / "pepjob" / "cli.py").write_text("def main():\n    print('TOOL pepjob-hello')\n    return 0\n")
    (root / "pepjob" / "schema.json").write_text(json.dumps({"kind": "schema-v1"}))
    (root / "pepjob" / "templates" / "hello.txt").write_text("hello\n")
    (root / "pepjob" / "unlisted.bin").write_bytes(b"not package data")
    return root


def _listing(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _dirs, names in os.walk(root) for n in names)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A venv over this interpreter's site-packages with ``wheel`` added: setuptools 65's bdist_wheel needs it, so
    here the build requirements are all installed and projects build without isolation, hence without network."""
    root = tmp_path_factory.mktemp("project-venv")
    return child_venv(root / "venv")  # wheel, humanize and attrs: declared test dependencies


OFFLINE = {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_FIND_LINKS": ""}


# ------------------------------------------------------------------------------------------------- builds


@pytest.mark.e2e
def test_klio_wheel_splits_into_code_data_and_dependencies_offline(tmp_path, venv, monkeypatch):
    """No network (the index is unreachable): the build requirements are installed, so there is no isolation."""
    project = klio_project(tmp_path / "job")
    before = _listing(project)
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    p = build_project(str(project), python=venv, cache_dir=str(tmp_path / "cache"))
    assert p.name == "klio-job" and p.version == "0.1"
    lib = {arc for _src, arc in p.lib}
    assert {"run.py", "transforms.py", "build_info.py", "klio_job-0.1.dist-info/METADATA"} <= lib
    assert not any(a.endswith(("RECORD", "INSTALLER")) for a in lib)
    assert sorted(arc for _src, arc in p.data) == ["job.yaml", "my-model.h5"]
    assert not any("notes.txt" in a for a in lib | {arc for _s, arc in p.data})  # MANIFEST.in-only
    assert p.dependencies() == ["attrs>=21"]
    assert _listing(project) == before  # built from a copy: no build/, no *.egg-info in the project
    again = build_project(str(project), python=venv, cache_dir=str(tmp_path / "cache"))
    assert again.wheel == p.wheel  # cached by content
    (project / "transforms.py").write_text("def double(x):\n    return x + x\n")
    assert build_project(str(project), python=venv, cache_dir=str(tmp_path / "cache")).wheel != p.wheel


@pytest.mark.e2e
def test_pep621_extras_and_package_data(tmp_path, venv):
    env = Environment.from_project(pep621_project(tmp_path / "pep"), extras=["fmt"], python=venv)
    assert sorted(env.spec.pip) == ["attrs", "humanize>=4"]
    arcs = {arc for _src, arc in env.local_files}
    assert {"pepjob/__init__.py", "pepjob/__main__.py", "pepjob/schema.json", "pepjob/templates/hello.txt"} <= arcs
    assert "pepjob/unlisted.bin" not in arcs and env.files == ()
    assert [arc for arc, _src in env.layer_members] == ["bin/pepjob-hello"]  # console script wrapper
    assert list(Environment.from_project(tmp_path / "pep", python=venv).spec.pip) == ["humanize>=4"]


@pytest.mark.e2e
def test_cli_from_project_writes_one_tarball(tmp_path, venv):
    project = klio_project(tmp_path / "job")
    out = tmp_path / "env.tar.gz"
    r = run_cli("poncho_package_create", "-q", "--from-project", "--python", venv, "--cache-dir",
                tmp_path / "cache", project, out)
    assert r.returncode == 0, r.stderr
    with tarfile.open(str(out)) as tar:
        names = set(tar.getnames())
    for want in ("site-packages/run.py", "site-packages/transforms.py", "site-packages/attr/__init__.py"):
        assert any(n.endswith(want) for n in names), want
    assert {"job.yaml", "my-model.h5"} <= names  # data_files: relative to the prefix, as pip installs them


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.e2e
def test_a_project_that_fails_to_build_is_one_line_exit_3_nothing_left(tmp_path, venv):
    project = tmp_path / "badjob"
    project.mkdir()
    (project / "setup.py").write_text("from setuptools import setup\nsetup(name='badjob', version='1',\n"
                                      "      py_modules=['missing_module'], install_requires=['attrs'])\n"
                                      "raise RuntimeError('the job setup is broken')\n")
    before = _listing(project)
    out, cache = tmp_path / "env.tar.gz", tmp_path / "cache"
    r = run_cli("poncho_package_create", "--from-project", "--python", venv, "--cache-dir", cache, project, out)
    assert r.returncode == 3, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "error:" in x]
    assert r.stderr.strip().splitlines()[-1] == line
    assert str(project) in line and "the job setup is broken" in line and "fix the project" in line
    assert not out.exists() and _listing(project) == before
    assert os.listdir(cache / "projects") == []  # the scratch build is gone, nothing published
    with pytest.raises(BuildError):
        build_project(str(project), python=venv, cache_dir=str(cache))


@pytest.mark.e2e
def test_isolated_build_without_network_says_what_to_install(tmp_path, monkeypatch):
    """An interpreter without ``wheel`` (a plain venv: ensurepip's pip and setuptools only): the build needs
    isolation, which needs the (here unreachable) index."""
    project = klio_project(tmp_path / "job")
    make_venv(tmp_path / "plain")
    plain = str(tmp_path / "plain" / "bin" / "python")
    assert run_ok([plain, "-c", "import importlib.util as u; print(u.find_spec('wheel') is None)"]).stdout.strip() \
        == "True"
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(BuildError) as e:
        build_project(str(project), python=plain, cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert "\n" not in msg and str(project) in msg and "install its build requirements here" in msg, msg


def test_apt_get_steps_are_refused_before_anything_runs(tmp_path):
    project = tmp_path / "aptjob"
    project.mkdir()
    (project / "setup.py").write_text(
        "import subprocess\nfrom setuptools import setup\n"
        "CUSTOM_COMMANDS = [['apt-get', 'update'], ['apt-get', '--assume-yes', 'install', 'libjpeg62']]\n"
        "open('RAN', 'w').close()\nsetup(name='aptjob', version='1')\n")
    r = run_cli("poncho_package_create", "--from-project", "--cache-dir", tmp_path / "cache", project,
                tmp_path / "o.tar.gz")
    assert r.returncode == 1, r.stderr
    assert "apt-get" in r.stderr and "conda spec" in r.stderr and "line 3" in r.stderr
    assert not (project / "RAN").exists() and not (tmp_path / "o.tar.gz").exists()
    (project / "setup.py").write_text("# apt-get is only mentioned in a comment\nfrom setuptools import setup\n"
                                      "setup(name='x', version='1', description='an apt job')\n")
    check_os_installs(str(project))  # a comment is not a step
    (project / "setup.py").write_text("import os\nos.system('yum -y install gcc')\n")
    with pytest.raises(SpecError):
        check_os_installs(str(project))


@pytest.mark.e2e
def test_an_os_install_seen_only_in_the_build_output_is_refused_too(tmp_path, venv):
    project = tmp_path / "hidden"
    project.mkdir()
    (project / "setup.py").write_text("import subprocess\nfrom setuptools import setup\n"
                                      "subprocess.check_call(['ap' + 't-get', '--no-such-option'])\n"
                                      "setup(name='hidden', version='1')\n")
    check_os_installs(str(project))  # not visible in the source text
    with pytest.raises(BuildError) as e:
        build_project(str(project), python=venv, cache_dir=str(tmp_path / "cache"))
    assert "mentions apt-get" in str(e.value) and "conda spec" in str(e.value) and "\n" not in str(e.value)


def test_scratch_builds_left_by_a_killed_process_are_swept(tmp_path):
    import time

    from poncho_wq.assemble.project import STALE_SECONDS, sweep

    old, young, entry = tmp_path / ".tmp-aaaa-1", tmp_path / ".tmp-bbbb-2", tmp_path / "cccc"
    for d in (old, young, entry):
        (d / "src").mkdir(parents=True)
    past = time.time() - STALE_SECONDS - 60
    os.utime(str(old), (past, past))
    os.utime(str(entry), (past, past))
    assert sweep(str(tmp_path)) == [str(old)]
    assert not old.exists() and young.exists() and entry.exists()  # a running build's, and a published build


def test_not_a_project(tmp_path):
    with pytest.raises(InputMissing):
        build_project(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError) as e:
        build_project(str(tmp_path / "empty"))
    assert "no pyproject.toml or setup.py" in str(e.value)
    r = run_cli("poncho_package_create", "--extra", "x", tmp_path / "spec.json", tmp_path / "o.tar.gz")
    assert r.returncode == 1 and "--from-project" in r.stderr
    r = run_cli("poncho_package_create", "--from-project", "--from-current-env", tmp_path / "empty",
                tmp_path / "o.tar.gz")
    assert r.returncode == 1 and "package index" in r.stderr


# --------------------------------- bad projects a careless user makes (review of issue 18: each failed before its fix)

def test_os_install_check_reads_code_not_prose(tmp_path):
    from poncho_wq.assemble.project import check_os_installs

    (tmp_path / "setup.py").write_text(
        '"""Build notes: on Debian run apt-get install libfoo-dev first."""\n'
        "from setuptools import setup\n"
        "setup(name='x', version='1', description='helpers for apt-get users',\n"
        "      long_description='pip or apt install, then run')\n")
    (tmp_path / "setup.cfg").write_text("[metadata]\ndescription = wraps apt-get\n")
    check_os_installs(str(tmp_path))  # prose, a docstring and a declarative setup.cfg are not steps
    (tmp_path / "setup.py").write_text("import os\nfrom setuptools import setup\n"
                                       "os.system('sudo apt-get install -y libjpeg62')  # step #1\n")
    with pytest.raises(SpecError) as e:
        check_os_installs(str(tmp_path))
    assert "line 3" in str(e.value) and "apt-get" in str(e.value)
    (tmp_path / "setup.py").write_text("import subprocess\nsubprocess.check_call(['yum', '-y', 'install', 'gcc'])\n")
    with pytest.raises(SpecError):
        check_os_installs(str(tmp_path))


def test_build_requires_that_is_not_a_list_is_one_line(tmp_path):
    from poncho_wq.assemble.project import missing_build_requirements

    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = "setuptools"\n')
    with pytest.raises(SpecError) as e:
        missing_build_requirements(str(tmp_path))  # was ['s', 'e', 't', 'u', ...]: a build isolation for nothing
    assert "not a list of strings" in str(e.value)


def test_a_console_script_named_like_the_interpreter_is_refused(tmp_path):
    """A ``python3`` wrapper (``#!/usr/bin/env python3``) first on PATH would exec itself forever."""
    from poncho_wq.assemble.project import Project, bin_members

    def project(*names):
        return Project(source="/jobs/p", name="p", version="1", wheel="", requires=(), lib=(), data=(),
                       bin=tuple(("/c/bin/" + n, n) for n in names))

    assert bin_members(project("pepjob-hello", "python-tool")) == (("bin/pepjob-hello", "/c/bin/pepjob-hello"),
                                                                  ("bin/python-tool", "/c/bin/python-tool"))
    for name in ("python3", "python", "python3.11", "run_in_env"):
        with pytest.raises(SpecError) as e:
            bin_members(project("ok", name))
        assert repr(name) in str(e.value) and "shadow" in str(e.value)


def test_an_extra_that_does_not_exist_is_refused():
    from poncho_wq.assemble.project import Project

    p = Project(source="/jobs/pep", name="pep", version="1", wheel="/c/pep.whl",
                requires=("humanize>=4", 'attrs; extra == "fmt"'), lib=(), data=(), bin=(), extras=("fmt",))
    assert p.dependencies(["fmt"]) == ["humanize>=4", "attrs"]
    with pytest.raises(SpecError) as e:
        p.dependencies(["fnt"])
    assert "no extra 'fnt'" in str(e.value) and "its extras: fmt" in str(e.value)


def test_project_sources_skip_the_cache_inside_and_venvs_follow_outside_links(tmp_path):
    from poncho_wq.assemble.project import _source_files
    from poncho_wq.identity import tree_digest

    shared, project = tmp_path / "shared", tmp_path / "job"
    (project / "pkg").mkdir(parents=True)
    shared.mkdir()
    (shared / "model.json").write_text("{}")
    (project / "setup.py").write_text("")
    (project / "pkg" / "__init__.py").write_text("")
    os.symlink("../../shared/model.json", str(project / "pkg" / "model.json"))
    os.symlink("..", str(project / "pkg" / "loop"))
    (project / ".cache" / "projects").mkdir(parents=True)
    (project / ".cache" / "projects" / "x").write_text("a build")
    (project / "venv" / "lib").mkdir(parents=True)
    (project / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (project / "venv" / "lib" / "big.py").write_text("")
    for junk in ("build/lib/pkg/__init__.py", ".git/objects/ab", "dist/job-1.tar.gz", "job.egg-info/PKG-INFO"):
        (project / junk).parent.mkdir(parents=True, exist_ok=True)
        (project / junk).write_text("build output or VCS: neither copied nor hashed")
    dirs, files = _source_files(str(project), skip=[str(project / ".cache")])
    assert [rel for rel, _ in files] == ["setup.py", "pkg/__init__.py", "pkg/model.json"]
    assert dirs == ["pkg"]

    def digest():  # what the project's build key holds: the one tree digest over the one list of sources
        return tree_digest(str(project), files=_source_files(str(project), skip=[str(project / ".cache")])[1])

    before = digest()
    (project / ".cache" / "projects" / "y").write_text("another build")
    assert digest() == before
    (shared / "model.json").write_text('{"v": 2}')
    assert digest() != before  # the linked file's edit counts


@pytest.mark.e2e
def test_a_project_holding_its_cache_and_linking_shared_data_builds(tmp_path, monkeypatch):
    """Before: the scratch copy recursed into the cache inside the project until 'File name too long', and the
    package data linked from outside the project dangled in the copy, so the wheel silently lacked it."""
    from poncho_wq.assemble.project import build_project

    python = _venv(tmp_path)
    shared, project = tmp_path / "shared", tmp_path / "job"
    (project / "pkg").mkdir(parents=True)
    shared.mkdir()
    (shared / "model.json").write_text('{"v": 1}')
    (project / "setup.py").write_text("from setuptools import setup\nsetup(name='linkjob', version='1', "
                                      "packages=['pkg'], package_data={'pkg': ['*.json']},\n"
                                      "      extras_require={'fmt': ['attrs']})\n")
    (project / "pkg" / "__init__.py").write_text("")
    os.symlink("../../shared/model.json", str(project / "pkg" / "model.json"))
    for k, v in {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}.items():  # offline
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(project)
    p = build_project(".", python=python, cache_dir=".cache")
    data = dict((arc, src) for src, arc in p.lib)
    assert open(data["pkg/model.json"]).read() == '{"v": 1}'
    assert p.extras == ("fmt",) and p.dependencies(["fmt"]) == ["attrs"]
    assert build_project(".", python=python, cache_dir=".cache").wheel == p.wheel  # the cache is not in the key
    (shared / "model.json").write_text('{"v": 2}')
    q = build_project(".", python=python, cache_dir=".cache")
    assert q.wheel != p.wheel and open(dict((a, s) for s, a in q.lib)["pkg/model.json"]).read() == '{"v": 2}'


@pytest.mark.e2e
def test_a_project_module_edited_after_from_project_is_named_as_such(tmp_path, monkeypatch):
    """Run from the job directory (``python3 run.py``), the command's analysis reaches the live transforms.py and
    the wheel holds the built one: after an edit the message said 'rename one of the modules'."""
    from test_project import klio_project

    from poncho_wq import Environment
    from poncho_wq.task import task_layers

    project = klio_project(tmp_path / "job")
    monkeypatch.chdir(project)
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    env = Environment.from_project(".", python=_venv(tmp_path))
    layer, _scripts = task_layers(env, "python3 run.py 1")  # unchanged: the same bytes twice are fine
    assert ("lib/transforms.py", str(project / "transforms.py")) in layer.members
    (project / "transforms.py").write_text("def double(x):\n    return x * 2\n")
    with pytest.raises(SpecError) as e:
        task_layers(env, "python3 run.py 1")
    assert "lib/transforms.py" in str(e.value) and "call Environment.from_project again" in str(e.value)
    assert "rename" not in str(e.value)
    fresh = Environment.from_project(".", python=_venv(tmp_path))
    assert task_layers(fresh, "python3 run.py 1")[0] is not None


@pytest.mark.e2e
def test_a_failed_build_that_only_mentions_apt_get_keeps_its_cause(tmp_path):
    from poncho_wq.assemble.project import build_project

    project = tmp_path / "pg"
    project.mkdir()
    (project / "setup.py").write_text(
        "import sys\nprint('hint: on Debian, apt-get install libpq-dev', file=sys.stderr)\n"
        "raise SystemExit('error: pg_config executable not found')\n")
    with pytest.raises(BuildError) as e:
        build_project(str(project), python=_venv(tmp_path), cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert "pg_config executable not found" in msg and "mentions apt-get" in msg and "\n" not in msg, msg


def _venv(tmp_path):
    """This interpreter plus ``wheel`` (a venv shared by the module's build tests, made once)."""
    root = os.path.join(os.path.dirname(str(tmp_path)), "review-venv")
    python = os.path.join(root, "bin", "python")
    if not os.path.exists(python):
        child_venv(root)
    return python


# ---------------------------------------------------------------------------------------------- requirements


def test_from_requirements_api_includes_and_markers(tmp_path):
    (tmp_path / "base.txt").write_text("humanize>=4\n")
    req = tmp_path / "requirements.txt"
    req.write_text('-r base.txt\nattrs>=21 ; python_version >= "3"\nsix ; python_version < "3"\n')
    env = Environment.from_requirements(req)
    assert sorted(env.spec.pip) == ['attrs>=21; python_version >= "3"', "humanize>=4", 'six; python_version < "3"']
    req.write_text("--index-url https://example.org/simple\nattrs\n")
    with pytest.raises(SpecError) as e:
        Environment.from_requirements(req)
    assert "requirements.txt:1" in str(e.value) and "PIP_INDEX_URL" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputMissing):
        Environment.from_requirements(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------------- requirements (review of issue 18)
@pytest.mark.parametrize("line", ["pkg @ https://user:s3cret@example.org/pkg-1.0-py3-none-any.whl",
                                  "pkg @ https://${TOKEN}@example.org/pkg-1.0-py3-none-any.whl",
                                  "pkg @ git+https://user:s3cret@example.org/pkg.git"])
def test_credentials_in_urls_are_refused_and_not_echoed(tmp_path, monkeypatch, line):
    from poncho_wq.requirements import read_requirements

    monkeypatch.setenv("TOKEN", "s3cret")
    (tmp_path / "r.txt").write_text("attrs\n" + line + "\n")
    with pytest.raises(SpecError) as e:
        read_requirements(str(tmp_path / "r.txt"))
    assert "r.txt:2" in str(e.value) and "netrc" in str(e.value) and "s3cret" not in str(e.value)
    (tmp_path / "r.txt").write_text("pkg @ git+ssh://git@example.org/pkg.git\n")  # a login name, no secret
    (kept,) = read_requirements(str(tmp_path / "r.txt"))[0]
    assert kept.endswith("git+ssh://git@example.org/pkg.git")


def test_an_index_option_in_an_included_file_is_refused_naming_that_file(tmp_path):
    from poncho_wq.requirements import read_requirements

    (tmp_path / "base.txt").write_text("six\n--extra-index-url https://example.org/simple\n")
    (tmp_path / "r.txt").write_text("-r base.txt\nattrs\n")
    with pytest.raises(SpecError) as e:
        read_requirements(str(tmp_path / "r.txt"))
    assert "base.txt:2" in str(e.value) and "PIP_INDEX_URL" in str(e.value)
    (tmp_path / "base.txt").write_text("six\n-r r.txt\n")  # an include loop is read once, as pip does
    assert read_requirements(str(tmp_path / "r.txt"))[0] == ["six", "attrs"]


def test_a_requirements_file_with_a_byte_order_mark(tmp_path):
    from poncho_wq.requirements import read_requirements

    (tmp_path / "r.txt").write_bytes(b"\xef\xbb\xbfattrs>=21\r\nsix\r\n")  # saved by a Windows editor; pip reads it
    assert read_requirements(str(tmp_path / "r.txt"))[0] == ["attrs>=21", "six"]


def test_a_missing_include_names_the_line_that_includes_it(tmp_path):
    from poncho_wq.requirements import read_requirements

    (tmp_path / "r.txt").write_text("attrs\n-r sub/base.txt\n")
    with pytest.raises(InputMissing) as e:
        read_requirements(str(tmp_path / "r.txt"))
    assert "r.txt:2" in str(e.value) and "sub/base.txt" in str(e.value) and "fix the path" in str(e.value)


# --------------------------------------------------------------------------------------- analysis hint


def test_a_project_constrains_the_analyzed_versions(tmp_path):
    import importlib.metadata

    installed = importlib.metadata.version("attrs")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "jobs").mkdir()
    (repo / "setup.py").write_text("from setuptools import setup\nREQS = ['attrs<1', 'humanize>=0.1']\n"
                                   "setup(name='j', install_requires=REQS)\n")
    (repo / "jobs" / "job.py").write_text("import attr\nimport humanize\n")
    a = analyze([str(repo / "jobs" / "job.py")], use_cache=False)
    # The lock (source auto/current) keeps what is installed, what was tested here (issue 24); the spec of
    # source="index" asks for the declared requirement.
    assert "attrs=={}".format(installed) in list(a.spec.pip)
    pip = list(a.direct_spec.pip)
    assert "attrs<1" in pip, pip  # the declared requirement, not the installed version it excludes
    assert "humanize=={}".format(importlib.metadata.version("humanize")) in pip  # allowed: pinned as installed
    (w,) = [w for w in a.warnings if "declares" in w]
    assert "attrs<1" in w and installed in w and str(repo) in w
    # no project up to the VCS root: the pins stay as installed
    (repo / "setup.py").unlink()
    (repo / "pyproject.toml").write_text('[project]\nname = "j"\nversion = "1"\ndependencies = ["attrs<1"]\n')
    (repo / "jobs" / ".git").mkdir()
    b = analyze([str(repo / "jobs" / "job.py")], use_cache=False)
    assert "attrs=={}".format(installed) in list(b.direct_spec.pip)
    (repo / "jobs" / ".git").rmdir()
    c = analyze([str(repo / "jobs" / "job.py")], use_cache=False)
    assert "attrs<1" in list(c.direct_spec.pip)
    # outside any checkout only the script's own directory counts (not a stray pyproject.toml further up)
    (repo / ".git").rmdir()
    d = analyze([str(repo / "jobs" / "job.py")], use_cache=False)
    assert "attrs=={}".format(installed) in list(d.direct_spec.pip)
    (repo / "jobs" / "setup.cfg").write_text("[options]\ninstall_requires =\n    attrs<1\n    humanize\n")
    e = analyze([str(repo / "jobs" / "job.py")], use_cache=False)
    assert "attrs<1" in list(e.direct_spec.pip)


# ---------------------------------------------------------------------------------- analysis hint (review of issue 18)
def _hint_job(tmp_path, pyproject):
    job = tmp_path / "job"
    job.mkdir()
    (job / "pyproject.toml").write_text(pyproject)
    (job / "job.py").write_text("import attr\n")
    return job


@pytest.mark.parametrize("pyproject", ['project = "x"\n', '[project]\nname = "j"\ndependencies = "attrs<1"\n',
                                       '[project]\nname = "j"\ndynamic = ["dependencies"]\n', "not [toml\n"])
def test_a_malformed_or_dynamic_pyproject_is_no_hint_and_no_crash(tmp_path, pyproject):
    import importlib.metadata

    from poncho_wq import analyze

    job = _hint_job(tmp_path, pyproject)
    a = analyze([str(job / "job.py")], use_cache=False)
    assert "attrs=={}".format(importlib.metadata.version("attrs")) in list(a.spec.pip)


def test_a_setup_py_computing_its_requirements_is_not_run(tmp_path):
    from poncho_wq.analysis.analyzer import declared_dependencies

    (tmp_path / "setup.py").write_text("open('RAN', 'w').close()\nfrom setuptools import setup\n"
                                       "setup(name='j', install_requires=open('requirements.txt').read().split())\n")
    assert declared_dependencies(str(tmp_path)) == [] and not (tmp_path / "RAN").exists()


def test_the_hint_without_tomllib(tmp_path, monkeypatch):
    """Python 3.9 and 3.10 (setup.cfg: python_requires >= 3.9) have no tomllib: the analysis of any script next to
    a pyproject.toml raised ImportError."""
    from poncho_wq import analyze

    job = _hint_job(tmp_path, '[project]\nname = "j"\nversion = "1"\ndependencies = ["attrs<1"]\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    a = analyze([str(job / "job.py")], use_cache=False)
    assert "attrs<1" in list(a.direct_spec.pip)  # read by the TOML reader pip vendors


def test_an_edited_project_reaches_the_next_task_of_the_process(tmp_path):
    """Environment.from_script is memoized on the files its result depends on: the project's too."""
    import importlib.metadata

    from poncho_wq import Environment

    job = _hint_job(tmp_path, '[project]\nname = "j"\nversion = "1"\ndependencies = ["attrs<1"]\n')
    # source="index": the spec the hint changes (the lock of auto/current keeps what is installed, issue 24)
    first = Environment.from_script(str(job / "job.py"), source="index")
    assert "attrs<1" in list(first.spec.pip)
    (job / "pyproject.toml").write_text('[project]\nname = "j"\nversion = "1"\ndependencies = []\n')
    second = Environment.from_script(str(job / "job.py"), source="index")
    assert "attrs=={}".format(importlib.metadata.version("attrs")) in list(second.spec.pip)


# ----------------------------------------------------------------------------------------- on real workers


def _results(out):
    assert [r["return_status"] for r in out["results"]] == [0, 0], out
    return sorted(line for r in out["results"] for line in r["output"].splitlines() if line.startswith("RESULT"))


@pytest.mark.e2e
def test_klio_job_runs_on_workers_reading_its_data_files(cluster, tmp_path, venv, e2e_cache):
    # e2e_cache (tests/conftest.py): the run's shared build cache. The same project content gives the same wheel
    # and environment for both bindings and for the TaskVine test below: built once, not once per test.
    project = klio_project(tmp_path / "job")
    submit = tmp_path / "submit"  # not the project: everything must come from the wheel
    submit.mkdir()
    cluster.start_manager("project_manager.py", ["--project", str(project), "--command", "python3 -m run {i}"],
                          str(submit), e2e_cache, python=venv)
    cluster.start_worker()
    assert _results(cluster.wait_results()) == [
        "RESULT 0 42 MODEL klio-job cmdclass True False False", "RESULT 1 42 MODEL klio-job cmdclass True False False"]


@pytest.mark.e2e
@pytest.mark.parametrize("cluster", ["ndcctools.work_queue"], indirect=True)  # one binding: the
# per-binding part (attaching inputs, the shim) is covered by the Klio job and files= tests on both
def test_pep621_package_runs_on_workers_reading_its_package_data(cluster, tmp_path, venv, e2e_cache):
    project = pep621_project(tmp_path / "pep")
    cluster.start_manager("project_manager.py", ["--project", str(project), "--extra", "fmt",
                                                 "--command", "python3 -m pepjob {i} && pepjob-hello"],
                          str(tmp_path), e2e_cache, python=venv)
    cluster.start_worker()
    out = cluster.wait_results()
    assert _results(out) == ["RESULT 0 schema-v1 hello 1.2 3.0 million attr",
                             "RESULT 1 schema-v1 hello 1.2 3.0 million attr"]
    assert [r["output"].count("TOOL pepjob-hello") for r in out["results"]] == [1, 1], out  # its console script


REQ_JOB = '''\
import sys

import humanize
try:
    import six
except ImportError:
    six = None
print("RESULT", sys.argv[1], humanize.intcomma(1234567), six is None)
'''


@pytest.mark.e2e
@pytest.mark.parametrize("cluster", ["ndcctools.work_queue"], indirect=True)  # one binding: the
# per-binding part (attaching inputs, the shim) is covered by the Klio job and files= tests on both
def test_requirements_file_runs_on_workers(cluster, tmp_path, e2e_cache):
    d = tmp_path / "job"
    (d / "reqs").mkdir(parents=True)
    (d / "reqs" / "base.txt").write_text("humanize>=4\n")
    (d / "requirements.txt").write_text('-r reqs/base.txt\nsix ; python_version < "3"\n')
    (d / "job.py").write_text(REQ_JOB)
    cluster.start_manager("project_manager.py", ["--requirements", "requirements.txt",
                                                 "--command", "python3 job.py {i}"], str(d), e2e_cache)
    cluster.start_worker()
    assert _results(cluster.wait_results()) == ["RESULT 0 1,234,567 True", "RESULT 1 1,234,567 True"]


VINE_DRIVER = '''
import json, os, sys, tempfile
from ndcctools import taskvine as vine
from poncho_wq import Environment
from poncho_wq.taskvine import PonchoVineTask

out, port_file, project = sys.argv[1], sys.argv[2], sys.argv[3]
env = Environment.from_project(project)
m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
for i in range(2):
    m.submit(PonchoVineTask(m, "python3 -m run {} && cat extra/note.txt".format(i), environment=env,
                            files=[("note.txt", "extra/note.txt")], cores=1, tag=str(i)))
results = {}
while not m.empty():
    t = m.wait(5)
    if t:
        results[t.tag] = [t.result, t.exit_code, t.std_output]
with open(out, "w") as f:
    json.dump(results, f)
'''


@pytest.mark.e2e
def test_klio_job_and_files_on_taskvine(tmp_path, venv, e2e_cache):
    from helpers import drivers
    from helpers.parslutil import client_env

    project = klio_project(tmp_path / "job")
    (tmp_path / "submit").mkdir()
    env = client_env(PONCHO_WQ_CACHE=e2e_cache, PONCHO_WQ_SOURCE="index")
    results, _workers = drivers.run_driver(tmp_path / "submit", VINE_DRIVER, env, args=[project], n_workers=1,
                                           files={"note.txt": "NOTE via files=\n"}, python=venv)
    assert sorted(results) == ["0", "1"], results
    for i, (result, code, output) in results.items():
        assert (result, code) == ("success", 0), output
        assert "RESULT {} 42 MODEL klio-job cmdclass True False False".format(i) in output, output
        assert "NOTE via files=" in output, output


@pytest.mark.e2e
def test_the_project_example_runs(tmp_path, venv, e2e_cache):
    import subprocess

    examples = os.path.join(REPO, "examples")
    env = dict(os.environ, PONCHO_WQ_CACHE=e2e_cache, PONCHO_WQ_SOURCE="index")
    before = _listing(os.path.join(examples, "project_job"))
    r = subprocess.run([venv, os.path.join(examples, "project_tasks.py"), "--tasks", "3"], env=env, cwd=examples,
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    for i, value in ((0, "0"), (1, "1,234,567"), (2, "2,469,134")):
        assert "example-job: input {} -> {}".format(i, value) in r.stdout, r.stdout
    assert "tasks: 3 done, 0 failed" in r.stdout
    assert _listing(os.path.join(examples, "project_job")) == before  # the build left nothing in the example


@pytest.mark.e2e
def test_a_manager_killed_mid_build_takes_the_build_backend_with_it_and_leaves_no_scratch(tmp_path, venv):
    # Issue 29: kill -9 during a project build left the build backend (setup.py, run by pip in a process of its
    # own) running, and projects/.tmp-* for a day. The backend now dies with the manager, and the next build
    # removes the dead build's scratch.
    import signal
    import subprocess
    import time

    project = tmp_path / "slowjob"
    project.mkdir()
    pid_file = tmp_path / "backend.pid"
    (project / "setup.py").write_text(
        "import os, time\nfrom setuptools import setup\n"
        "open({!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
        "setup(name='slowjob', version='1', py_modules=[])\n".format(str(pid_file)))
    cache = tmp_path / "cache"
    create = subprocess.Popen([script("poncho_package_create"), "-q", "--from-project", "--python", venv,
                               "--cache-dir", str(cache), str(project), str(tmp_path / "env.tar.gz")],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not pid_file.exists() or not pid_file.read_text():
        assert create.poll() is None and time.time() < deadline, "the build never started"
        time.sleep(0.1)
    backend = int(pid_file.read_text())
    create.send_signal(signal.SIGKILL)
    create.wait()
    deadline = time.time() + 60
    while _running(backend) and time.time() < deadline:
        time.sleep(0.2)
    alive = _running(backend)
    if alive:
        os.kill(backend, signal.SIGKILL)
    assert not alive, "the build backend outlived the killed manager"
    assert os.listdir(cache / "projects")  # the dead build's scratch, until the next build
    quick = klio_project(tmp_path / "job")
    build_project(str(quick), python=venv, cache_dir=str(cache))
    assert [n for n in os.listdir(cache / "projects") if n.startswith(".")] == []


def _running(pid):
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
