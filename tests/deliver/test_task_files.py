"""Explicit task files (issue 18): ``PonchoTask(..., files=[...])`` ships data the code reads by path, under its
relative name in the sandbox; bad entries fail in one line before anything is built; and on real workers the job
reads them (and an edited file travels: each is attached as a content-named copy).

The last section holds the regressions of the review of issue 18 (each failed before its fix): names poncho_wq uses
itself, names that are a file and a directory at once, symbolic link loops, empty directories, non-UTF-8 names, a
file gone between resolve and attach."""

import json
import os

import pytest

from poncho_wq.errors import InputMissing, SpecError
from poncho_wq.deliver.files import resolve_files, sandbox_inputs


@pytest.fixture
def tree(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "job.yaml").write_text("name: job\n")
    (tmp_path / "cfg" / "sub").mkdir()
    (tmp_path / "cfg" / "sub" / "schema.json").write_text("{}")
    (tmp_path / "cfg" / "__pycache__").mkdir()
    (tmp_path / "cfg" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (tmp_path / "cfg" / ".git").mkdir()
    (tmp_path / "cfg" / ".git" / "HEAD").write_text("ref\n")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF" + b"\0" * 100)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_relative_paths_directories_and_pairs(tree):
    got = resolve_files(["model.h5", "cfg", (str(tree / "model.h5"), "models/m.h5"), tree / "cfg" / "job.yaml"])
    assert [arc for _src, arc in got] == ["cfg/job.yaml", "cfg/sub/schema.json", "model.h5", "models/m.h5"]
    assert all(os.path.isabs(src) and os.path.isfile(src) for src, _ in got)
    assert dict((a, s) for s, a in got)["models/m.h5"] == str(tree / "model.h5")


def test_paths_outside_the_current_directory_are_refused_with_the_pair_to_use(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "cfg.yaml"
    outside.write_text("x: 1\n")
    for entry in (str(outside), os.path.relpath(str(outside))):
        with pytest.raises(SpecError) as e:
            resolve_files([entry])
        msg = str(e.value)
        assert "outside the current directory" in msg and "'cfg.yaml')" in msg and "\n" not in msg
    assert resolve_files([(str(outside), "cfg.yaml")]) == ((str(outside), "cfg.yaml"),)


@pytest.mark.parametrize("files,words", [
    ("model.h5", ["expected a list of paths", "files=['model.h5']"]),
    ([42], ["42", "int"]),
    ([("model.h5", "/etc/x")], ["sandbox name", "/etc/x"]),
    ([("model.h5", "../x")], ["sandbox name"]),
    ([("model.h5", "m"), ("cfg/job.yaml", "m")], ["two files would be m"]),
])
def test_bad_entries_are_spec_errors(tree, files, words):
    with pytest.raises(SpecError) as e:
        resolve_files(files)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert e.value.exit_code == 1


def test_a_missing_file_is_one_line_naming_it_and_the_fix(tree):
    with pytest.raises(InputMissing) as e:
        resolve_files(["model.h5", "data/missing.csv"])
    msg = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in msg
    assert "data/missing.csv does not exist" in msg and "fix the path" in msg


def test_copies_are_named_by_content_and_clash_with_scripts_checked(tree, monkeypatch):
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tree / "cache"))
    (copy, name), = sandbox_inputs(resolve_files(["model.h5"]))
    assert name == "model.h5" and open(copy, "rb").read() == (tree / "model.h5").read_bytes()
    (tree / "model.h5").write_bytes(b"edited")
    (copy2, _), = sandbox_inputs(resolve_files(["model.h5"]))
    assert copy2 != copy and open(copy2, "rb").read() == b"edited"
    # a file named like a command script: the same bytes are left to the script, different bytes refused
    (tree / "job.py").write_text("print(1)\n")
    assert sandbox_inputs(resolve_files(["job.py"]), scripts=[(str(tree / "job.py"), "job.py")]) == []
    (tree / "other").mkdir()
    (tree / "other" / "job.py").write_text("print(2)\n")
    with pytest.raises(SpecError) as e:
        sandbox_inputs(resolve_files([("other/job.py", "job.py")]), scripts=[(str(tree / "job.py"), "job.py")])
    assert "two different files would be job.py" in str(e.value)


def test_ponchotask_refuses_a_missing_file_before_building(tree, monkeypatch):
    """The check runs before the analysis and the build: nothing lands in the cache."""
    import poncho_wq

    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tree / "cache"))
    (tree / "job.py").write_text("import six\n")
    with pytest.raises(InputMissing) as e:
        poncho_wq.PonchoTask("python3 job.py", files=["nope.yaml"])
    assert "nope.yaml does not exist" in str(e.value)
    assert not (tree / "cache").exists()


def test_vine_task_and_function_call_refuse_a_missing_file_before_anything(tree, capfd):
    from poncho_wq.taskvine import FunctionCall

    with pytest.raises(InputMissing) as e:
        FunctionCall("lib", "f", 1, files=["nope.csv"])
    assert "FunctionCall files: nope.csv does not exist" in str(e.value)
    import gc

    gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err


JOB = '''\
import json, sys
cfg = json.load(open("conf/settings.json"))
print("RESULT", sys.argv[1], cfg["v"], open("model.bin").read(), open("weights/w.txt").read().strip())
'''


@pytest.mark.e2e
def test_files_reach_the_sandbox_on_real_workers(cluster, tmp_path, e2e_cache):
    """(e2e_cache, tests/conftest.py: the run's shared build cache; the environment is the same for both bindings
    and for other end-to-end tests, what is checked is what reaches the sandbox.)"""
    d = tmp_path / "submit"
    (d / "conf").mkdir(parents=True)
    (d / "job.py").write_text(JOB)
    (d / "conf" / "settings.json").write_text(json.dumps({"v": 7}))
    (d / "conf" / "notes.txt").write_text("a directory ships whole\n")
    elsewhere = tmp_path / "models"
    (elsewhere / "w").mkdir(parents=True)
    (elsewhere / "model.bin").write_text("MODEL")
    (elsewhere / "w" / "w.txt").write_text("W1\n")
    files = ["conf", [str(elsewhere / "model.bin"), "model.bin"], [str(elsewhere / "w"), "weights"]]
    cluster.start_manager("project_manager.py", ["--command", "python3 job.py {i}", "--files", json.dumps(files)],
                          str(d), e2e_cache)
    cluster.start_worker()
    out = cluster.wait_results()
    assert [r["return_status"] for r in out["results"]] == [0, 0], out
    lines = sorted(line for r in out["results"] for line in r["output"].splitlines() if line.startswith("RESULT"))
    assert lines == ["RESULT 0 7 MODEL W1", "RESULT 1 7 MODEL W1"], out


@pytest.mark.e2e
@pytest.mark.parametrize("cluster", ["ndcctools.work_queue"], indirect=True)  # one binding: the
# per-binding part (attaching inputs, the shim) is covered by the Klio job and files= tests on both
def test_files_of_a_python_task(cluster, tmp_path, e2e_cache):
    d = tmp_path / "submit"
    d.mkdir()
    (d / "settings.txt").write_text("from the manager\n")
    cluster.start_manager("project_manager.py", ["--python-task", "conf/s.txt",
                                                 "--files", json.dumps([["settings.txt", "conf/s.txt"]])],
                          str(d), e2e_cache)
    cluster.start_worker()
    out = cluster.wait_results()
    assert [(r["return_status"], r.get("value")) for r in out["results"]] == [
        (0, "0 from the manager"), (0, "1 from the manager")], out


LIBRARY_DRIVER = '''
import json, os, sys, tempfile
from ndcctools import taskvine as vine
from poncho_wq.taskvine import FunctionCall, create_library

out, port_file = sys.argv[1], sys.argv[2]


def read_cfg(name):
    with open(name) as f:
        return "{} in {}".format(f.read().strip(), os.path.basename(os.getcwd()))


m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(dir=os.path.dirname(out)))
lib = create_library(m, "lib", read_cfg)
m.install_library(lib)
with open(port_file + ".tmp", "w") as f:
    f.write(str(m.port))
os.rename(port_file + ".tmp", port_file)
for i in range(2):
    m.submit(FunctionCall("lib", "read_cfg", "conf/cfg.txt", files=[("cfg.txt", "conf/cfg.txt")]))
results = []
while not m.empty():
    t = m.wait(5)
    if t:
        results.append([t.successful(), t.result, str(t.output), t.library_error])
with open(out, "w") as f:
    json.dump(results, f)
'''


@pytest.mark.e2e
def test_files_of_a_taskvine_function_call(tmp_path, e2e_cache):
    from helpers import drivers
    from helpers.parslutil import client_env

    env = client_env(PONCHO_WQ_CACHE=e2e_cache, PONCHO_WQ_SOURCE="index")
    results, _ = drivers.run_driver(tmp_path, LIBRARY_DRIVER, env, n_workers=1, files={"cfg.txt": "CFG\n"})
    assert len(results) == 2 and all(r[0] for r in results), results
    assert all(r[2].startswith("CFG in ") for r in results), results


@pytest.mark.parametrize("name, words", [
    ("a\nb.csv", ["control character"]),
    ("résumé.csv", ["non-ASCII"]),
    ("x" * 300, ["too long", "300 characters"]),
    ("d/" * 600 + "x", ["too long"]),
])
def test_sandbox_names_work_queue_would_mangle_are_refused(tree, name, words):
    # Accepted before (issue 29): a newline cut the name on Work Queue's protocol line, non-ASCII arrived mangled, a
    # 300-character name ended as INPUT_MISSING on the worker.
    with pytest.raises(SpecError) as e:
        sandbox_inputs(resolve_files([("model.h5", name)]))
    message = str(e.value)
    assert "\n" not in message and "model.h5" in message and len(message) < 600, message
    for w in words:
        assert w in message, message


def test_a_source_file_name_too_long_for_the_worker_cache_is_refused(tree):
    long = tree / ("m" * 230 + ".h5")  # a valid local name, but Work Queue's cached name would pass 255 bytes
    long.write_bytes(b"x")
    with pytest.raises(SpecError) as e:
        sandbox_inputs(resolve_files([(str(long), "model.h5")]))
    assert "too long for the workers' caches" in str(e.value)
    assert sandbox_inputs(resolve_files([("model.h5", "a b/c-d_e.h5")]))  # blanks and punctuation are fine


# ---------------------- bad entries a careless or hostile user passes (review of issue 18: each failed before its fix)

@pytest.fixture
def small_tree(tmp_path, monkeypatch):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("a\n")
    (tmp_path / "cfg.yaml").write_text("x: 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    return tmp_path




@pytest.mark.parametrize("name", ["poncho_package_run", "env-0123456789abcdef.tar.gz", "code-" + "a" * 32 + ".tar.gz"])
def test_files_may_not_take_the_names_poncho_wq_attaches(small_tree, name):
    """Work Queue keeps the first input of a name (the shim, the environment) and drops the user's with a line on
    stderr only: the task would run without the file."""
    with pytest.raises(SpecError) as e:
        resolve_files([("cfg.yaml", name)])
    assert name in str(e.value) and "another name" in str(e.value)
    assert resolve_files([("cfg.yaml", "sub/" + name)])  # below the top it is only a name


def test_a_name_that_is_a_file_and_a_directory_is_refused(small_tree):
    with pytest.raises(SpecError) as e:
        resolve_files([("cfg.yaml", "data"), "data"])
    assert "data would be a file" in str(e.value) and "data/a.csv" in str(e.value)
    # against a command script's directory too (the scripts are attached by the task itself)
    (small_tree / "jobs").mkdir()
    (small_tree / "jobs" / "run.py").write_text("print(1)\n")
    with pytest.raises(SpecError):
        sandbox_inputs(resolve_files([("cfg.yaml", "jobs")]), scripts=[(str(small_tree / "jobs" / "run.py"), "jobs/run.py")])


def test_a_symbolic_link_loop_in_a_directory_is_refused_not_walked_forty_deep(small_tree):
    os.symlink("..", str(small_tree / "data" / "sub" / "up"))
    with pytest.raises(SpecError) as e:
        resolve_files(["data"])
    assert "data/sub/up is a symbolic link" in str(e.value) and "loop" in str(e.value)
    os.unlink(str(small_tree / "data" / "sub" / "up"))
    elsewhere = small_tree / "elsewhere"
    (elsewhere / "d").mkdir(parents=True)
    (elsewhere / "d" / "w.bin").write_text("w")
    os.symlink(str(elsewhere / "d"), str(small_tree / "data" / "weights"))  # a link to a data set elsewhere still ships
    assert [a for _s, a in resolve_files(["data"])] == ["data/a.csv", "data/weights/w.bin"]


def test_an_empty_directory_is_refused_rather_than_shipping_nothing(small_tree):
    (small_tree / "out").mkdir()
    (small_tree / "out" / "__pycache__").mkdir()
    with pytest.raises(SpecError) as e:
        resolve_files(["out"])
    assert "holds no file to ship" in str(e.value)


def test_the_current_directory_itself_gets_a_true_message(small_tree):
    with pytest.raises(SpecError) as e:
        resolve_files(["."])
    assert "is the current directory itself" in str(e.value) and "outside" not in str(e.value)


def test_a_dict_is_refused_instead_of_dropping_its_names(small_tree):
    with pytest.raises(SpecError) as e:
        resolve_files({"cfg.yaml": "conf/cfg.yaml"})
    assert "a dict is not valid" in str(e.value) and "('cfg.yaml', 'conf/cfg.yaml')" in str(e.value)


def test_non_utf8_names_are_refused_before_anything_is_built(small_tree):
    """The bindings take C strings: specify_input_file / add_input raised a TypeError after the build."""
    name = os.fsdecode(b"caf\xe9.txt")
    with open(os.fsencode(str(small_tree)) + b"/caf\xe9.txt", "w") as f:
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


def test_a_file_removed_between_resolve_and_attach_is_input_missing(small_tree):
    resolved = resolve_files(["cfg.yaml"])
    os.unlink("cfg.yaml")
    with pytest.raises(InputMissing) as e:
        sandbox_inputs(resolved)
    assert "cfg.yaml" in str(e.value) and "submit the task again" in str(e.value)


def test_a_project_data_file_named_like_the_shim_is_refused(small_tree):
    class Env:
        files = ((str(small_tree / "cfg.yaml"), "poncho_package_run"),)

    with pytest.raises(SpecError):
        sandbox_inputs((), Env())


def test_ponchotask_refuses_a_reserved_name_before_building(small_tree):
    import poncho_wq

    (small_tree / "job.py").write_text("import six\n")
    with pytest.raises(SpecError):
        poncho_wq.PonchoTask("python3 job.py", files=[("cfg.yaml", "poncho_package_run")])
    assert not (small_tree / "cache").exists()
