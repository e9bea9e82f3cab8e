"""The Poncho Environment Specification: parse and validate once, then pass a frozen :class:`Spec` around.

Accepted input shapes (JSON, or YAML-free JSON in a file named ``*.yaml`` as Parsl writes it):

* the Poncho shape: ``{"conda": {"channels": [...], "packages": [...]}, "pip": [...], "git": {VAR: {...}},
  "http": {VAR: {...}}}``, plus ``"python": "X.Y[.Z]"`` (recorded by the analyzer when there is no conda
  section, as the old ``python_package_analyze`` did);
* upstream poncho's newer conda shape, ``"conda": {"channels": [...], "dependencies": [..., {"pip": [...]}]}``;
* a conda ``environment.yml``-style document: ``{"name", "channels", "dependencies": [..., {"pip": [...]}]}``.

All of them become the same :class:`Spec`. Every validation error names the field, the bad value and what is
expected, as one :class:`~poncho_wq.errors.PonchoError` line. :meth:`Spec.digest` is the content hash that keys
the build cache: independent of key and package order, sensitive to everything that changes the environment
(channel order is kept, since it is conda's channel priority).
"""

import dataclasses
import hashlib
import json
import re
from typing import Optional, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import PonchoError

_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONDA_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.\-]*$")
_CONDA_BUILD = re.compile(r"^[A-Za-z0-9_.*+!\-]+$")
_PYTHON_VERSION = re.compile(r"^3\.\d+(\.\d+)?$")
_HTTP_TYPES = ("file", "tar")
_COMPRESSIONS = ("gzip", "bzip2", "xz")


@dataclasses.dataclass(frozen=True)
class CondaSection:
    channels: Tuple[str, ...]
    packages: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class GitSource:
    remote: str
    tag: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class HttpSource:
    url: str
    type: str = "file"
    compression: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Spec:
    """A validated, normalized environment specification (immutable, hashable)."""

    python: Optional[str] = None
    conda: Optional[CondaSection] = None
    pip: Tuple[str, ...] = ()
    git: Tuple[Tuple[str, GitSource], ...] = ()
    http: Tuple[Tuple[str, HttpSource], ...] = ()

    @property
    def python_version(self):
        """The Python version the environment must have ("3.11" or "3.11.7"), or None when unconstrained."""
        if self.python:
            return self.python
        for pkg in self.conda.packages if self.conda else ():
            m = re.match(r"^(?:.+?::)?python\s*[=<>~!]*=?\s*(3\.\d+(?:\.\d+)?)", pkg)
            if m:
                return m.group(1)
        return None

    @property
    def data_variables(self):
        """Names of the environment variables the git and http sections define, sorted."""
        return tuple(sorted([name for name, _ in self.git] + [name for name, _ in self.http]))

    def to_dict(self):
        """The Poncho JSON shape (the one upstream tools read)."""
        out = {}
        if self.python:
            out["python"] = self.python
        if self.conda:
            out["conda"] = {"channels": list(self.conda.channels), "packages": list(self.conda.packages)}
        if self.pip:
            out["pip"] = list(self.pip)
        if self.git:
            out["git"] = {k: _drop_none(dataclasses.asdict(v)) for k, v in self.git}
        if self.http:
            out["http"] = {k: _drop_none(dataclasses.asdict(v)) for k, v in self.http}
        return out

    def dumps(self):
        """Human-readable JSON, as written by ``poncho_package_analyze``."""
        return json.dumps(self.to_dict(), indent=4) + "\n"

    def canonical(self):
        """Compact, key-sorted JSON of the normalized spec: the input to :meth:`digest`."""
        d = self.to_dict()
        if "pip" in d:
            d["pip"] = [_pip_key(p) for p in d["pip"]]
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def digest(self):
        """SHA-256 hex digest of :meth:`canonical`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def summary(self, limit=60):
        """A short one-line description for listings."""
        parts = []
        if self.python_version:
            parts.append("python " + self.python_version)
        if self.conda:
            parts.append("conda: " + " ".join(self.conda.packages))
        if self.pip:
            parts.append("pip: " + " ".join(self.pip))
        if self.data_variables:
            parts.append("data: " + " ".join(self.data_variables))
        text = "; ".join(parts) or "(empty)"
        return text if len(text) <= limit else text[: limit - 3] + "..."


def _drop_none(d):
    return {k: v for k, v in d.items() if v is not None}


def _pip_key(req_string):
    req = Requirement(req_string)
    req.name = canonicalize_name(req.name)
    return str(req)


def _fail(field, value, expected):
    raise PonchoError("spec field {}: {!r} is not valid; expected {}".format(field, value, expected))


def _expect(cond, field, value, expected):
    if not cond:
        _fail(field, value, expected)


def _string_list(value, field):
    _expect(isinstance(value, list), field, value, "a list of strings")
    for i, item in enumerate(value):
        _expect(isinstance(item, str) and item.strip(), "{}[{}]".format(field, i), item, "a non-empty string")
    return [item.strip() for item in value]


def validate_pip(req_string, field="pip"):
    """Return *req_string* normalized by :class:`packaging.requirements.Requirement`, or raise PonchoError."""
    if req_string.startswith("-"):
        _fail(field, req_string, "a PEP 508 requirement (pip options such as -e are not allowed)")
    try:
        return str(Requirement(req_string))
    except InvalidRequirement as e:
        _fail(field, req_string, "a PEP 508 requirement such as 'numpy==1.26.4' ({})".format(str(e).splitlines()[0]))


def validate_conda(spec_string, field="conda.packages"):
    """Check *spec_string* is a conda MatchSpec (parsed by py-rattler, then its fields checked)."""
    try:
        from rattler import MatchSpec
    except ImportError:  # pragma: no cover - rattler is a dependency; keep a readable error if it is missing
        raise PonchoError("validating conda packages needs py-rattler: pip install py-rattler")
    expected = "a conda match spec such as 'conda-forge::numpy=1.26.4=py311h64a7726_0'"
    try:
        ms = MatchSpec(spec_string)
    except Exception as e:
        _fail(field, spec_string, "{} ({})".format(expected, str(e).splitlines()[0]))
    name = ms.name.normalized if ms.name is not None else ""
    _expect(_CONDA_NAME.match(name or ""), field, spec_string, expected + " (bad package name)")
    if ms.build is not None:
        _expect(_CONDA_BUILD.match(str(ms.build)), field, spec_string, expected + " (bad build string)")
    if ms.version is not None:
        _expect(not re.search(r"[=<>!~]=*[a-zA-Z]", str(ms.version)) or "*" in str(ms.version),
                field, spec_string, expected + " (bad version)")
    return spec_string


def _validate_url(url, field):
    _expect(isinstance(url, str) and re.match(r"^https?://[^\s/]+", url or ""), field, url,
            "an http:// or https:// URL")
    return url


def _parse_conda(value, field, pip_out):
    _expect(isinstance(value, dict), field, value, "an object with 'channels' and 'packages'")
    for key in value:
        _expect(key in ("channels", "packages", "dependencies"), "{}.{}".format(field, key), key,
                "one of 'channels', 'packages', 'dependencies'")
    channels = _string_list(value.get("channels", []), field + ".channels")
    packages = []
    if "packages" in value:
        packages += _string_list(value["packages"], field + ".packages")
    deps = value.get("dependencies", [])
    _expect(isinstance(deps, list), field + ".dependencies", deps, "a list")
    for i, dep in enumerate(deps):
        f = "{}.dependencies[{}]".format(field, i)
        if isinstance(dep, dict):
            _expect(list(dep) == ["pip"], f, dep, "a string or {'pip': [...]}")
            pip_out.extend(_string_list(dep["pip"], f + ".pip"))
        else:
            _expect(isinstance(dep, str) and dep.strip(), f, dep, "a conda package string")
            packages.append(dep.strip())
    for i, pkg in enumerate(packages):
        validate_conda(pkg, "{}.packages[{}]".format(field, i))
    return CondaSection(tuple(channels), tuple(sorted(set(packages))))


def _parse_git(value):
    _expect(isinstance(value, dict), "git", value, "an object mapping variable names to {remote, tag}")
    out = []
    for var, src in value.items():
        f = "git." + str(var)
        _expect(_ENV_VAR.match(var), "git", var, "a shell variable name such as DATA_DIR")
        _expect(isinstance(src, dict), f, src, "an object with 'remote' and 'tag'")
        for key in src:
            _expect(key in ("remote", "tag", "ref"), "{}.{}".format(f, key), key, "'remote' or 'tag'")
        remote = src.get("remote")
        _expect(isinstance(remote, str) and remote.strip() and not remote.startswith("-"), f + ".remote", remote,
                "a git remote URL or path")
        tag = src.get("tag", src.get("ref"))
        if tag is not None:
            _expect(isinstance(tag, str) and re.match(r"^[A-Za-z0-9][A-Za-z0-9._/\-]*$", tag), f + ".tag", tag,
                    "a tag, branch or commit id")
        out.append((var, GitSource(remote.strip(), tag)))
    return tuple(sorted(out))


def _parse_http(value):
    _expect(isinstance(value, dict), "http", value, "an object mapping variable names to {type, url}")
    out = []
    for var, src in value.items():
        f = "http." + str(var)
        _expect(_ENV_VAR.match(var), "http", var, "a shell variable name such as REFERENCE_DB")
        _expect(isinstance(src, dict), f, src, "an object with 'url', 'type' and optional 'compression'")
        for key in src:
            _expect(key in ("url", "type", "compression"), "{}.{}".format(f, key), key,
                    "'url', 'type' or 'compression'")
        url = _validate_url(src.get("url"), f + ".url")
        kind = src.get("type", "file")
        _expect(kind in _HTTP_TYPES, f + ".type", kind, "one of " + ", ".join(_HTTP_TYPES))
        comp = src.get("compression")
        _expect(comp is None or comp in _COMPRESSIONS, f + ".compression", comp, "one of " + ", ".join(_COMPRESSIONS))
        out.append((var, HttpSource(url, kind, comp)))
    return tuple(sorted(out))


_TOP_KEYS = ("python", "conda", "pip", "git", "http")
_ENV_YML_KEYS = ("name", "channels", "dependencies", "prefix")


def parse_spec(data):
    """Validate a decoded JSON document and return its :class:`Spec`."""
    _expect(isinstance(data, dict), "(top level)", data, "a JSON object")
    if "dependencies" in data and "conda" not in data:
        for key in data:
            _expect(key in _ENV_YML_KEYS + ("pip", "git", "http"), key, key,
                    "an environment.yml key (name, channels, dependencies)")
        conda_like = {"channels": data.get("channels", []), "dependencies": data["dependencies"]}
        rest = {k: v for k, v in data.items() if k in ("pip", "git", "http")}
        rest["conda"] = conda_like
        return _parse_poncho(rest, conda_field="dependencies")
    for key in data:
        _expect(key in _TOP_KEYS, key, key, "one of the top-level keys " + ", ".join(_TOP_KEYS))
    return _parse_poncho(data)


def _parse_poncho(data, conda_field="conda"):
    pip = []
    conda = None
    if "conda" in data:
        conda = _parse_conda(data["conda"], conda_field, pip)
    if "pip" in data:
        pip += _string_list(data["pip"], "pip")
    normalized = {}
    for i, p in enumerate(pip):
        norm = validate_pip(p, "pip[{}]".format(i))
        key = canonicalize_name(Requirement(norm).name)
        if key in normalized and normalized[key] != norm:
            _fail("pip[{}]".format(i), p, "one requirement per distribution (also given: {!r})".format(normalized[key]))
        normalized[key] = norm
    python = data.get("python")
    if python is not None:
        _expect(isinstance(python, str) and _PYTHON_VERSION.match(python), "python", python,
                "a Python version such as '3.11' or '3.11.7'")
    return Spec(
        python=python,
        conda=conda,
        pip=tuple(normalized[k] for k in sorted(normalized)),
        git=_parse_git(data["git"]) if "git" in data else (),
        http=_parse_http(data["http"]) if "http" in data else (),
    )


def loads(text, source="<spec>"):
    """Parse JSON text into a :class:`Spec`; a JSON syntax error names *source*, line and column."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PonchoError("{}: not valid JSON: {} at line {} column {}".format(source, e.msg, e.lineno, e.colno))
    return parse_spec(data)


def load_spec(path):
    """Read and validate a spec file; ``-`` reads standard input. A missing file raises PonchoError(exit_code=2)."""
    import sys

    if path == "-":
        return loads(sys.stdin.read(), "<stdin>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise PonchoError("spec file {} does not exist".format(path), exit_code=2)
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise PonchoError("cannot read spec file {}: {}".format(path, e), exit_code=2)
    return loads(text, path)


def as_spec(value):
    """Accept a :class:`Spec`, a dict, or a path to a spec file, and return a :class:`Spec`."""
    if isinstance(value, Spec):
        return value
    if isinstance(value, dict):
        return parse_spec(value)
    return load_spec(str(value))
