"""The command-line conventions of issue 25, for every command: each option's --help states its default (and the
units of a size or an age), each --help ends with an EXAMPLES section, every command answers --version, the
usage names ``poncho_wq`` (not ``python -m poncho_wq``) and agrees with the argument list below it, ``--cache-dir``
works after the ``cache`` subcommand too, ``cache list`` has a header and a total and ``cache prune --dry-run``
removes nothing. The upstream drop-in options and exit codes stay as tests/cli/test_*_cli.py check them."""

import argparse
import os
import re
import time

import pytest

from helpers.cli import run_cli
from poncho_wq import __version__
from poncho_wq.archive.cache import Cache
from poncho_wq.cli import parsers

#: Every command as a user types it: (console script, arguments before --help).
COMMANDS = [
    ("poncho_package_analyze", []), ("python_package_analyze", []), ("poncho_package_create", []),
    ("python_package_create", []), ("poncho_wq", []), ("poncho_wq", ["analyze"]), ("poncho_wq", ["create"]),
    ("poncho_wq", ["cache"]), ("poncho_wq", ["cache", "list"]), ("poncho_wq", ["cache", "rm"]),
    ("poncho_wq", ["cache", "prune"]), ("poncho_wq", ["inspect"]), ("poncho_wq", ["diff"]),
    ("poncho_wq", ["serve"]), ("poncho_wq", ["shim"]),
]


def _parsers():
    """The argparse parsers behind the commands (serve's lives with its server in poncho_wq.deliver.publish)."""
    top = parsers.cache()
    subs = top._subparsers._group_actions[0].choices
    return {"analyze": parsers.analyze(), "create": parsers.create(), "cache": top,
            "cache list": subs["list"], "cache rm": subs["rm"], "cache prune": subs["prune"],
            "inspect": parsers.inspect(), "diff": parsers.diff()}


@pytest.mark.parametrize("name", ["analyze", "create", "cache", "cache list", "cache rm", "cache prune", "inspect",
                                  "diff"])
def test_every_option_with_a_value_states_its_default(name):
    parser = _parsers()[name]
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.help == argparse.SUPPRESS:
            continue  # positionals, flags (off unless given), hidden options
        assert "default" in (action.help or ""), "{} {}: {!r}".format(name, action.option_strings[0], action.help)


@pytest.mark.parametrize("prog, args", COMMANDS, ids=[" ".join([p] + a) for p, a in COMMANDS])
def test_help_has_examples_and_every_command_has_a_version(prog, args):
    r = run_cli(prog, *args, "--help")
    assert r.returncode == 0, r.stderr
    assert "\nexamples:\n" in r.stdout, r.stdout
    examples = r.stdout.split("\nexamples:\n", 1)[1].split("\n\n")[0].splitlines()
    assert examples and all(line.startswith("  ") and "#" in line for line in examples), examples
    assert "python -m poncho_wq <command>" not in r.stdout.splitlines()[0]
    v = run_cli(prog, *args, "--version")
    assert v.returncode == 0 and __version__ in v.stdout and v.stderr == "", (v.stdout, v.stderr)


def test_top_level_usage_names_the_command():
    r = run_cli("poncho_wq", "--help")
    assert r.stdout.startswith("usage: poncho_wq "), r.stdout
    for name in ("analyze", "create"):
        sub = run_cli("poncho_wq", name, "--help")
        assert sub.stdout.startswith("usage: poncho_wq {} ".format(name)), sub.stdout
    assert run_cli("poncho_package_analyze", "--help").stdout.startswith("usage: poncho_package_analyze ")
    assert run_cli("python_package_create", "--help").stdout.startswith("usage: python_package_create ")


def test_sizes_ages_ports_and_addresses_say_their_units_and_defaults():
    r = run_cli("poncho_wq", "cache", "prune", "--help").stdout.split("\noptions:\n", 1)[1]
    size = re.search(r"--max-size SIZE(.*?)--max-age", r, re.S).group(1)
    age = re.search(r"--max-age AGE(.*?)(-n, --dry-run|$)", r, re.S).group(1)
    assert "K, M, G or T" in " ".join(size.split()) and "default: no size limit" in " ".join(size.split())
    assert "s, m, h, d" in " ".join(age.split()) and "default: no age limit" in " ".join(age.split())
    serve = " ".join(run_cli("poncho_wq", "serve", "--help").stdout.split())
    assert "(default: 8000)" in serve and "(default: 127.0.0.1" in serve and "default: no access log" in serve


@pytest.mark.parametrize("name", ["analyze", "create", "inspect", "diff", "cache prune"])
def test_usage_line_agrees_with_the_argument_list(name):
    """Issue 25: analyze's hand-written usage named `<script ...> <out.json>` while its list said PATH, and left
    out half the options."""
    parser = _parsers()[name]
    usage = parser.format_usage()
    listed = parser.format_help().split("\n\n", 2)[-1]
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        shown = action.option_strings[0] if action.option_strings else action.metavar or action.dest
        assert shown in usage, (shown, usage)
        assert shown in listed, (shown, listed)


def _fake_entries(root, n=2):
    """Cache entries made without building (the content is not a tarball: listing and pruning never read it)."""
    c = Cache(str(root))
    for i in range(n):
        c.build(str(i) * 64, lambda out: open(out, "wb").write(b"x" * 1000), {"summary": "pip: fake{}".format(i)})
        time.sleep(0.01)
    return c


def test_cache_dir_after_the_subcommand(tmp_path):
    _fake_entries(tmp_path / "c")
    after = run_cli("poncho_wq", "cache", "list", "--cache-dir", tmp_path / "c")
    before = run_cli("poncho_wq", "cache", "--cache-dir", tmp_path / "c", "list")
    assert after.returncode == 0, after.stderr
    keys = [line.split()[0] for line in before.stdout.splitlines()]
    assert [line.split()[0] for line in after.stdout.splitlines()] == keys and "pip: fake1" in after.stdout
    # after the subcommand wins over before it, as the later option does everywhere
    both = run_cli("poncho_wq", "cache", "--cache-dir", tmp_path / "empty", "list", "--cache-dir", tmp_path / "c")
    assert [line.split()[0] for line in both.stdout.splitlines()] == keys
    prune = run_cli("poncho_wq", "cache", "prune", "--max-age", "0s", "--cache-dir", tmp_path / "c")
    assert prune.returncode == 0 and "removed 2 entries" in prune.stderr, prune.stderr


def test_cache_list_has_a_header_and_a_total(tmp_path):
    _fake_entries(tmp_path / "c")
    r = run_cli("poncho_wq", "cache", "list", "--cache-dir", tmp_path / "c")
    header, *rows, total = r.stdout.splitlines()
    assert header.split() == ["HASH", "SIZE", "AGE", "FLOOR", "WHAT"]
    assert [row.split()[0] for row in rows] == ["0" * 16, "1" * 16]
    assert total == "total: 2 environments, 0 layers/copies, 2.0K", total
    empty = run_cli("poncho_wq", "cache", "list", "--cache-dir", tmp_path / "none")
    assert empty.stdout.splitlines()[1:] == ["total: 0 environments, 0 layers/copies, 0B"]


def test_prune_dry_run_says_what_it_would_remove_and_removes_nothing(tmp_path):
    c = _fake_entries(tmp_path / "c")
    before = sorted(os.listdir(c.envs))
    r = run_cli("poncho_wq", "cache", "prune", "--max-size", "1K", "--dry-run", "--cache-dir", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("would remove ") and "0" * 16 in lines[0]  # the least recently used one
    assert lines[-1] == "would remove 1 entry (1000B)", lines
    assert sorted(os.listdir(c.envs)) == before
    real = run_cli("poncho_wq", "cache", "prune", "--max-size", "1K", "--cache-dir", tmp_path / "c")
    assert real.stderr.splitlines()[-1] == "removed 1 entry (1000B)"
    assert [e.key[0] for e in c.entries()] == ["1"]
