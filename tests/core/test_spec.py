"""The environment specification: accepted shapes, validation messages, canonical form and hash."""

import json

import pytest

from poncho_wq import PonchoError, Spec, load_spec, parse_spec
from poncho_wq.errors import InputMissing, SpecError
from poncho_wq.spec import as_spec


def test_poncho_shape_round_trips():
    data = {
        "conda": {"channels": ["conda-forge", "defaults"], "packages": ["conda-forge::numpy=1.26.4=py311h_0", "python=3.11"]},
        "pip": ["requests==2.31.0", "PyYAML>=6"],
        "git": {"DATA_DIR": {"remote": "https://example.org/repo.git", "tag": "abcd1234"}},
        "http": {"REF": {"type": "tar", "compression": "gzip", "url": "https://example.org/x.tar.gz"}},
    }
    spec = parse_spec(data)
    assert spec.conda.channels == ("conda-forge", "defaults")
    assert spec.python_version == "3.11"
    assert spec.pip == ("PyYAML>=6", "requests==2.31.0")
    assert dict(spec.git)["DATA_DIR"].tag == "abcd1234"
    assert dict(spec.http)["REF"].compression == "gzip"
    assert parse_spec(json.loads(spec.dumps())) == spec
    assert spec.data_variables == ("DATA_DIR", "REF")


def test_environment_yml_shape_and_upstream_dependencies_shape_convert_to_same_model():
    yml = {"name": "x", "channels": ["conda-forge"], "dependencies": ["python=3.11", "numpy", {"pip": ["six==1.16.0"]}]}
    upstream = {"conda": {"channels": ["conda-forge"], "dependencies": ["numpy", "python=3.11", {"pip": ["six==1.16.0"]}]}}
    poncho = {"conda": {"channels": ["conda-forge"], "packages": ["python=3.11", "numpy"]}, "pip": ["six==1.16.0"]}
    assert parse_spec(yml) == parse_spec(upstream) == parse_spec(poncho)


UPSTREAM_TEST_JSON = """{
	"conda": [
		"defaults::python=3.9",
		"conda-forge::numpy",
        	"defaults::pip",
		"conda-forge::ndcctools"
	],
	"pip": [
		"dill"
	],

	"git": {
		"DATA_DIR": {
			"remote": "https://github.com/BarrySlyDelgado/poncho_test_data.git",
			"ref": "abcd1234...."
		}
	},
	
	"http": {
		"CCTOOLS": {
			"type": "tar",
			"compression": "gzip",
			"url": "https://ccl.cse.nd.edu/software/files/cctools-7.2.13-source.tar.gz"
		}
	}
}
"""  # cctools 7.17.1 poncho/src/test.json, verbatim (tabs and all)


def test_upstream_conda_list_form(tmp_path):
    """Upstream's short form: a list of channel::spec strings; the channels are the ones named, in order of first
    appearance (conda's priority), and it is the same Spec as the object form."""
    path = tmp_path / "test.json"
    path.write_text(UPSTREAM_TEST_JSON)
    spec = load_spec(str(path))
    assert spec.conda.channels == ("defaults", "conda-forge")
    assert set(spec.conda.packages) == {"defaults::python=3.9", "conda-forge::numpy", "defaults::pip",
                                        "conda-forge::ndcctools"}
    assert spec.python_version == "3.9" and spec.pip == ("dill",) and spec.data_variables == ("CCTOOLS", "DATA_DIR")
    obj = dict(json.loads(UPSTREAM_TEST_JSON), conda={"channels": ["defaults", "conda-forge"],
                                                      "packages": list(spec.conda.packages)})
    assert parse_spec(obj) == spec
    # Entries without a channel are solved from the channels the others name.
    assert parse_spec({"conda": ["conda-forge::numpy", "python=3.11"]}).conda.channels == ("conda-forge",)


def test_old_python_package_analyze_output():
    """``{"python": "3.7.3", "modules": [...]}`` (python_package_analyze's man page): modules installed by name."""
    spec = parse_spec({"python": "3.11", "modules": ["antigravity", "humanize"]})
    assert spec.python == "3.11" and spec.pip == ("antigravity", "humanize")


def test_hash_ignores_order_but_not_content():
    a = parse_spec({"pip": ["six==1.16.0", "attrs==23.1.0"], "python": "3.11"})
    b = parse_spec({"python": "3.11", "pip": ["attrs==23.1.0", "six==1.16.0"]})
    assert a.digest() == b.digest()
    assert a.digest() != parse_spec({"pip": ["six==1.16.0", "attrs==23.2.0"], "python": "3.11"}).digest()
    assert a.digest() != parse_spec({"pip": ["six==1.16.0", "attrs==23.1.0"], "python": "3.12"}).digest()
    # Name spelling that pip treats as the same distribution hashes the same.
    assert parse_spec({"pip": ["PyYAML==6.0.1"]}).digest() == parse_spec({"pip": ["pyyaml==6.0.1"]}).digest()
    # Channel order is conda's priority, so it counts.
    c1 = parse_spec({"conda": {"channels": ["a", "b"], "packages": ["x"]}})
    c2 = parse_spec({"conda": {"channels": ["b", "a"], "packages": ["x"]}})
    assert c1.digest() != c2.digest()


@pytest.mark.parametrize(
    "data, field, value",
    [
        ({"pip": ["numpy=="]}, "pip[0]", "numpy=="),
        ({"pip": ["-e ."]}, "pip[0]", "-e ."),
        ({"pip": "numpy"}, "pip", "numpy"),
        ({"conda": {"packages": ["bad spec ==="]}}, "conda.packages[0]", "bad spec ==="),
        ({"conda": {"packages": ["Bad Name!"]}}, "conda.packages[0]", "Bad Name!"),
        ({"conda": {"packages": ["numpy"], "channel": ["x"]}}, "conda.channel", "channel"),
        ({"git": {"1BAD": {"remote": "https://x/y.git"}}}, "git", "1BAD"),
        ({"git": {"D": {"tag": "v1"}}}, "git.D.remote", "None"),
        ({"http": {"D": {"url": "ftp://x/y"}}}, "http.D.url", "ftp://x/y"),
        ({"http": {"D": {"url": "https://x/y", "type": "zip"}}}, "http.D.type", "zip"),
        ({"http": {"D": {"url": "https://x/y", "compression": "lzma"}}}, "http.D.compression", "lzma"),
        ({"python": "2.7"}, "python", "2.7"),
        ({"pyton": "3.11"}, "pyton", "pyton"),
        ({"pip": ["six==1", "six==2"]}, "pip[1]", "six==2"),
        ({"conda": ["numpy", "python=3.11"]}, "conda[0]", "conda-forge::numpy"),
        ({"conda": ["conda-forge::numpy", "Bad Name!"]}, "conda[1]", "Bad Name!"),
        ({"conda": ["conda-forge::numpy", 3]}, "conda[1]", "3"),
        ({"conda": "conda-forge::numpy"}, "conda", "a list of 'channel::package' strings"),
        ({"modules": ["-e ."]}, "modules[0]", "-e ."),
        ({"modules": ["six==1"], "pip": ["six==2"]}, "modules[0]", "six==1"),
    ],
)
def test_errors_name_field_and_value(data, field, value):
    with pytest.raises(PonchoError) as exc:
        parse_spec(data)
    msg = str(exc.value)
    assert field in msg and value in msg and "expected" in msg
    assert "\n" not in msg


def test_load_spec_missing_file_is_exit_2(tmp_path):
    with pytest.raises(PonchoError) as exc:
        load_spec(str(tmp_path / "nope.json"))
    assert exc.value.exit_code == 2


def test_load_spec_bad_json_names_file_and_line(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{\n  "pip": [\n')
    with pytest.raises(PonchoError) as exc:
        load_spec(str(p))
    assert str(p) in str(exc.value) and "line" in str(exc.value)


def test_as_spec_accepts_spec_dict_and_path(tmp_path):
    spec = parse_spec({"pip": ["six"]})
    p = tmp_path / "s.yaml"  # Parsl writes JSON into a .yaml file name
    p.write_text(spec.dumps())
    assert as_spec(spec) is spec
    assert as_spec({"pip": ["six"]}) == spec
    assert as_spec(p) == spec
    assert isinstance(spec, Spec)


# --- bad input gets a one-line SpecError (issue 11: items 5, 10 and the Low items) ----------------------------------

def load_text(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return load_spec(str(p))


def spec_error(tmp_path, name, text):
    with pytest.raises(SpecError) as exc:
        load_text(tmp_path, name, text)
    msg = str(exc.value)
    assert exc.value.exit_code == 1 and "\n" not in msg and len(msg) < 400, msg
    return msg


@pytest.mark.parametrize("name", ["deep.json", "deep.yaml"])
def test_deeply_nested_input_is_a_one_line_error(tmp_path, name):
    msg = spec_error(tmp_path, name, "[" * 100000 + "]" * 100000)
    assert name in msg and "nested too deeply" in msg


@pytest.mark.parametrize("name,text,key,line", [
    ("s.json", '{"pip": ["six"], "pip": ["attrs"]}', "'pip'", None),
    ("s.json", '{"git": {"D": {"remote": "/a", "remote": "/b"}}}', "'remote'", None),
    ("s.yaml", 'pip: [six]\npython: "3.11"\npip: [attrs]\n', "'pip'", "line 3 (first given at line 1)"),
])
def test_duplicate_keys_are_errors_naming_the_key(tmp_path, name, text, key, line):
    msg = spec_error(tmp_path, name, text)
    assert "duplicate key " + key in msg and name in msg
    if line:
        assert line in msg


def test_yaml_spec_files_are_read(tmp_path):
    poncho = load_text(tmp_path, "spec.yml", "python: 3.10\npip:\n  - six==1.16.0\n"
                                             "git:\n  DATA: {remote: /srv/data.git, tag: v1}\n")
    assert poncho.python == "3.10"  # BaseLoader: a string, not the float 3.1
    assert poncho.pip == ("six==1.16.0",) and dict(poncho.git)["DATA"].remote == "/srv/data.git"
    env_yml = load_text(tmp_path, "environment.yaml", "name: x\nchannels: [conda-forge]\ndependencies:\n"
                                                      "  - python=3.11\n  - numpy\n  - pip:\n      - six==1.16.0\n")
    assert env_yml == parse_spec({"conda": {"channels": ["conda-forge"], "packages": ["python=3.11", "numpy"]},
                                  "pip": ["six==1.16.0"]})
    # JSON keeps working under any name (Parsl writes JSON into spec.yaml), .YAML in capitals included.
    assert load_text(tmp_path, "P.YAML", '{"pip": ["six==1.16.0"]}').pip == ("six==1.16.0",)


@pytest.mark.parametrize("name,text,words", [
    ("bad.yml", "pip:\n  - six\n  bad: [\n", ["bad.yml: not valid YAML", "line 3"]),
    ("tab.yaml", "pip:\n\t- six\n", ["tab.yaml: not valid YAML", "line 2 column 1"]),
    ("ctl.yaml", 'pip: ["\x07"]\n', ["ctl.yaml: not valid YAML", "#x0007"]),
    ("broken.json", '{\n  "pip": [\n', ["broken.json: not valid JSON", "line 3"]),
    # YAML content in a .json file: JSON only, with a hint where YAML is read.
    ("spec.json", "pip:\n  - six\n", ["not valid JSON", "YAML is read from files named *.yml or *.yaml"]),
    ("huge.json", "1" * 5000, ["huge.json: not valid JSON", "digits"]),
    ("empty.yaml", "", ["(top level)", "a JSON object (a YAML mapping)"]),
])
def test_syntax_errors_are_one_line_with_the_place(tmp_path, name, text, words):
    msg = spec_error(tmp_path, name, text)
    for word in words:
        assert word in msg


def test_yaml_alias_bomb_fails_fast_with_a_short_message(tmp_path):
    # 9**8 strings if expanded; BaseLoader shares aliased nodes and the message shows a bounded repr.
    lines = ['pip:\n  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    for prev, cur in zip("abcdefg", "bcdefgh"):
        lines.append("  - &{} [{}]\n".format(cur, ",".join(["*" + prev] * 9)))
    msg = spec_error(tmp_path, "bomb.yaml", "".join(lines))
    assert "pip[0]" in msg and "expected a non-empty string" in msg


def test_non_utf8_and_oversized_spec_files_are_spec_errors(tmp_path):
    p = tmp_path / "latin1.json"
    p.write_bytes(b'{"pip": ["caf\xe9"]}')
    with pytest.raises(SpecError, match=r"latin1.json: not UTF-8 text \(byte 0xe9 at offset 13\)"):
        load_spec(str(p))
    with pytest.raises(SpecError, match="too large for a spec"):
        load_text(tmp_path, "big.json", " " * (17 << 20))


def test_unreadable_spec_file_is_input_missing(tmp_path):
    with pytest.raises(InputMissing, match="cannot read spec file"):
        load_spec(str(tmp_path))  # a directory


@pytest.mark.parametrize("section", ["git", "http"])
@pytest.mark.parametrize("var,why", [
    ("X\n", "a shell variable name"),  # "$" matches before a trailing newline; fullmatch does not
    ("PATH", "PATH is reserved: the command search path"),
    ("IFS", "IFS is reserved: the shell's field separator"),
    ("HOME", "HOME is reserved"),
    ("SHELL", "SHELL is reserved"),
    ("ENV", "ENV is reserved"),
    ("BASH_ENV", "BASH_ENV is reserved"),
    ("PS4", "PS4 is reserved"),
    ("OPTIND", "OPTIND is reserved"),
    ("TMPDIR", "TMPDIR is reserved"),
    ("LD_PRELOAD", "LD_PRELOAD is reserved: the dynamic loader's settings"),
    ("LD_LIBRARY_PATH", "LD_LIBRARY_PATH is reserved: the dynamic loader's settings"),
    ("PYTHONPATH", "PYTHONPATH is reserved: Python reads PYTHON* variables"),
    ("PYTHONHOME", "PYTHONHOME is reserved"),
    ("CONDA_PREFIX", "CONDA_PREFIX is reserved: conda's activation"),
    ("CONDA_DEFAULT_ENV", "CONDA_DEFAULT_ENV is reserved"),
    ("PONCHO_ENV_DIR", "PONCHO_ENV_DIR is reserved: poncho's own settings"),
    ("_pr_root", "the run shim's internal variables start with '_'"),
    ("_pe", "the run shim's internal variables start with '_'"),
    ("_", "the run shim's internal variables start with '_'"),
    ("poncho", "the environment's own poncho/ directory"),
])
def test_data_variable_names_reserved_or_malformed_are_refused(section, var, why):
    src = {"remote": "/srv/data.git"} if section == "git" else {"url": "https://example.org/x"}
    with pytest.raises(SpecError) as exc:
        parse_spec({section: {var: src}})
    msg = str(exc.value)
    assert msg.startswith("spec field {}: {!r} is not valid".format(section, var)) and why in msg, msg
    assert exc.value.exit_code == 1


def test_data_variable_names_of_your_own_pass():
    spec = parse_spec({"git": {"DATA_DIR": {"remote": "/srv/d.git"}, "path2": {"remote": "/srv/e.git"}},
                       "http": {"REFERENCE_DB": {"url": "https://example.org/x"}, "MY_LD": {"url": "https://e.org/y"}}})
    assert spec.data_variables == ("DATA_DIR", "MY_LD", "REFERENCE_DB", "path2")


def test_one_variable_in_both_git_and_http_is_refused():
    with pytest.raises(SpecError, match=r"http.D: 'D' is not valid; expected a variable defined once \(git.D"):
        parse_spec({"git": {"D": {"remote": "/srv/d.git"}}, "http": {"D": {"url": "https://example.org/x"}}})


@pytest.mark.parametrize("data,field,value", [
    ({"git": {"D": {"remote": " -uflag"}}}, "git.D.remote", "'-uflag'"),  # checked after strip()
    ({"git": {"D": {"remote": "\t--upload-pack=touch /tmp/x"}}}, "git.D.remote", "--upload-pack"),
    ({"git": {"D": {"remote": "/srv/a\nb"}}}, "git.D.remote", r"'/srv/a\nb'"),
    ({"git": {"D": {"remote": "/srv/d.git", "tag": "v1\n"}}}, "git.D.tag", r"'v1\n'"),
    ({"python": "3.11\n"}, "python", r"'3.11\n'"),
    ({"http": {"D": {"url": "https://example.org/a\nb"}}}, "http.D.url", r"'https://example.org/a\nb'"),
    ({"http": {"D": {"url": "https://example.org/a b"}}}, "http.D.url", "'https://example.org/a b'"),
    ({"conda": {"packages": ["numpy=1.26=py311_0\nx"]}}, "conda.packages[0]", r"\nx"),
    ({"conda": {"channels": ["conda-forge\nx"], "packages": ["numpy"]}}, "conda.channels[0]", r"'conda-forge\nx'"),
    ({"conda": {"channels": ["--override"], "packages": ["numpy"]}}, "conda.channels[0]", "'--override'"),
    ({"http": {"D": {"url": "https://example.org/a\x07b"}}}, "http.D.url", r"'https://example.org/a\x07b'"),
])
def test_trailing_newlines_and_option_like_values_are_refused(data, field, value):
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    msg = str(exc.value)
    assert field in msg and value in msg and "\n" not in msg, msg


def test_git_remote_is_stored_stripped():
    assert dict(parse_spec({"git": {"D": {"remote": "  /srv/d.git \n"}}}).git)["D"].remote == "/srv/d.git"


def test_deep_or_huge_values_in_messages_are_bounded():
    deep = "x"
    for _ in range(5000):
        deep = [deep]
    for value in (deep, "y" * 100000):
        with pytest.raises(SpecError) as exc:
            parse_spec({"pip": value})
        assert len(str(exc.value)) < 400


# -- secrets (issue 29): a spec travels (cache metadata, poncho/spec.json on every worker) -------------------------
@pytest.mark.parametrize("data, field, secret", [
    ({"pip": ["pkg @ https://alice:s3cr3t-tok@example.org/pkg-1.0.tar.gz"]}, "pip[0]", "s3cr3t-tok"),
    ({"pip": ["pkg @ https://ghp_s3cr3ttoken@example.org/pkg-1.0.tar.gz"]}, "pip[0]", "ghp_s3cr3ttoken"),
    ({"pip": ["pkg @ https://example.org/pkg-1.0.tar.gz?token=s3cr3t"]}, "pip[0]", "s3cr3t"),
    ({"pip": ["pkg @ git+https://oauth2:s3cr3t@gitlab.example.org/g/pkg.git"]}, "pip[0]", "s3cr3t"),
    ({"modules": ["pkg @ https://e.org/p.whl?X-Amz-Signature=s3cr3t&X-Amz-Date=1"]}, "modules[0]", "s3cr3t"),
    ({"git": {"D": {"remote": "https://x-access-token:s3cr3t@github.com/o/r.git"}}}, "git.D.remote", "s3cr3t"),
    ({"http": {"D": {"url": "https://bucket.s3.amazonaws.com/db.tar?X-Amz-Credential=AKIAs3cr3t"}}}, "http.D.url",
     "AKIAs3cr3t"),
    ({"http": {"D": {"url": "https://u:s3cr3t@example.org/db.tar"}}}, "http.D.url", "s3cr3t"),
    ({"conda": {"channels": ["https://conda.anaconda.org/t/s3cr3t-tk/private"], "packages": ["numpy"]}},
     "conda.channels[0]", "s3cr3t-tk"),
])
def test_credentials_in_any_url_of_a_spec_are_refused_and_masked(data, field, secret):
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    msg = str(exc.value)
    assert field in msg and secret not in msg and "***" in msg and "netrc" in msg, msg


def test_logins_and_harmless_queries_are_not_credentials():
    spec = parse_spec({"pip": ["pkg @ git+ssh://git@github.com/o/pkg.git", "six @ https://e.org/six.whl?x=1"],
                       "git": {"D": {"remote": "git@github.com:o/data.git"}}})
    assert len(spec.pip) == 2
