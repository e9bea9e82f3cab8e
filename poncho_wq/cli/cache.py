"""``python -m poncho_wq cache list | rm KEY | prune [--max-size 5G] [--max-age 30d]``: manage built environments."""

import re
import sys
import time

from ..errors import PonchoError
from .common import run, setup_logging
from .create import _Parser

PROG = "poncho_wq cache"
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text):
    """``5G``, ``500M``, ``1024`` -> bytes (binary units)."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", text, re.IGNORECASE)
    if not m:
        raise PonchoError("--max-size {!r}: expected a size such as 500M or 5G".format(text))
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_age(text):
    """``30d``, ``12h``, ``90m``, ``2w``, ``3600`` (seconds) -> seconds."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", text)
    if not m:
        raise PonchoError("--max-age {!r}: expected an age such as 30d, 12h or 90m".format(text))
    return float(m.group(1)) * _AGES[m.group(2) or "s"]


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


def parser():
    p = _Parser(prog=PROG, description="List, remove or prune cached environment tarballs.")
    p.add_argument("--cache-dir", metavar="DIR", help="cache directory (default $PONCHO_WQ_CACHE, ...)")
    sub = p.add_subparsers(dest="command", metavar="{list,rm,prune}")
    sub.required = True
    sub.add_parser("list", help="hash, size, age and spec summary of each entry")
    rm = sub.add_parser("rm", help="remove one entry (a unique prefix of its hash is enough)")
    rm.add_argument("key")
    pr = sub.add_parser("prune", help="remove entries older than --max-age, then the oldest beyond --max-size")
    pr.add_argument("--max-size", type=str)
    pr.add_argument("--max-age", type=str)
    for s in sub.choices.values():
        s.error = p.error
    return p


def _cache(argv):
    args = parser().parse_args(argv)
    setup_logging(False)
    from ..cache import Cache

    cache = Cache(args.cache_dir)
    if args.command == "list":
        now = time.time()
        for e in cache.entries():
            print("{}  {:>8}  {:>5}  {}".format(e.key[:16], human_size(e.size), human_age(now - e.mtime),
                                                e.summary))
    elif args.command == "rm":
        e = cache.remove(args.key)
        print("removed {} ({})".format(e.path, human_size(e.size)), file=sys.stderr)
    else:
        if args.max_size is None and args.max_age is None:
            raise PonchoError("prune needs --max-size and/or --max-age")
        removed = cache.prune(parse_size(args.max_size) if args.max_size else None,
                              parse_age(args.max_age) if args.max_age else None)
        print("removed {} entr{} ({})".format(len(removed), "y" if len(removed) == 1 else "ies",
                                              human_size(sum(e.size for e in removed))), file=sys.stderr)
    return 0


def main(argv=None):
    return run(PROG, _cache, sys.argv[1:] if argv is None else argv)
