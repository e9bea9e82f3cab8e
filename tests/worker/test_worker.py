"""The worker scripts are generated from one source (poncho_wq/worker/), and the relocator is a module that runs
on a worker's Python without poncho_wq (issue 26)."""

import ast
import os
import shutil
import subprocess
import sys

import pytest

from poncho_wq import worker
from poncho_wq.shim import run_in_env_path, shim_path
from poncho_wq.worker import relocate

RELOCATE = relocate.__file__


@pytest.mark.parametrize("name", sorted(worker.SCRIPTS))
def test_generated_scripts_are_fresh(name):
    """A script edited in poncho_wq/data/ instead of poncho_wq/worker/ (or a source edited without regenerating)
    fails here."""
    with open(worker.generated_path(name)) as f:
        assert f.read() == worker.render(name), \
            "poncho_wq/data/{} is stale: run `python -m poncho_wq.worker`".format(name)


def test_both_scripts_hold_the_shared_code_and_the_shim_is_both_names():
    with open(shim_path()) as f:
        shim = f.read()
    with open(run_in_env_path()) as f:
        run_in_env = f.read()
    shared = worker.shared_code()
    assert len(shared) > 1000 and shared in shim and shared in run_in_env
    assert relocate.__doc__ not in shim  # the docstring stays home: the shim travels with every task
    with open(os.path.join(os.path.dirname(shim_path()), "python_package_run")) as f:
        assert f.read() == shim


def test_write_scripts_repairs_a_stale_copy(tmp_path, monkeypatch):
    """The generator rewrites what differs, atomically and executable, and leaves the rest alone."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(worker, "_DATA", str(data))
    assert sorted(worker.write_scripts()) == sorted(worker.SCRIPTS)
    (data / "run_in_env").write_text("#!/bin/sh\n# an edited copy\n")
    assert worker.write_scripts() == ["run_in_env"]
    assert (data / "run_in_env").read_text() == worker.render("run_in_env")
    assert os.stat(data / "run_in_env").st_mode & 0o777 == 0o755
    assert worker.write_scripts() == [] and sorted(os.listdir(data)) == sorted(worker.SCRIPTS)


def test_a_single_quote_in_the_relocator_is_refused(monkeypatch):
    real = worker._read
    monkeypatch.setattr(worker, "_read", lambda name: real(name).replace('"text"', "'text'"))
    with pytest.raises(ValueError, match="single quote"):
        worker.relocator_code()


def test_relocator_is_standalone_python_3_8():
    """It runs with the environment's own Python: nothing but the standard library, Python 3.8 syntax."""
    with open(RELOCATE) as f:
        source = f.read()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and not imported - set(sys.stdlib_module_names if hasattr(sys, "stdlib_module_names") else
                                            ("ast", "fcntl", "os", "re", "sys", "time"))
    assert "poncho_wq" not in imported


def _prefix(root, placeholder):
    """A tiny conda-pack-like tree: a text and a binary file holding *placeholder*, and conda-unpack's records."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hello").write_text("#!/bin/sh\necho {}/share\n".format(placeholder))
    (root / "lib.so").write_bytes(b"\x7fELF" + placeholder.encode() + b"/lib\0\0\0\0\0\0\0\0\0\0\0\0tail")
    records = [("bin/hello", placeholder, "text"), ("lib.so", placeholder, "binary")]
    (root / "bin" / "conda-unpack").write_text("_prefix_records = {!r}\n".format(records))


@pytest.mark.parametrize("how", ["module", "embedded"])
def test_relocator_relocates_and_records_twice(tmp_path, how):
    """The module file run as a script and the code the scripts embed behave alike: relocate from the placeholder,
    then again from the recorded prefix after a move; nothing to do when already there."""
    placeholder = "/opt/" + "placeholder" * 30  # longer than the test's paths: binary records keep their length
    first = tmp_path / "a"
    _prefix(first, placeholder)
    python = shutil.which("python3")
    head = [python, "-E", "-s", RELOCATE] if how == "module" else [python, "-E", "-s", "-c", worker.relocator_code()]
    r = subprocess.run(head + [str(first), str(first)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (first / "bin" / "hello").read_text() == "#!/bin/sh\necho {}/share\n".format(first)
    assert (first / ".poncho_ready").read_text() == "{}\n".format(first)
    moved = tmp_path / "b"
    os.rename(first, moved)
    assert subprocess.run(head + [str(moved), str(moved), "5"], stdin=subprocess.DEVNULL).returncode == 0
    data = (moved / "lib.so").read_bytes()
    assert data.startswith(b"\x7fELF" + str(moved).encode() + b"/lib\0") and data.endswith(b"tail")
    assert len(data) == len(b"\x7fELF" + placeholder.encode() + b"/lib\0\0\0\0\0\0\0\0\0\0\0\0tail")
    assert len((moved / ".poncho_relocations").read_text().splitlines()) == 2
    assert subprocess.run(head + [str(moved), str(moved)], stdin=subprocess.DEVNULL).returncode == 0
    assert len((moved / ".poncho_relocations").read_text().splitlines()) == 2
    (moved / "bin" / "conda-unpack").write_text("x = 1\n")
    r = subprocess.run(head + [str(moved), "/elsewhere"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("poncho_wq relocate: {}: ".format(moved))


@pytest.mark.parametrize("with_python", [True, False])
def test_conda_unpack_header_runs_the_script_with_python_from_sh(tmp_path, with_python):
    """The header pack.py puts on bin/conda-unpack: sh runs the script with the environment's bin/python (else
    python3), and Python itself reads the header as a string expression."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "conda-unpack"
    script.write_bytes(worker.conda_unpack_header() + b"import sys\nprint(sys.executable, sys.argv[1:])\n")
    script.chmod(0o755)
    if with_python:
        os.symlink(sys.executable, bindir / "python")
    r = subprocess.run([str(script), "a b"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout.endswith(" ['a b']\n"), r.stderr
    assert (r.stdout.split()[0] == str(bindir / "python")) == with_python
    r = subprocess.run([sys.executable, str(script), "x"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.stdout.endswith(" ['x']\n"), r.stderr


FETCH_SH = os.path.join(os.path.dirname(worker.__file__), "fetch.sh")


@pytest.mark.parametrize("shell", ["dash", "bash-posix", "busybox"])
def test_fetch_sh_parses_under_every_shell(shells, shell):
    """fetch.sh as a whole, and each section as the one line the fetch commands embed, are valid sh."""
    subprocess.run(shells[shell] + ["-n", FETCH_SH], check=True, stdin=subprocess.DEVNULL)
    for name, text in worker.fetch_sections().items():
        run = subprocess.run(shells[shell] + ["-n", "-c", text], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True)
        assert run.returncode == 0, (name, run.stderr)


def test_fetch_sections_are_the_fetch_commands_one_source():
    """Each section is one line (Work Queue sends the command on one protocol line) with no comment left, and the
    Work Queue fetch command is made of them (no second copy of the fetch in a Python string)."""
    from poncho_wq.deliver.fetch import Fetch, fetch_command

    sections = worker.fetch_sections()
    assert set(sections) == {"shown", "tools", "http", "file", "check", "wq-link", "vine-stub"}
    for text in sections.values():
        assert "\n" not in text and "# " not in text and text
    cmd = fetch_command(Fetch("env-" + "a" * 32 + ".tar.gz", "https://u:p@h/e?t=1", 5, "b" * 64), 60)
    for name in ("shown", "tools", "check", "wq-link"):
        assert sections[name] in cmd
    assert sections["http"].replace("@STALL@", "20") in cmd
