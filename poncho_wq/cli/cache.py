"""``poncho_wq cache list | rm KEY | prune [--max-size 5G] [--max-age 30d] [--dry-run]``: manage built environments."""

import re
import sys
import time
from fractions import Fraction

from ..archive.cache import Cache
from ..errors import PonchoError, SpecError
from .common import setup_logging
from .main import cache_main

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


#: Largest accepted --max-size (8 EiB, the largest file size Linux can represent) and --max-age (1,000 years):
#: beyond them a number means nothing, and huge digit strings overflowed float() into a traceback.
MAX_SIZE = (1 << 63) - 1
MAX_AGE = 1000 * 365 * 86400


def _shown(text):
    return repr(text) if len(text) <= 40 else repr(text[:20] + "..." + text[-8:]) + " ({} characters)".format(
        len(text))


def _number(text, option, expected):
    """``(number, unit)`` of a ``<number><unit>`` option, the number an exact Fraction (float() turned 400 digits
    into inf, and int(inf) into an OverflowError traceback); SpecError naming the option and value otherwise."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$", text)
    if not m:
        raise SpecError("{} {}: expected {}".format(option, _shown(text), expected))
    return Fraction(m.group(1)), m.group(2)


def parse_size(text):
    """``5G``, ``500M``, ``1024``, ``1.5GiB`` -> bytes (binary units)."""
    expected = "a size such as 500M or 5G"
    number, unit = _number(text, "--max-size", expected)
    m = re.match(r"^([KMGT]?)(?:i?B)?$", unit, re.IGNORECASE)
    if not m:
        raise SpecError("--max-size {}: unknown unit {!r}; expected {}".format(_shown(text), unit, expected))
    value = int(number * _UNITS[m.group(1).upper()])
    if value > MAX_SIZE:
        raise SpecError("--max-size {}: larger than the largest file size (8 EiB); leave --max-size out for no size "
                        "limit".format(_shown(text)))
    return value


def parse_age(text):
    """``30d``, ``12h``, ``90m``, ``2w``, ``3600`` (seconds) -> seconds."""
    expected = "an age such as 30d, 12h or 90m"
    number, unit = _number(text, "--max-age", expected)
    if unit not in _AGES and unit != "":
        raise SpecError("--max-age {}: unknown unit {!r}; expected {}".format(_shown(text), unit, expected))
    seconds = number * _AGES[unit or "s"]
    if seconds > MAX_AGE:
        raise SpecError("--max-age {}: more than 1000 years; leave --max-age out for no age limit".format(
            _shown(text)))
    return float(seconds)


def human_size(n):
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return "{:.1f}{}".format(n, unit) if unit != "B" else "{}B".format(n)
        n /= 1024.0


def human_age(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "{:.0f}{}".format(seconds // size, unit)
    return "{:.0f}s".format(seconds)


def describe_floor(floor):
    """``x86_64 glibc>=2.35`` for a floor recorded at build time; ``-`` for entries built before floors were."""
    if not floor:
        return "-"
    libc = "{}>={}".format(floor.get("libc") or "glibc", floor["glibc"]) if floor.get("glibc") else (
        floor.get("libc") or "any libc")
    return "{} {}".format(floor.get("machine") or "any", libc)


def command(args, parser, prog):
    """Run ``cache list|rm|prune`` on parsed *args* (*parser*: :func:`poncho_wq.cli.parsers.cache`)."""
    setup_logging(False)
    cache = Cache(args.cache_dir)
    if args.command == "list":
        _list(cache)
    elif args.command == "rm":
        e = cache.remove(args.key)
        print("removed {} ({})".format(e.path, human_size(e.size)), file=sys.stderr)
    else:
        if args.max_size is None and args.max_age is None:
            raise PonchoError("prune needs --max-size and/or --max-age")
        removed = cache.prune(parse_size(args.max_size) if args.max_size else None,
                              parse_age(args.max_age) if args.max_age else None, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        if args.dry_run:
            for e in removed:
                print("{} {} ({})".format(verb, e.path, human_size(e.size)), file=sys.stderr)
        print("{} {} entr{} ({})".format(verb, len(removed), "y" if len(removed) == 1 else "ies",
                                         human_size(sum(e.size for e in removed))), file=sys.stderr)
    return 0


#: ``cache list``'s columns; the rows line up under them.
_ROW = "{:<21}  {:>8}  {:>5}  {:<22}  {}"


def _list(cache):
    """One line per environment, then per code layer / script copy, under a header; a total line at the end."""
    now = time.time()
    envs, layers = cache.entries(), cache.layer_entries()
    print(_ROW.format("HASH", "SIZE", "AGE", "FLOOR", "WHAT"))
    for e in envs:
        print(_ROW.format(e.key[:16], human_size(e.size), human_age(now - e.mtime), describe_floor(e.floor),
                          e.summary))
    for e in layers:
        print(_ROW.format(e.key[:21], human_size(e.size), human_age(now - e.mtime), "-", e.summary))
    print("total: {} environment{}, {} layer{}/cop{}, {}".format(
        len(envs), "" if len(envs) == 1 else "s", len(layers), "" if len(layers) == 1 else "s",
        "y" if len(layers) == 1 else "ies", human_size(sum(e.size for e in envs + layers))))
    for name, (count, size) in cache.stores().items():
        print("{}/: {} files, {} (build inputs; not pruned)".format(name, count, human_size(size)), file=sys.stderr)


def main(argv=None):
    """``poncho_wq cache``: kept for callers of the module before :mod:`poncho_wq.cli.main` held the commands."""
    return cache_main(argv)
