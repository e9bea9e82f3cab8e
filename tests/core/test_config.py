"""The settings module is the one place environment variables are read: docs/settings.md, generated from it, lists
exactly its settings, and a bad value is an error naming the variable, never a silent default."""

import os
import re

import pytest

from helpers.paths import REPO as ROOT
from poncho_wq.config import SETTINGS, Settings, settings_markdown
from poncho_wq.errors import SpecError

SETTINGS_MD = os.path.join(ROOT, "docs", "settings.md")


def _docs_table():
    with open(SETTINGS_MD, encoding="utf-8") as f:
        text = f.read()
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([A-Z_]+)(?:=\w+)?` \| (\w+) \|", text, re.M)}


def test_docs_list_exactly_the_settings():
    assert _docs_table() == {s.name: s.where for s in SETTINGS}


def test_committed_settings_table_is_the_generated_one():
    with open(SETTINGS_MD, encoding="utf-8") as f:
        committed = f.read()
    assert committed == settings_markdown(), (
        "docs/settings.md is not what poncho_wq/config.py generates: run `python -m poncho_wq.config > "
        "docs/settings.md`")


def test_readme_links_the_settings_instead_of_copying_them():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "docs/settings.md" in readme
    assert not re.search(r"^\| `PONCHO_[A-Z_]+` \|", readme, re.M), "README.md copies rows of docs/settings.md"


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
