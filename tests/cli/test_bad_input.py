"""Bad input gets a clear error (issue 11): one line naming the file, field or argument, the right exit code, and
never a traceback, through the real command-line tools and the library API."""

import json
import os
import subprocess

import pytest

from helpers.cli import run_cli, script
from poncho_wq import analyze
from poncho_wq.errors import SpecError

MINUS = "x = " + "-" * 200000 + "1\n"  # CPython's parser: MemoryError
PLUS = "import json\nx = " + "+".join(["1"] * 3000) + "\n"  # CPython: RecursionError during AST construction


def cli_env(tmp_path):
    return {"PONCHO_WQ_CACHE": str(tmp_path / "cache")}


def assert_one_line_error(proc, prog, *words):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr.replace("error:", ""), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prog + ": error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("source", [MINUS, PLUS], ids=["200000-minus", "3000-plus"])
def test_analyze_deeply_nested_script_is_one_line_exit_1(tmp_path, source):
    script = tmp_path / "deep.py"
    script.write_text(source)
    proc = run_cli("poncho_package_analyze", script, tmp_path / "spec.json", env=cli_env(tmp_path))
    assert_one_line_error(proc, "poncho_package_analyze", str(script), "nested too deeply to analyze")
    assert not (tmp_path / "spec.json").exists()


@pytest.mark.parametrize("serial", ["", "1"], ids=["forked-workers", "serial"])
def test_analyze_one_deep_file_in_a_large_tree(tmp_path, serial):
    """60 files: enough for the forked parse workers (scan._PARALLEL_MIN_FILES); the MemoryError is raised in a
    worker and must come back as the one-line message, not a pickled traceback."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for i in range(60):
        (pkg / "m{:02d}.py".format(i)).write_text("import os\n")
    (pkg / "m41.py").write_text(MINUS)
    env = dict(cli_env(tmp_path), PONCHO_WQ_ANALYZE_SERIAL=serial)
    proc = run_cli("poncho_package_analyze", pkg, "-", env=env)
    assert_one_line_error(proc, "poncho_package_analyze", str(pkg / "m41.py"), "nested too deeply")
    assert proc.stdout == ""


def test_analyze_api_raises_spec_error_not_recursion_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    script = tmp_path / "plus.py"
    script.write_text(PLUS)
    with pytest.raises(SpecError, match="plus.py: nested too deeply to analyze") as exc:
        analyze([str(script)])
    assert exc.value.exit_code == 1
    with pytest.raises(SpecError, match="<stdin>: nested too deeply"):
        analyze([], sources={"<stdin>": MINUS})


@pytest.mark.parametrize("name,text,words", [
    ("deep.json", "[" * 100000 + "]" * 100000, ["deep.json: nested too deeply"]),
    ("dup.json", '{"pip": ["six"], "pip": ["attrs"]}', ["duplicate key 'pip'"]),
    ("spec.yml", "pip:\n  - six\n  bad: [\n", ["spec.yml: not valid YAML", "line 3"]),
    ("spec.json", "pip:\n  - six\n", ["YAML is read from files named *.yml or *.yaml"]),
    ("vars.json", json.dumps({"http": {"IFS": {"url": "https://example.org/x"}}}), ["http", "'IFS'", "reserved"]),
], ids=["deep-json", "duplicate-key", "bad-yaml", "yaml-in-json-file", "reserved-variable"])  # short ids: pytest
# puts the test id in PYTEST_CURRENT_TEST, and a 200 KB one makes exec() of the CLI fail with E2BIG
def test_create_bad_spec_files_are_one_line_exit_1(tmp_path, name, text, words):
    spec = tmp_path / name
    spec.write_text(text)
    out = tmp_path / "out" / "env.tar.gz"
    proc = run_cli("poncho_package_create", spec, out, env=cli_env(tmp_path))
    assert_one_line_error(proc, "poncho_package_create", *words)
    assert not out.exists()


@pytest.mark.e2e  # a real build or a timeout of seconds: not in the fast subset
def test_create_reads_a_yaml_spec(tmp_path):
    """A .yml spec that is not JSON is read as YAML: the build gets as far as the (empty) pip section, i.e. the
    spec was accepted; --engine current keeps it offline."""
    spec = tmp_path / "spec.yml"
    spec.write_text("# a comment, which JSON would refuse\npip: []\n")
    out = tmp_path / "env.tar.gz"
    proc = run_cli("poncho_package_create", "--from-current-env", spec, out, env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert os.path.getsize(str(out)) > 0


@pytest.mark.parametrize("options", [(), ("--from-requirements",)], ids=["spec", "requirements"])
def test_create_from_a_fifo_without_a_writer_ends_at_once(tmp_path, options):
    # open() of a FIFO waits for a writer: create hung for ever (issue 29). A FIFO that nobody writes reads as empty.
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(str(fifo))
    r = run_cli("poncho_package_create", *options, fifo, tmp_path / "out.tar.gz", env=cli_env(tmp_path), timeout=60)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
    assert str(fifo) in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out.tar.gz").exists()


def test_create_reads_a_spec_from_a_pipe(tmp_path):
    # What `poncho_package_create <(generate-spec) out` gives: /dev/fd/N, a pipe with a live writer: still read.
    read_end, write_end = os.pipe()
    os.write(write_end, b'{"pip": ["six"], "python": "2.7"}')  # a bad version: fails fast, after reading it
    os.close(write_end)
    try:
        r = subprocess.run([script("poncho_package_create"), "/dev/fd/{}".format(read_end), str(tmp_path / "o.tar.gz")],
                           capture_output=True, text=True, pass_fds=(read_end,), timeout=60, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, **cli_env(tmp_path)))
    finally:
        os.close(read_end)
    assert r.returncode == 1 and "'2.7'" in r.stderr, r.stderr
