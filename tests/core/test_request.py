"""The forward pipeline (issue 26): a build request is resolved once, at the entry, and handed down.

Counted, not timed: how often the target is applied (``with_target``), the engine chosen (``get_engine``) and the
settings read (``Settings`` objects made) per ``create()``, per ``Environment.build()`` and per cache hit. Before the
request object a ``create()`` that built applied the target 2 times and chose the engine 3 times (create, cache_key,
build_prefix), reading the settings 6 times, and a task's first ``Environment.build()`` 3 and 4 times (with the
Environment's own, 4 and 4, as issue 26 counted). The engine below is a real :class:`Engine` whose prefix
holds no interpreter (what a data-only spec builds): the rest of the pipeline (lock, floor, conda-pack, the cache)
runs for real.
"""

import collections
import os
import tarfile

import pytest

import poncho_wq.assemble.environment as environment_module
import poncho_wq.config as config
import poncho_wq.engines as engines
from poncho_wq import upstream
from poncho_wq.assemble.environment import Environment
from poncho_wq.errors import BuildError
from poncho_wq.request import BuildRequest
from poncho_wq.spec import parse_spec


class EmptyEngine(engines.Engine):
    """Populates a prefix with nothing (data only): the pipeline around it is what is counted."""

    name = "empty-for-counting"

    def populate(self, request, prefix, progress):
        os.makedirs(os.path.join(prefix, "conda-meta"), exist_ok=True)
        return {}


@pytest.fixture
def counts(monkeypatch):
    seen = collections.Counter()

    def counting(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            seen[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    for module in (engines, environment_module):
        for name in ("with_target", "get_engine"):
            if hasattr(module, name):
                counting(module, name)
    real_init = config.Settings.__init__

    def settings_init(self, *args, **kwargs):
        seen["settings"] += 1
        real_init(self, *args, **kwargs)
    monkeypatch.setattr(config.Settings, "__init__", settings_init)
    return seen


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PONCHO_WQ_TARGET", raising=False)
    return tmp_path / "cache"


def spec():
    """A spec nothing is installed from: EmptyEngine builds an empty prefix whatever it says."""
    return parse_spec({"pip": ["nothing-installed-here==1"]})


def test_create_resolves_target_and_engine_once(cache, counts):
    engine = EmptyEngine()
    result = engines.create(spec(), engine=engine)
    assert not result.cache_hit and os.path.isfile(result.path)
    assert counts["with_target"] == 1 and counts["get_engine"] == 1, counts
    counts.clear()
    again = engines.create(spec(), engine=engine)
    assert again.cache_hit and again.path == result.path
    assert counts["with_target"] == 1 and counts["get_engine"] == 1, counts


def test_environment_build_resolves_once_per_request(cache, counts):
    env = Environment.from_spec(spec(), engine=EmptyEngine())
    counts.clear()  # the entry (Environment) resolved the user's target; the build resolves its request once
    env.build(progress=False)
    assert counts["with_target"] == 1 and counts["get_engine"] == 1, counts
    counts.clear()
    env.build(progress=False)  # the memo: nothing resolved again
    assert counts["with_target"] == 0 and counts["get_engine"] == 0 and counts["settings"] == 0, counts


def test_the_request_carries_the_settings_of_the_key(cache, monkeypatch):
    monkeypatch.setenv("PONCHO_WQ_KEEP_TESTS", "1")
    monkeypatch.setenv("PONCHO_WQ_TARGET", "manylinux_2_28_x86_64")
    request = engines.build_request(spec(), engine=EmptyEngine())
    monkeypatch.delenv("PONCHO_WQ_KEEP_TESTS")
    monkeypatch.delenv("PONCHO_WQ_TARGET")
    assert isinstance(request, BuildRequest)
    assert request.keep_tests and request.spec.target == "manylinux_2_28_x86_64"
    # settings changed after the entry do not change this request's key (they were read once, at the entry)
    assert engines.request_key(request) != engines.cache_key(request.spec, engine=request.engine)
    monkeypatch.setenv("PONCHO_WQ_KEEP_TESTS", "1")
    assert engines.request_key(request) == engines.cache_key(request.spec, engine=request.engine)
    with pytest.raises(AttributeError):
        request.keep_tests = False  # frozen


def test_public_cache_key_applies_the_target_like_a_build(cache, monkeypatch):
    """cache_key() goes through build_request(): $PONCHO_WQ_TARGET is part of its key as it is of a build's (it
    made a request of its own, without the target: the key of another build than create() would make)."""
    untargeted = engines.cache_key(spec(), engine=EmptyEngine())
    monkeypatch.setenv("PONCHO_WQ_TARGET", "manylinux_2_28_x86_64")
    targeted = engines.cache_key(spec(), engine=EmptyEngine())
    assert targeted != untargeted
    assert targeted == engines.request_key(engines.build_request(spec(), engine=EmptyEngine()))
    monkeypatch.delenv("PONCHO_WQ_TARGET")
    assert engines.cache_key(spec(), engine=EmptyEngine(), target="manylinux_2_28_x86_64") == targeted


def test_source_date_epoch_is_in_the_key_of_the_bytes_it_changes(cache, monkeypatch):
    """$SOURCE_DATE_EPOCH sets every member's mtime: a build under another value is another entry (it used to be a
    cache hit returning the other value's bytes); its default, set or not, keeps today's keys."""
    first = engines.create(spec(), engine=EmptyEngine())
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(config.DEFAULT_MTIME))
    assert engines.cache_key(spec(), engine=EmptyEngine()) == first.key
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    other = engines.create(spec(), engine=EmptyEngine())
    assert not other.cache_hit and other.key != first.key and other.path != first.path
    with tarfile.open(other.path) as t:
        assert {m.mtime for m in t.getmembers()} == {1234567890}
    with tarfile.open(first.path) as t:
        assert {m.mtime for m in t.getmembers()} == {config.DEFAULT_MTIME}


@pytest.mark.parametrize("call", ["dict_to_env", "pack_env_from_dict"])
def test_upstream_conda_executable_travels_in_the_request_not_in_os_environ(tmp_path, monkeypatch, call):
    """upstream.py set $PONCHO_CONDA_EXE around the build (seen by every thread and by the tool's own
    environment); the request carries it now. The installer is a real executable that records its environment
    and fails, so nothing is built."""
    monkeypatch.delenv("PONCHO_CONDA_EXE", raising=False)
    monkeypatch.setenv("PONCHO_WQ_CACHE", str(tmp_path / "cache"))
    record = tmp_path / "environ.txt"
    tool = tmp_path / "micromamba"
    tool.write_text("#!/bin/sh\nenv > '{}'\necho 'no channel here' >&2\nexit 1\n".format(record))
    tool.chmod(0o755)
    spec = {"conda": {"channels": ["conda-forge"], "packages": ["python=3.11"]}}
    with pytest.raises(BuildError, match="no channel here"):
        if call == "dict_to_env":
            upstream.dict_to_env(spec, conda_executable=str(tool), cache=False)
        else:
            upstream.pack_env_from_dict(spec, str(tmp_path / "env.tar.gz"), conda_executable=str(tool))
    assert record.exists()  # the named installer ran
    assert "PONCHO_CONDA_EXE=" not in record.read_text()
    assert "PONCHO_CONDA_EXE" not in os.environ


def test_create_takes_a_request_and_refuses_arguments_the_request_already_holds(cache):
    request = engines.build_request(spec(), engine=EmptyEngine())
    with pytest.raises(engines.SpecError, match="already holds"):
        engines.create(request, engine="portable")
    assert engines.create(request).key == engines.request_key(request)
