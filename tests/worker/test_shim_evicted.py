"""An entry evicted between its unpack and its use (the shim's _pr_unpackkept): with PONCHO_ENV_KEEP or
PONCHO_ENV_BUDGET_MB under flock, the exclusive lock an unpack holds becomes the shared use lock, and flock(2)
converts a lock by dropping it first, so an evictor can remove the entry in that window. The shim unpacks it
again, and gives up after the third time (exit 4: "... was evicted three times while it was being unpacked:
raise PONCHO_ENV_BUDGET_MB"). The same loop serves a base environment, a code layer and an assembly from parts.

The evictor here is a ``flock`` first on PATH: when the shim converts the lock of the chosen entry (``flock -s FD``),
it removes the entry and its lock file as an eviction does (up to EVICT_TIMES times, counted in a file), then
runs the real flock. Real shim runs under dash, bash --posix and busybox sh."""

import os
import shutil

import pytest

from helpers.partenv import make_env
from helpers.shimutil import SHELLS, make_prefix, pack, run_shim, shim_env
from poncho_wq.archive.parts import cut_parts
from poncho_wq.assemble.layers import CodeLayer

pytestmark = pytest.mark.usefixtures("shells")

ENV_ID = "env-" + "0123456789abcdef" * 4

EVICTOR = """#!/bin/sh
# flock(1) with an evictor in the window of a lock conversion (see tests/worker/test_shim_evicted.py)
if [ "$1" = -s ] && [ "$#" = 2 ]; then
    lock=$(readlink "/proc/$$/fd/$2")
    case ${{lock##*/}} in
        .$EVICT_MATCH.lock)
            n=$(cat "$EVICT_COUNT" 2>/dev/null || echo 0)
            if [ "$n" -lt "$EVICT_TIMES" ]; then
                echo $((n + 1)) >"$EVICT_COUNT"
                entry=${{lock%/*}}/${{lock##*/.}}
                rm -rf -- "${{entry%.lock}}" "$lock"
            fi ;;
    esac
fi
exec {real} "$@"
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """argv (without the command) and the evicted entry's id, per kind: a base tarball, a code layer on it, an
    environment from parts."""
    d = tmp_path_factory.mktemp("evicted")
    base = pack(make_prefix(d, run_in_env=True), d / (ENV_ID + ".tar.gz"))
    (d / "mymod.py").write_text("VERSION = 1\n")
    code = CodeLayer([("lib/mymod.py", str(d / "mymod.py"))]).build(str(d / "codecache"))
    code_id = os.path.basename(code)[:-len(".tar.gz")]
    (d / "parts").mkdir()
    tarball = make_env(d / "parts", "e1", {"bigpkg": ("1.0", 100_000), "small": ("2.0", 1000)})
    parts = ["-e", os.path.basename(tarball)]
    for p in cut_parts(tarball, str(d / "parts")):
        parts += ["--part", p.path]
    return {"environment": (["-e", base], ENV_ID, "unpacked"),
            "code layer": (["-e", base, "--code", code], code_id, "unpacked"),
            "parts": (parts, os.path.basename(tarball)[:-len(".tar.gz")], "assembled")}


def _run(tmp_path, shell, args, entry, times, settings=None):
    bin_dir = tmp_path / "evictor"
    bin_dir.mkdir()
    (bin_dir / "flock").write_text(EVICTOR.format(real=shutil.which("flock")))
    (bin_dir / "flock").chmod(0o755)
    root = tmp_path / "root"
    env = shim_env(root, EVICT_MATCH=entry, EVICT_TIMES=times, EVICT_COUNT=str(tmp_path / "evictions"),
                   **(settings or {"PONCHO_ENV_BUDGET_MB": 1000}))
    env["PATH"] = "{}:{}".format(bin_dir, env["PATH"])
    r = run_shim(args + ["true"], shell=SHELLS[shell], env=env)
    evictions = int((tmp_path / "evictions").read_text()) if (tmp_path / "evictions").exists() else 0
    with open(root / "unpack.log") as f:
        unpacks = sum(1 for line in f if line.split()[-1:] == [entry])
    return r, evictions, unpacks, root / entry


@pytest.mark.parametrize("kind", ["environment", "code layer", "parts"])
@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_an_entry_evicted_before_its_use_is_unpacked_again(inputs, tmp_path, shell, kind):
    args, entry, _ = inputs[kind]
    r, evictions, unpacks, entry_dir = _run(tmp_path, shell, args, entry, 2)
    assert r.returncode == 0, r.stderr
    assert (evictions, unpacks) == (2, 3)
    assert (entry_dir / ".poncho_ready").is_file()


@pytest.mark.parametrize("kind", ["environment", "code layer", "parts"])
@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_an_entry_evicted_three_times_stops_the_run(inputs, tmp_path, shell, kind):
    args, entry, what = inputs[kind]
    r, evictions, unpacks, entry_dir = _run(tmp_path, shell, args, entry, 99)
    assert r.returncode == 4, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "poncho_package_run: {} was evicted three times while it was being {}: raise PONCHO_ENV_BUDGET_MB".format(
            entry_dir, what))
    assert (evictions, unpacks) == (3, 3)


@pytest.mark.parametrize("settings, fix", [
    ({"PONCHO_ENV_KEEP": 2}, "PONCHO_ENV_KEEP"),
    ({"PONCHO_ENV_KEEP": 2, "PONCHO_ENV_BUDGET_MB": 1000}, "PONCHO_ENV_BUDGET_MB or PONCHO_ENV_KEEP"),
], ids=["keep", "keep-and-budget"])
@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_message_names_the_settings_that_evict(inputs, tmp_path, shell, settings, fix):
    """PONCHO_ENV_KEEP alone also makes a root managed (another task's eviction keeps only the N most recently used
    bases): the advice names the settings in effect, not a PONCHO_ENV_BUDGET_MB nobody set."""
    args, entry, what = inputs["environment"]
    r, evictions, unpacks, entry_dir = _run(tmp_path, shell, args, entry, 99, settings)
    assert r.returncode == 4, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "poncho_package_run: {} was evicted three times while it was being {}: raise {}".format(entry_dir, what, fix))
    assert (evictions, unpacks) == (3, 3)
