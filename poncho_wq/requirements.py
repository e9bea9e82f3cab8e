"""Requirements files (pip's syntax) as specs: ``poncho_package_create --from-requirements requirements.txt``.

Why a reader of our own rather than handing the file to pip: the spec is the unit that is validated, hashed and
cached, and a requirements file can carry options that would reach the builder unchecked (``--index-url`` pointing
the build somewhere else, ``--trusted-host``). What is read: one requirement per line (PEP 508: pins, extras,
markers, ``name @ url``), comments, ``\\`` continuations, ``${VAR}`` from the environment (as pip does),
``-r``/``--requirement`` includes and ``-c``/``--constraint`` files (relative to the file naming them), and
per-requirement ``--hash`` options (dropped: a spec has no hashes; the build cache is keyed by the resolved spec).
Refused with a message naming the file, line and fix: index and link options (use ``PIP_INDEX_URL`` /
``UV_INDEX_URL`` or pip.conf, which the builders read), editable and path lines (ship local code through the
analysis), unknown options.

Constraints narrow the versions of requirements the files name; a constraint on a package no file requires cannot
be said in a spec and is reported in the result's warnings.
"""

import logging
import os
import re
from typing import Dict, List, Optional, Set, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .credentials import WHERE_INSTEAD, find as find_credentials, mask
from .errors import InputMissing, SpecError
from .fsutil import read_input
from .spec import parse_spec

_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index", "--trusted-host",
                  "--pre", "--prefer-binary", "--only-binary", "--no-binary", "--use-feature")
#: The other options pip reads in a requirements file (named in messages; anything else is "an unknown option":
#: a line of a file that is not a requirements file is never shown).
_PIP_OPTIONS = ("--require-hashes", "--config-settings", "--global-option", "--install-option")
_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")
#: Requirements files are small; a bigger input (``/dev/zero``, a wrong file) is refused before it fills the memory.
MAX_BYTES = 16 << 20


def _lines(path: str) -> List[Tuple[int, str]]:
    """``(line number, logical line)`` of *path*: continuations joined, comments and blank lines dropped."""
    try:
        data = read_input(path, MAX_BYTES)  # never blocks on a FIFO without a writer
    except FileNotFoundError:
        raise InputMissing("requirements file {} does not exist".format(path)) from None
    except OSError as e:
        raise InputMissing("cannot read requirements file {}: {}".format(path, e.strerror or e)) from None
    if len(data) > MAX_BYTES:
        raise SpecError("{}: more than {} MB is too large for a requirements file; is it the right file?".format(
            path, MAX_BYTES >> 20))
    try:
        raw = data.decode("utf-8-sig").splitlines()  # -sig: a BOM (Windows editors) is not part of line 1
    except UnicodeDecodeError as e:
        raise SpecError("{}: not a UTF-8 text file (byte 0x{:02x} at offset {}); a requirements file is text".format(
            path, data[e.start], e.start)) from None
    out, buf, start = [], "", None
    for number, line in enumerate(raw, 1):
        if start is None:
            start = number
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        text = re.sub(r"(^|\s)#.*$", "", buf).strip()
        if text:
            out.append((start, _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), text)))
        buf, start = "", None
    return out


def _option(words: List[str], where: str) -> Tuple[str, str]:
    opt = words[0]
    if "=" in opt and opt.startswith("--"):
        opt, value = opt.split("=", 1)
        return opt, value
    if len(opt) > 2 and opt[1] != "-":  # -rfile
        return opt[:2], opt[2:]
    if len(words) < 2:
        raise SpecError("{}: option {} needs a value".format(where, _known(opt)))
    return opt, words[1]


def _known(opt: str) -> str:
    """*opt* when it is an option pip knows, else "an unknown option": the words of a line are file contents."""
    return opt if opt in _INDEX_OPTIONS + _PIP_OPTIONS + ("-r", "--requirement", "-c", "--constraint", "-e",
                                                          "--editable", "--hash") else "(an unknown option)"


def _include(where: str, opt: str, value: str, path: str) -> str:
    """The file a ``-r``/``-c`` line names, or an error (a URL: pip would download it, poncho_wq does not)."""
    if "://" in value:
        secret = find_credentials(value)
        if secret:
            raise SpecError("{}: {} {} has {}, which would be stored; {}".format(
                where, opt, mask(value), secret, WHERE_INSTEAD))
        raise SpecError("{}: {} {}: includes are read from local files; download it and name the file".format(
            where, opt, mask(value)))
    target = value if os.path.isabs(value) else os.path.join(os.path.dirname(path), value)
    if not os.path.isfile(target):
        raise InputMissing("{}: {} {}: {} does not exist or is not a regular file; fix the path (relative to "
                           "{})".format(where, opt, value, os.path.abspath(target), os.path.dirname(path)))
    return target


def _read(path: str, requirements: Dict[str, Tuple[Requirement, str]], constraints: Dict[str, Requirement],
          seen: Set[str], constraint: bool = False) -> None:
    path = os.path.abspath(path)
    if path in seen:
        return  # pip reads a file included twice once
    seen.add(path)
    for number, text in _lines(path):
        # Messages name the file and line, never the line's text: a wrong file given as requirements (``-r
        # /etc/shadow``) must not end up in a terminal or a log, nor a secret expanded from ${VAR}.
        where = "{}:{}".format(path, number)
        words = text.split()
        if words[0].startswith("-"):
            opt, value = _option(words, where)
            if opt in ("-r", "--requirement", "-c", "--constraint"):
                target = _include(where, opt, value, path)
                _read(target, requirements, constraints, seen, constraint or opt in ("-c", "--constraint"))
                continue
            if opt in ("-e", "--editable"):
                raise SpecError("{}: an editable requirement (-e): ship local code through the analysis "
                                "(poncho_package_analyze / PonchoTask), not a requirements file".format(where))
            if opt in _INDEX_OPTIONS:
                raise SpecError("{}: {} is an index option; set PIP_INDEX_URL / UV_INDEX_URL (or pip.conf), which "
                                "the builders read, instead of putting it in the requirements".format(where, opt))
            raise SpecError("{}: option {} is not supported in a requirements file read by poncho_wq".format(
                where, _known(opt)))
        # Per-requirement options: --hash is dropped (a spec has no hashes), others refused.
        kept = []
        for w in words:
            if w.startswith("--hash"):
                continue
            if w.startswith("--"):
                raise SpecError("{}: per-requirement option {} is not supported".format(where, _known(w.split("=")[0])))
            kept.append(w)
        line = " ".join(kept)
        secret = next(filter(None, (find_credentials(w) for w in kept)), None)
        if secret:
            # The spec travels: in the cache's records and as poncho/spec.json in every worker's copy.
            raise SpecError("{}: a URL with {}, which would be stored in the environment (its poncho/spec.json on "
                            "every worker) and the cache; {}".format(where, secret, WHERE_INSTEAD))
        if line.startswith((".", "/")) or line.endswith((".whl", ".tar.gz", ".zip")) and "@" not in line:
            raise SpecError("{}: a path, not a requirement: ship local code through the analysis, or name it as "
                            "'name @ file:///absolute/path'".format(where))
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            raise SpecError("{}: not a valid requirement ({}); expected one PEP 508 requirement per line, such as "
                            "'numpy==1.26.4'".format(where, _reason(e))) from None
        name = canonicalize_name(req.name)
        if constraint:
            if name in constraints:
                constraints[name].specifier &= req.specifier
            else:
                constraints[name] = req
        elif name in requirements:
            first = requirements[name][0]
            first.specifier &= req.specifier
            first.extras |= req.extras
        else:
            requirements[name] = (req, where)


def _reason(e: Exception) -> str:
    """What packaging found wrong, without the text it quotes (its first line says what it expected)."""
    first = str(e).splitlines()[0] if str(e) else "unparsable"
    return re.sub(r"\s*\(after .*", "", first)[:120]


def read_requirements(path: str) -> Tuple[List[str], List[str]]:
    """The pip requirement strings of the requirements file *path* (includes and constraints applied, in first-seen
    order) and warnings."""
    requirements: Dict[str, Tuple[Requirement, str]] = {}
    constraints: Dict[str, Requirement] = {}
    _read(path, requirements, constraints, set())
    warnings = []
    for name, c in sorted(constraints.items()):
        if name in requirements:
            requirements[name][0].specifier &= c.specifier
        else:
            warnings.append("constraint {} names a package no requirement names: not applied (a spec lists what "
                            "is installed, not constraints on dependencies)".format(c))
    return [str(req) for req, _ in requirements.values()], warnings


def spec_from_requirements(path: str, python: Optional[str] = None):
    """A :class:`~poncho_wq.spec.Spec` with the requirements file's packages in its pip section (and *python*, e.g.
    "3.11", as its Python version); warnings are logged."""
    pip, warnings = read_requirements(path)
    for w in warnings:
        logging.getLogger(__name__).warning("poncho: %s", w)
    if not pip:
        raise SpecError("requirements file {} names no package".format(path))
    data: Dict[str, object] = {"pip": pip}
    if python:
        data["python"] = python
    return parse_spec(data)
