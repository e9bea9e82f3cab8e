"""Requirements files as specs (issue 18): pip's syntax read by poncho_wq itself, index options refused, and a
real build from one."""

import json
import os
import tarfile

import pytest

from helpers.cli import run_cli
from poncho_wq.errors import InputMissing, SpecError
from poncho_wq.requirements import read_requirements, spec_from_requirements


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_includes_constraints_markers_hashes_continuations(tmp_path, monkeypatch):
    monkeypatch.setenv("SIX_PIN", "1.16.0")
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "base.txt", "attrs>=21  # comment\n-c constraints.txt\n")
    _write(tmp_path / "sub" / "constraints.txt", "attrs<24\nnot-required==1.0\n")
    main = _write(tmp_path / "requirements.txt", "\n".join([
        "# the job's dependencies",
        "-r sub/base.txt",
        "six==${SIX_PIN} \\",
        "    --hash=sha256:" + "0" * 64,
        'tomli>=1.1; python_version < "3.11"',
        "humanize[extra]>=4",
        "humanize<5",
        "",
    ]))
    pip, warnings = read_requirements(main)
    assert pip == ["attrs<24,>=21", "six==1.16.0", 'tomli>=1.1; python_version < "3.11"', "humanize[extra]<5,>=4"]
    assert len(warnings) == 1 and "not-required" in warnings[0]
    spec = spec_from_requirements(main)
    assert sorted(spec.to_dict()["pip"]) == sorted(pip)


@pytest.mark.parametrize("line,words", [
    ("--index-url https://example.org/simple", ["--index-url", "PIP_INDEX_URL", ":1"]),
    ("-i https://example.org/simple", ["-i", "index option"]),
    ("--extra-index-url=https://example.org/simple", ["--extra-index-url"]),
    ("-e ./mylib", ["editable", "analysis"]),
    ("./dist/mylib-1.0-py3-none-any.whl", ["path", "file://"]),
    ("six==1.16.0 --install-option=--x", ["per-requirement option"]),
    ("--frobnicate", ["unknown option"]),  # a line's words are file contents: not shown
    ("six=>1", ["not a valid requirement", "Expected"]),
])
def test_bad_lines_are_one_line_errors_naming_file_and_line(tmp_path, line, words):
    path = _write(tmp_path / "req.txt", "attrs\n" + line + "\n")
    with pytest.raises(SpecError) as e:
        read_requirements(path)
    message = str(e.value)
    assert "req.txt:2" in message and "\n" not in message
    for w in words:
        assert w.replace(":1", "") in message, message


def test_missing_files_and_empty_files(tmp_path):
    with pytest.raises(InputMissing):
        read_requirements(str(tmp_path / "nope.txt"))
    with pytest.raises(InputMissing) as e:
        read_requirements(_write(tmp_path / "r.txt", "-r missing.txt\n"))
    assert "missing.txt" in str(e.value)
    with pytest.raises(SpecError):
        spec_from_requirements(_write(tmp_path / "empty.txt", "# nothing\n\n"))


@pytest.mark.e2e  # a real build or a timeout of seconds: not in the fast subset
def test_create_from_requirements_builds_and_refuses_index_options(tmp_path):
    req = _write(tmp_path / "requirements.txt", "six==1.16.0\n")
    out = tmp_path / "env.tar.gz"
    r = run_cli("poncho_package_create", "-q", "--from-requirements", "--cache-dir", tmp_path / "cache", req, out)
    assert r.returncode == 0, r.stderr
    with tarfile.open(str(out)) as tar:
        spec = json.loads(tar.extractfile("poncho/spec.json").read())
        assert any(n.endswith("site-packages/six.py") for n in tar.getnames())
    assert spec == {"pip": ["six==1.16.0"]}
    bad = _write(tmp_path / "bad.txt", "--index-url https://example.org/simple\nsix\n")
    r = run_cli("poncho_package_create", "--from-requirements", bad, tmp_path / "bad.tar.gz")
    assert r.returncode == 1 and "bad.txt:1" in r.stderr and "PIP_INDEX_URL" in r.stderr
    assert not os.path.exists(tmp_path / "bad.tar.gz")


# -- secrets (issue 29) ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, secret", [
    ("pkg @ https://example.org/pkg.whl?token=s3cr3t", "s3cr3t"),
    ("pkg @ https://example.org/pkg.whl?X-Amz-Signature=s3cr3t&X-Amz-Expires=60", "s3cr3t"),
    ("pkg @ https://u:s3cr3t@example.org/pkg.whl", "s3cr3t"),
    ("pkg @ https://${TOKEN_FOR_TEST}@example.org/pkg.whl", "s3cr3t-from-env"),  # expanded, then refused
    ("-c https://u:s3cr3t@example.org/constraints.txt", "s3cr3t"),
    ("-r https://example.org/more.txt?private_token=s3cr3t", "s3cr3t"),
    ("pkg @ https://u:s3cr3t@exa mple.org/x.whl ;; bad", "s3cr3t"),  # not a valid requirement: still masked
])
def test_credentials_in_requirements_are_refused_and_never_shown(tmp_path, monkeypatch, line, secret):
    monkeypatch.setenv("TOKEN_FOR_TEST", "s3cr3t-from-env")
    path = _write(tmp_path / "req.txt", "six\n" + line + "\n")
    with pytest.raises((SpecError, InputMissing)) as e:
        read_requirements(path)
    message = str(e.value)
    assert "req.txt:2" in message and secret not in message and "\n" not in message, message


def test_a_file_that_is_not_a_requirements_file_is_not_echoed(tmp_path):
    # `-r /etc/shadow` (as root) printed the file's first line in the error.
    shadow = _write(tmp_path / "shadow", "root:$y$j9T$SeCrEtHaSh$0123:19000:0:99999:7:::\ndaemon:*:19000::::::\n")
    main = _write(tmp_path / "req.txt", "six\n-r {}\n".format(shadow))
    for path in (shadow, main):
        with pytest.raises(SpecError) as e:
            read_requirements(path)
        message = str(e.value)
        assert "SeCrEtHaSh" not in message and "root:" not in message and "shadow:1" in message, message
