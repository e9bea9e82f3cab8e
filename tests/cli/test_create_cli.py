"""poncho_package_create (and its aliases): arguments, exit codes, progress, and no output on failure."""

import json
import os
import subprocess
import sys

import pytest



@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def no_entries(cache):
    envs = cache / "envs"
    return not envs.exists() or not [n for n in os.listdir(envs) if n.endswith(".tar.gz")]


def test_stdin_spec_no_cache_quiet(cli, tmp_path, cache):
    out = tmp_path / "out" / "env.tar.gz"
    r = cli("poncho_package_create", "--no-cache", "--quiet", "--cache-dir", cache, "-", out,
            input=json.dumps({"pip": ["six"]}))
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout == ""
    assert out.stat().st_size > 1000000 and os.listdir(out.parent) == ["env.tar.gz"]
    assert not cache.exists()


def test_progress_phases_on_stderr(cli, tmp_path, cache):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pip": ["six"]}))
    r = cli("python_package_create", "--engine", "portable", "--cache-dir", cache, spec, tmp_path / "e.tar.gz")
    assert r.returncode == 0, r.stderr
    for phase in ("install", "pip", "pack"):
        assert "poncho: {} done in".format(phase) in r.stderr
    assert "built" in r.stderr and r.stdout == ""


def test_python_m_poncho_wq_create(tmp_path, cache):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"pip": ["six"]}))
    r = subprocess.run([sys.executable, "-m", "poncho_wq", "create", "-q", "--cache-dir", str(cache), str(spec),
                        str(tmp_path / "e.tar.gz")], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "e.tar.gz").exists() and not no_entries(cache)


def test_missing_spec_file_exits_2(cli, tmp_path, cache):
    r = cli("poncho_package_create", "--cache-dir", cache, tmp_path / "nope.json", tmp_path / "e.tar.gz")
    assert r.returncode == 2 and "nope.json" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "e.tar.gz").exists()


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    (json.dumps({"pip": ["numpy>>1"]}), "pip[0]"),
    (json.dumps({"pipp": ["six"]}), "pipp"),
])
def test_bad_spec_exits_1(cli, tmp_path, cache, text, words):
    spec = tmp_path / "spec.json"
    spec.write_text(text)
    r = cli("poncho_package_create", "--cache-dir", cache, spec, tmp_path / "e.tar.gz")
    assert r.returncode == 1 and words in r.stderr, r.stderr
    assert not (tmp_path / "e.tar.gz").exists() and no_entries(cache)


@pytest.mark.parametrize("args", [[], ["only-one-arg"], ["--engine", "docker", "s.json", "o.tar.gz"],
                                  ["--bogus", "s.json", "o.tar.gz"]])
def test_usage_errors_exit_1(cli, tmp_path, args):
    r = cli("poncho_package_create", *args, cwd=tmp_path)
    assert r.returncode == 1 and "usage:" in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


def test_portable_engine_refuses_conda_spec(cli, tmp_path, cache):
    r = cli("poncho_package_create", "--engine", "portable", "--cache-dir", cache, "-", tmp_path / "e.tar.gz",
            input=json.dumps({"conda": {"channels": ["conda-forge"], "packages": ["numpy"]}}))
    assert r.returncode == 1 and "conda section" in r.stderr and "--engine conda" in r.stderr
    assert not (tmp_path / "e.tar.gz").exists()


@pytest.mark.parametrize("no_cache", [False, True])
def test_unsatisfiable_requirement_exits_3_with_installer_stderr(cli, tmp_path, cache, no_cache):
    out = tmp_path / "out" / "e.tar.gz"
    args = ["--no-cache"] if no_cache else []
    r = cli("poncho_package_create", *args, "--cache-dir", cache, "-", out,
            input=json.dumps({"pip": ["six", "poncho-wq-no-such-dist==1.0"]}))
    assert r.returncode == 3, r.stderr
    assert "poncho-wq-no-such-dist" in r.stderr
    assert "not found in the package registry" in r.stderr or "No matching distribution" in r.stderr
    assert not out.exists() and (not out.parent.exists() or os.listdir(out.parent) == [])
    assert no_entries(cache)
    assert not (cache / "tmp").exists() or os.listdir(cache / "tmp") == []


def test_python_option_chooses_base_interpreter(cli, tmp_path, cache):
    r = cli("poncho_package_create", "--python", tmp_path / "no-python", "--cache-dir", cache, "-",
            tmp_path / "e.tar.gz", input="{}")
    assert r.returncode == 1 and "no-python" in r.stderr
    ok = cli("poncho_package_create", "-q", "--python", sys.executable, "--cache-dir", cache, "-",
             tmp_path / "e.tar.gz", input="{}")
    assert ok.returncode == 0, ok.stderr
