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

import os
import re
from typing import Dict, List, Optional, Set, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import InputMissing, SpecError

_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index", "--trusted-host",
                  "--pre", "--prefer-binary", "--only-binary", "--no-binary", "--use-feature")
_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")
#: ``user:password@`` or ``token@`` in a URL's authority.
_CREDENTIALS = re.compile(r"//[^/@\s]+@")


def _has_credentials(url: str) -> bool:
    """A password (``user:secret@``), or a token as the user name of an http(s) URL; ``git+ssh://git@host`` is a
    login name, not a secret."""
    m = re.match(r"^([a-z0-9+.-]+)://([^/@\s]+)@", url, re.I)
    return m is not None and (":" in m.group(2) or m.group(1).lower().split("+")[-1] in ("http", "https"))


def _redact(text: str) -> str:
    """*text* with the credentials of its URLs replaced by ``***`` (for messages and logs)."""
    return _CREDENTIALS.sub("//***@", text)


def _lines(path: str) -> List[Tuple[int, str]]:
    """``(line number, logical line)`` of *path*: continuations joined, comments and blank lines dropped."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a BOM (Windows editors) is not part of line 1
            raw = f.read().splitlines()
    except FileNotFoundError:
        raise InputMissing("requirements file {} does not exist".format(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputMissing("cannot read requirements file {}: {}".format(path, e)) from None
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
        raise SpecError("{}: option {} needs a value".format(where, opt))
    return opt, words[1]


def _read(path: str, requirements: Dict[str, Tuple[Requirement, str]], constraints: Dict[str, Requirement],
          seen: Set[str], constraint: bool = False) -> None:
    path = os.path.abspath(path)
    if path in seen:
        return  # pip reads a file included twice once
    seen.add(path)
    for number, text in _lines(path):
        where = "{}:{}".format(path, number)
        words = text.split()
        if words[0].startswith("-"):
            opt, value = _option(words, where)
            if opt in ("-r", "--requirement", "-c", "--constraint"):
                target = value if os.path.isabs(value) else os.path.join(os.path.dirname(path), value)
                if not os.path.isfile(target):
                    raise InputMissing("{}: {} {}: {} does not exist; fix the path (relative to {})".format(
                        where, opt, value, os.path.abspath(target), os.path.dirname(path)))
                _read(target, requirements, constraints, seen, constraint or opt in ("-c", "--constraint"))
                continue
            if opt in ("-e", "--editable"):
                raise SpecError("{}: editable requirement {!r}: ship local code through the analysis "
                                "(poncho_package_analyze / PonchoTask), not a requirements file".format(where, value))
            if opt in _INDEX_OPTIONS:
                raise SpecError("{}: {} is an index option; set PIP_INDEX_URL / UV_INDEX_URL (or pip.conf), which "
                                "the builders read, instead of putting it in the requirements".format(where, opt))
            raise SpecError("{}: option {} is not supported in a requirements file read by poncho_wq".format(
                where, opt))
        # Per-requirement options: --hash is dropped (a spec has no hashes), others refused.
        kept = []
        for w in words:
            if w.startswith("--hash"):
                continue
            if w.startswith("--"):
                raise SpecError("{}: per-requirement option {} is not supported".format(where, w))
            kept.append(w)
        line = " ".join(kept)
        if line.startswith((".", "/")) or line.endswith((".whl", ".tar.gz", ".zip")) and "@" not in line:
            raise SpecError("{}: {!r} is a path: ship local code through the analysis, or name it as "
                            "'name @ file:///absolute/path'".format(where, _redact(line)))
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            raise SpecError("{}: {!r} is not a valid requirement: {}".format(
                where, _redact(line), _redact(str(e).splitlines()[0]))) from None
        if req.url and _has_credentials(req.url):
            # The spec travels: in the cache's records and as poncho/spec.json in every worker's copy.
            raise SpecError("{}: {!r} has credentials in its URL, which would be stored in the environment (its "
                            "poncho/spec.json on every worker) and the cache; put them in ~/.netrc (pip and the "
                            "builders read it) and give the URL without them".format(where, _redact(line)))
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
    import logging

    from .spec import parse_spec

    pip, warnings = read_requirements(path)
    for w in warnings:
        logging.getLogger(__name__).warning("poncho: %s", w)
    if not pip:
        raise SpecError("requirements file {} names no package".format(path))
    data: Dict[str, object] = {"pip": pip}
    if python:
        data["python"] = python
    return parse_spec(data)
