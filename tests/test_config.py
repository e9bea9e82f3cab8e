"""The settings module is the one place environment variables are read: README lists exactly its settings, and a
bad value is an error naming the variable, never a silent default."""

import os
import re

import pytest

from poncho_wq.config import SETTINGS, Settings
from poncho_wq.errors import SpecError

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _readme_table():
    text = open(README).read().split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([A-Z_]+)(?:=\w+)?` \| (\w+) \|", text, re.M)}


def test_readme_lists_exactly_the_settings():
    table = _readme_table()
    assert table == {s.name: s.where for s in SETTINGS}


def test_defaults():
    s = Settings({"HOME": "/h"})
    assert s.cache_dir == os.path.join(os.path.expanduser("~"), ".cache", "poncho_wq")
    assert Settings({"XDG_CACHE_HOME": "/x"}).cache_dir == "/x/poncho_wq"
    assert Settings({"PONCHO_WQ_CACHE": "rel"}).cache_dir == os.path.abspath("rel")
    assert (s.source, s.git_timeout, s.http_timeout) == ("auto", 120.0, 60.0)
    assert not hasattr(s, "netcheck_timeout")  # issue 24: no reachability probe decides anything any more
    assert (s.debug, s.analyze_serial, s.binding, s.conda_exe, s.source_date_epoch) == (False, False, None, None,
                                                                                         946684800)
    assert Settings({"PONCHO_DEBUG": "1"}).debug and not Settings({"PONCHO_DEBUG": "0"}).debug
    assert Settings({"PONCHO_WQ_SOURCE": " Current "}).source == "current"


@pytest.mark.parametrize("name,value,prop", [
    ("PONCHO_WQ_SOURCE", "pypi", "source"),
    ("PONCHO_WQ_GIT_TIMEOUT", "-5", "git_timeout"),
    ("PONCHO_WQ_HTTP_TIMEOUT", "nan", "http_timeout"),
    ("PONCHO_WQ_BINDING", "wq", "binding"),
    ("SOURCE_DATE_EPOCH", "yesterday", "source_date_epoch"),
    ("SOURCE_DATE_EPOCH", "1" * 400, "source_date_epoch"),
])
def test_bad_values_name_the_variable(name, value, prop):
    with pytest.raises(SpecError) as e:
        getattr(Settings({name: value}), prop)
    assert name in str(e.value) and repr(value)[:20] in str(e.value)
    assert e.value.exit_code == 1
