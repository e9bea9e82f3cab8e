"""Review of issue 18's entry points as a careless or hostile user drives them: each test here failed before the
fix it names. ``files=`` names poncho_wq uses itself, names that are a file and a directory at once, symbolic link
loops, empty directories, non-UTF-8 names, a file gone between resolve and attach; projects whose cache lies inside
them, whose package data is a link to a shared file, whose setup.py only *mentions* apt-get, extras that do not
exist; requirements with credentials in URLs or a missing ``-r``; the analysis hint without ``tomllib``, with a
malformed pyproject.toml, and a project edited between two tasks of one process."""

import os
import sys

import pytest

from helpers.venvs import child_venv
from poncho_wq.errors import BuildError, InputMissing, SpecError
from poncho_wq.deliver.files import resolve_files, sandbox_inputs


@pytest.fixture
def tree(tmp_path, monkeypatch):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("a\n")
    (tmp_path / "cfg.yaml").write_text("x: 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    return tmp_path


# ----------------------------------------------------------------------------------------------------- files=


@pytest.mark.parametrize("name", ["poncho_package_run", "env-0123456789abcdef.tar.gz", "code-" + "a" * 32 + ".tar.gz"])
def test_files_may_not_take_the_names_poncho_wq_attaches(tree, name):
    """Work Queue keeps the first input of a name (the shim, the environment) and drops the user's with a line on
    stderr only: the task would run without the file."""
    with pytest.raises(SpecError) as e:
        resolve_files([("cfg.yaml", name)])
    assert name in str(e.value) and "another name" in str(e.value)
    assert resolve_files([("cfg.yaml", "sub/" + name)])  # below the top it is only a name


def test_a_name_that_is_a_file_and_a_directory_is_refused(tree):
    with pytest.raises(SpecError) as e:
        resolve_files([("cfg.yaml", "data"), "data"])
    assert "data would be a file" in str(e.value) and "data/a.csv" in str(e.value)
    # against a command script's directory too (the scripts are attached by the task itself)
    (tree / "jobs").mkdir()
    (tree / "jobs" / "run.py").write_text("print(1)\n")
    with pytest.raises(SpecError):
        sandbox_inputs(resolve_files([("cfg.yaml", "jobs")]), scripts=[(str(tree / "jobs" / "run.py"), "jobs/run.py")])


def test_a_symbolic_link_loop_in_a_directory_is_refused_not_walked_forty_deep(tree):
    os.symlink("..", str(tree / "data" / "sub" / "up"))
    with pytest.raises(SpecError) as e:
        resolve_files(["data"])
    assert "data/sub/up is a symbolic link" in str(e.value) and "loop" in str(e.value)
    os.unlink(str(tree / "data" / "sub" / "up"))
    elsewhere = tree / "elsewhere"
    (elsewhere / "d").mkdir(parents=True)
    (elsewhere / "d" / "w.bin").write_text("w")
    os.symlink(str(elsewhere / "d"), str(tree / "data" / "weights"))  # a link to a data set elsewhere still ships
    assert [a for _s, a in resolve_files(["data"])] == ["data/a.csv", "data/weights/w.bin"]


def test_an_empty_directory_is_refused_rather_than_shipping_nothing(tree):
    (tree / "out").mkdir()
    (tree / "out" / "__pycache__").mkdir()
    with pytest.raises(SpecError) as e:
        resolve_files(["out"])
    assert "holds no file to ship" in str(e.value)


def test_the_current_directory_itself_gets_a_true_message(tree):
    with pytest.raises(SpecError) as e:
        resolve_files(["."])
    assert "is the current directory itself" in str(e.value) and "outside" not in str(e.value)


def test_a_dict_is_refused_instead_of_dropping_its_names(tree):
    with pytest.raises(SpecError) as e:
        resolve_files({"cfg.yaml": "conf/cfg.yaml"})
    assert "a dict is not valid" in str(e.value) and "('cfg.yaml', 'conf/cfg.yaml')" in str(e.value)


def test_non_utf8_names_are_refused_before_anything_is_built(tree):
    """The bindings take C strings: specify_input_file / add_input raised a TypeError after the build."""
    name = os.fsdecode(b"caf\xe9.txt")
    with open(os.fsencode(str(tree)) + b"/caf\xe9.txt", "w") as f:
        f.write("x")
    for files in ([name], [(name, "cafe.txt")], [("cfg.yaml", name)]):
        with pytest.raises(SpecError) as e:
            resolve_files(files)
        assert "not a UTF-8 name" in str(e.value)


def test_unreadable_files_and_directories_are_input_missing_before_anything_is_built():
    """Run as a user who cannot read them (root reads everything: the check then runs in a child as nobody)."""
    import shutil
    import tempfile

    top = tempfile.mkdtemp(prefix="poncho-unreadable-")
    try:
        os.chmod(top, 0o755)
        os.makedirs(os.path.join(top, "data", "locked"))
        for rel in ("data/a.csv", "data/locked/b.csv", "secret.csv"):
            with open(os.path.join(top, rel), "w") as f:
                f.write("x\n")
        os.chmod(os.path.join(top, "data"), 0o755)
        os.chmod(os.path.join(top, "data", "a.csv"), 0o644)
        os.chmod(os.path.join(top, "data", "locked"), 0o700)
        os.chmod(os.path.join(top, "secret.csv"), 0o600)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                os.close(r)
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                os.chdir(top)
                said = []
                for entry in ("data", "secret.csv"):
                    try:
                        resolve_files([entry])
                        said.append("resolved")
                    except InputMissing as e:
                        said.append(str(e))
                os.write(w, "\n".join(said).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            said = f.read().splitlines()
        os.waitpid(pid, 0)
    finally:
        for d, _dirs, _names in os.walk(top):
            os.chmod(d, 0o755)
        shutil.rmtree(top)
    assert len(said) == 2 and all("cannot read" in line for line in said), said
    assert "data/locked" in said[0] and "secret.csv" in said[1]


def test_a_file_removed_between_resolve_and_attach_is_input_missing(tree):
    resolved = resolve_files(["cfg.yaml"])
    os.unlink("cfg.yaml")
    with pytest.raises(InputMissing) as e:
        sandbox_inputs(resolved)
    assert "cfg.yaml" in str(e.value) and "submit the task again" in str(e.value)


def test_a_project_data_file_named_like_the_shim_is_refused(tree):
    class Env:
        files = ((str(tree / "cfg.yaml"), "poncho_package_run"),)

    with pytest.raises(SpecError):
        sandbox_inputs((), Env())


def test_ponchotask_refuses_a_reserved_name_before_building(tree):
    import poncho_wq

    (tree / "job.py").write_text("import six\n")
    with pytest.raises(SpecError):
        poncho_wq.PonchoTask("python3 job.py", files=[("cfg.yaml", "poncho_package_run")])
    assert not (tree / "cache").exists()


# ------------------------------------------------------------------------------------------------ projects


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
    from poncho_wq.assemble.project import _source_files, _tree_digest

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
    before = _tree_digest(str(project), skip=[str(project / ".cache")])
    (project / ".cache" / "projects" / "y").write_text("another build")
    assert _tree_digest(str(project), skip=[str(project / ".cache")]) == before
    (shared / "model.json").write_text('{"v": 2}')
    assert _tree_digest(str(project), skip=[str(project / ".cache")]) != before  # the linked file's edit counts


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


# ------------------------------------------------------------------------------------------------ requirements


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


# ------------------------------------------------------------------------------------------- analysis hint


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
