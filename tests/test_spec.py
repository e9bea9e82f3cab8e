"""The environment specification: accepted shapes, validation messages, canonical form and hash."""

import json

import pytest

from poncho_wq import PonchoError, Spec, load_spec, parse_spec
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
