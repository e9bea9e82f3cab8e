"""The Poncho Environment Specification: parse and validate once, then pass a frozen :class:`Spec` around.

Accepted input shapes, as JSON (in a file of any name: Parsl writes JSON into ``spec.yaml``) or, for a file named
``*.yml``/``*.yaml`` that is not JSON, as YAML (read with PyYAML's ``BaseLoader``: every scalar stays a string, so
``python: 3.10`` means "3.10", not the float 3.1):

* the Poncho shape: ``{"conda": {"channels": [...], "packages": [...]}, "pip": [...], "git": {VAR: {...}},
  "http": {VAR: {...}}}``, plus ``"python": "X.Y[.Z]"`` (recorded by the analyzer when there is no conda
  section, as the old ``python_package_analyze`` did);
* upstream poncho's newer conda shape, ``"conda": {"channels": [...], "dependencies": [..., {"pip": [...]}]}``;
* a conda ``environment.yml``-style document: ``{"name", "channels", "dependencies": [..., {"pip": [...]}]}``;
* upstream's short conda form, a list of ``channel::spec`` strings: ``"conda": ["defaults::python=3.9",
  "conda-forge::numpy"]`` (the channels are the ones named, in order);
* the old ``python_package_analyze`` output, ``{"python": "3.7.3", "modules": [...]}`` (modules installed by name).

All of them become the same :class:`Spec`. Every validation error names the field, the bad value and what is
expected, as one :class:`~poncho_wq.errors.SpecError` line. A key given twice (JSON or YAML) is an error, not
silently resolved to the last value; input nested too deeply for the parsers is an error, not a RecursionError. :meth:`Spec.digest` is the content hash that keys
the build cache: independent of key and package order, sensitive to everything that changes the environment
(channel order is kept, since it is conda's channel priority).
"""

import dataclasses
import hashlib
import json
import re
import reprlib
import sys
from typing import Optional, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .credentials import WHERE_INSTEAD, find as find_credentials, mask
from .errors import InputMissing, SpecError
from .fsutil import read_input
from .target import parse_target

# Every pattern below is used with fullmatch(): "$" also matches before a trailing newline, so "X\n" passed a
# "^...$" check and reached set_env, git and the solver.
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONDA_NAME = re.compile(r"[a-z0-9_][a-z0-9_.\-]*")
_CONDA_BUILD = re.compile(r"[A-Za-z0-9_.*+!\-]+")
_PYTHON_VERSION = re.compile(r"3\.\d+(\.\d+)?")
_GIT_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]*")
_URL = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?")
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
    #: the oldest worker it must run on, a manylinux tag (poncho_wq.target), e.g. "manylinux_2_28_x86_64"
    target: Optional[str] = None

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
        if self.target:
            out["target"] = self.target
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
        if self.target:
            parts.append("for " + self.target)
        text = "; ".join(parts) or "(empty)"
        return text if len(text) <= limit else text[: limit - 3] + "..."


def _drop_none(d):
    return {k: v for k, v in d.items() if v is not None}


def _pip_key(req_string):
    req = Requirement(req_string)
    req.name = canonicalize_name(req.name)
    return str(req)


# Values in messages are shown with bounded length and depth: a spec value may be a 1 MB string, a list nested
# hundreds of levels, or (YAML aliases) a structure whose full repr would be exponentially large.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxdict = 8


def _show(value):
    return mask(_REPR.repr(value))  # a URL's secrets never reach a message


def _fail(field, value, expected):
    raise SpecError("spec field {}: {} is not valid; expected {}".format(field, _show(value), expected))


def _expect(cond, field, value, expected):
    if not cond:
        _fail(field, value, expected)


def _string_list(value, field):
    _expect(isinstance(value, list), field, value, "a list of strings")
    for i, item in enumerate(value):
        _expect(isinstance(item, str) and item.strip(), "{}[{}]".format(field, i), item, "a non-empty string")
    return [item.strip() for item in value]


def _no_credentials(url, field, value, conda_channel=False):
    """Refuse a URL carrying a secret (:mod:`poncho_wq.credentials`): the spec is stored in the cache's metadata
    and as poncho/spec.json in every worker's copy of the environment."""
    secret = find_credentials(url, conda_channel)
    if secret:
        _fail(field, value, "a URL without secrets: it has {}, which would be stored in the environment and the "
              "cache; {}".format(secret, WHERE_INSTEAD))


def validate_pip(req_string, field="pip"):
    """Return *req_string* normalized by :class:`packaging.requirements.Requirement`, or raise SpecError."""
    if req_string.startswith("-"):
        _fail(field, req_string, "a PEP 508 requirement (pip options such as -e are not allowed)")
    try:
        req = Requirement(req_string)
    except InvalidRequirement as e:
        _fail(field, req_string, "a PEP 508 requirement such as 'numpy==1.26.4' ({})".format(
            mask(str(e).splitlines()[0])))
    if req.url:
        _no_credentials(req.url, field, req_string)
    return str(req)


def validate_conda(spec_string, field="conda.packages"):
    """Check *spec_string* is a conda MatchSpec (parsed by py-rattler, then its fields checked)."""
    try:
        from rattler import MatchSpec
    except ImportError:  # pragma: no cover - rattler is a dependency; keep a readable error if it is missing
        raise SpecError("validating conda packages needs py-rattler: pip install py-rattler")
    expected = "a conda match spec such as 'conda-forge::numpy=1.26.4=py311h64a7726_0'"
    try:
        ms = MatchSpec(spec_string)
    except Exception as e:
        _fail(field, spec_string, "{} ({})".format(expected, str(e).splitlines()[0]))
    name = ms.name.normalized if ms.name is not None else ""
    _expect(_CONDA_NAME.fullmatch(name or ""), field, spec_string, expected + " (bad package name)")
    if ms.build is not None:
        _expect(_CONDA_BUILD.fullmatch(str(ms.build)), field, spec_string, expected + " (bad build string)")
    if ms.version is not None:
        _expect(not re.search(r"[=<>!~]=*[a-zA-Z]", str(ms.version)) or "*" in str(ms.version),
                field, spec_string, expected + " (bad version)")
    return spec_string


def _validate_url(url, field):
    # No whitespace or control characters anywhere: the URL is logged, recorded in data.json and sent in a request
    # line, where a newline would split it.
    _expect(isinstance(url, str) and _URL.fullmatch(url) and url.isprintable(), field, url,
            "an http:// or https:// URL without spaces or control characters")
    return url


#: Names a data variable may not have, and why. set_env is sourced by the run shim after activation: any of these
#: would change how the shim, the shell, the dynamic loader or Python behave (IFS made the shim skip the command).
_RESERVED = {
    "PATH": "the command search path", "IFS": "the shell's field separator", "HOME": "the home directory",
    "SHELL": "the user's shell", "ENV": "a file every POSIX sh sources", "BASH_ENV": "a file bash sources",
    "CDPATH": "the cd search path", "PS1": "a shell prompt", "PS2": "a shell prompt", "PS4": "the shell's trace prompt",
    "OPTIND": "getopts state", "OPTARG": "getopts state", "PWD": "the working directory",
    "OLDPWD": "the previous directory", "PPID": "read-only in bash", "UID": "read-only in bash",
    "EUID": "read-only in bash", "SHELLOPTS": "read-only in bash", "BASHOPTS": "read-only in bash",
    "LINENO": "set by the shell", "RANDOM": "set by the shell", "SECONDS": "set by the shell",
    "GLOBIGNORE": "bash's glob filter", "MAIL": "the shell's mail check", "MAILPATH": "the shell's mail check",
    "FCEDIT": "the shell's editor", "HISTFILE": "the shell's history", "NLSPATH": "the message catalogs",
    "TMPDIR": "where programs put temporary files", "TMP": "where programs put temporary files",
    "TEMP": "where programs put temporary files", "LANG": "the locale", "TZ": "the time zone",
    "TERM": "the terminal type", "USER": "the user name", "LOGNAME": "the user name",
    "POSIXLY_CORRECT": "switches tools to POSIX mode", "WORKER_TMPDIR": "set by the Work Queue/TaskVine worker",
    "CORES": "set by the Work Queue/TaskVine worker", "MEMORY": "set by the Work Queue/TaskVine worker",
    "DISK": "set by the Work Queue/TaskVine worker", "GPUS": "set by the Work Queue/TaskVine worker",
    "poncho": "the environment's own poncho/ directory",
}
_RESERVED_PREFIXES = (
    ("_", "the run shim's internal variables start with '_'"),
    ("PONCHO", "poncho's own settings"),
    ("LD_", "the dynamic loader's settings"),
    ("DYLD_", "the dynamic loader's settings"),
    ("PYTHON", "Python reads PYTHON* variables as its settings"),
    ("CONDA_", "conda's activation and settings"),
    ("BASH_", "bash's own variables"),
    ("LC_", "the locale"),
)


def _check_variable(var, section, example):
    """A data variable name: a portable shell variable name that nothing else in the environment uses."""
    _expect(isinstance(var, str) and _ENV_VAR.fullmatch(var), section, var,
            "a shell variable name (letters, digits, '_', not starting with a digit) such as " + example)
    why = _RESERVED.get(var)
    if why is None:
        why = next((reason for prefix, reason in _RESERVED_PREFIXES if var.startswith(prefix)), None)
    if why is not None:
        _fail(section, var, "a variable name of your own such as {} ({} is reserved: {})".format(example, var, why))


def _conda_list_form(value, field):
    """Upstream's short form, ``"conda": ["defaults::python=3.9", "conda-forge::numpy", ...]`` (cctools'
    ``poncho/src/test.json``; the spec document says each entry names its channel): the channels are the ones the
    entries name, in order of first appearance (conda's priority order), and entries without a channel are solved
    from those."""
    packages = _string_list(value, field)
    channels = []
    for pkg in packages:
        if "::" in pkg:
            channel = pkg.split("::", 1)[0].strip()
            if channel and channel not in channels:
                channels.append(channel)
    if packages and not channels:
        _fail(field + "[0]", packages[0], "a package with its channel, such as 'conda-forge::{}' (in the list form "
              "of 'conda' the channels are the ones the entries name; or use {{\"channels\": [...], \"packages\": "
              "[...]}})".format(packages[0]))
    return {"channels": channels, "packages": packages}


def _parse_conda(value, field, pip_out):
    list_form = isinstance(value, list)
    if list_form:
        value = _conda_list_form(value, field)
    _expect(isinstance(value, dict), field, value, "an object with 'channels' and 'packages', or a list of "
            "'channel::package' strings")
    for key in value:
        _expect(key in ("channels", "packages", "dependencies"), "{}.{}".format(field, key), key,
                "one of 'channels', 'packages', 'dependencies'")
    channels = _string_list(value.get("channels", []), field + ".channels")
    for i, channel in enumerate(channels):
        _expect(channel.isprintable() and not channel.startswith("-"), "{}.channels[{}]".format(field, i), channel,
                "a channel name, URL or directory (not starting with '-', no control characters)")
        _no_credentials(channel, "{}.channels[{}]".format(field, i), channel, conda_channel=True)
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
        validate_conda(pkg, "{}[{}]".format(field, i) if list_form else "{}.packages[{}]".format(field, i))
    return CondaSection(tuple(channels), tuple(sorted(set(packages))))


def _parse_git(value):
    _expect(isinstance(value, dict), "git", value, "an object mapping variable names to {remote, tag}")
    out = []
    for var, src in value.items():
        f = "git." + str(var)
        _check_variable(var, "git", "DATA_DIR")
        _expect(isinstance(src, dict), f, src, "an object with 'remote' and 'tag'")
        for key in src:
            _expect(key in ("remote", "tag", "ref"), "{}.{}".format(f, key), key, "'remote' or 'tag'")
        remote = src.get("remote")
        _expect(isinstance(remote, str), f + ".remote", remote, "a git remote URL or path")
        # Checked after strip(), on the value git gets: " -uflag" must not pass as a remote and reach git as an
        # option (git is also always called with "--" before the remote).
        remote = remote.strip()
        _expect(remote and not remote.startswith("-") and remote.isprintable(), f + ".remote", remote,
                "a git remote URL or path (not starting with '-', no control characters)")
        _no_credentials(remote, f + ".remote", remote)
        tag = src.get("tag", src.get("ref"))
        if tag is not None:
            _expect(isinstance(tag, str) and _GIT_REF.fullmatch(tag), f + ".tag", tag, "a tag, branch or commit id")
        out.append((var, GitSource(remote, tag)))
    return tuple(sorted(out))


def _parse_http(value):
    _expect(isinstance(value, dict), "http", value, "an object mapping variable names to {type, url}")
    out = []
    for var, src in value.items():
        f = "http." + str(var)
        _check_variable(var, "http", "REFERENCE_DB")
        _expect(isinstance(src, dict), f, src, "an object with 'url', 'type' and optional 'compression'")
        for key in src:
            _expect(key in ("url", "type", "compression"), "{}.{}".format(f, key), key,
                    "'url', 'type' or 'compression'")
        url = _validate_url(src.get("url"), f + ".url")
        _no_credentials(url, f + ".url", url)
        kind = src.get("type", "file")
        _expect(kind in _HTTP_TYPES, f + ".type", kind, "one of " + ", ".join(_HTTP_TYPES))
        comp = src.get("compression")
        _expect(comp is None or comp in _COMPRESSIONS, f + ".compression", comp, "one of " + ", ".join(_COMPRESSIONS))
        out.append((var, HttpSource(url, kind, comp)))
    return tuple(sorted(out))


_TOP_KEYS = ("python", "conda", "pip", "git", "http", "modules", "target")
_ENV_YML_KEYS = ("name", "channels", "dependencies", "prefix")


def parse_spec(data):
    """Validate a decoded JSON document and return its :class:`Spec`."""
    _expect(isinstance(data, dict), "(top level)", data, "a JSON object (a YAML mapping)")
    if "dependencies" in data and "conda" not in data:
        for key in data:
            _expect(key in _ENV_YML_KEYS + ("pip", "git", "http", "target"), key, key,
                    "an environment.yml key (name, channels, dependencies)")
        conda_like = {"channels": data.get("channels", []), "dependencies": data["dependencies"]}
        rest = {k: v for k, v in data.items() if k in ("pip", "git", "http", "target")}
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
    fields = ["pip[{}]".format(i) for i in range(len(pip))]
    if "pip" in data:
        more = _string_list(data["pip"], "pip")
        fields += ["pip[{}]".format(i) for i in range(len(pip), len(pip) + len(more))]
        pip += more
    if "modules" in data:
        # The old python_package_analyze output, {"python": "3.7.3", "modules": ["antigravity", "matplotlib"]}:
        # python_package_create installed the modules by those names, and so do we (as pip requirements).
        more = _string_list(data["modules"], "modules")
        fields += ["modules[{}]".format(i) for i in range(len(more))]
        pip += more
    normalized = {}
    for field, p in zip(fields, pip):
        norm = validate_pip(p, field)
        key = canonicalize_name(Requirement(norm).name)
        if key in normalized and normalized[key] != norm:
            _fail(field, p, "one requirement per distribution (also given: {!r})".format(normalized[key]))
        normalized[key] = norm
    python = data.get("python")
    if python is not None:
        _expect(isinstance(python, str) and _PYTHON_VERSION.fullmatch(python), "python", python,
                "a Python version such as '3.11' or '3.11.7'")
    git = _parse_git(data["git"]) if "git" in data else ()
    http = _parse_http(data["http"]) if "http" in data else ()
    target = data.get("target")
    if target is not None:
        target = parse_target(target, "spec field target").tag
    both = sorted(set(name for name, _ in git) & set(name for name, _ in http))
    if both:
        # One name, two sources: both would be written to <prefix>/NAME.
        _fail("http." + both[0], both[0], "a variable defined once (git.{} defines it too)".format(both[0]))
    return Spec(
        python=python,
        conda=conda,
        pip=tuple(normalized[k] for k in sorted(normalized)),
        git=git,
        http=http,
        target=target,
    )


#: Spec files are small; a bigger input (``/dev/zero``, a wrong file) is refused before it fills the memory.
MAX_SPEC_BYTES = 16 << 20
_YAML_SUFFIXES = (".yml", ".yaml")


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs):
    """``object_pairs_hook``: json would silently keep the last of two equal keys, hiding half of a spec."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _too_deep(source):
    return SpecError("{}: nested too deeply to be a spec (a spec is a few levels of objects and lists)"
                     .format(source))


def _decode_json(text, source):
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise SpecError("{}: duplicate key {} in one object; give each key once".format(source, _show(e.args[0])))
    except RecursionError:  # json's C scanner recurses per nesting level
        raise _too_deep(source)


def _json_error(e, source, hint=""):
    return SpecError("{}: not valid JSON: {} at line {} column {}{}".format(source, e.msg, e.lineno, e.colno, hint))


def _decode_yaml(text, source, json_error):
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency; keep a readable error if it is missing
        raise _json_error(json_error, source, " (reading it as YAML needs PyYAML: pip install PyYAML)")

    class Loader(yaml.BaseLoader):
        """BaseLoader: every scalar stays a string (``python: 3.10`` is "3.10", not 3.1), no tags resolved, no
        Python objects constructed; plus an error on a repeated mapping key (PyYAML keeps the last one)."""

        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        raise SpecError("{}: duplicate key {} at line {} (first given at line {}); give each key "
                                        "once".format(source, _show(key_node.value), key_node.start_mark.line + 1,
                                                      seen[key_node.value] + 1))
                    seen[key_node.value] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = " at line {} column {}".format(mark.line + 1, mark.column + 1) if mark else ""
        raise SpecError("{}: not valid YAML (nor JSON): {}{}".format(source, e.problem or e.context, where))
    except yaml.YAMLError as e:  # e.g. ReaderError (a control character): no mark, a multi-line message
        raise SpecError("{}: not valid YAML (nor JSON): {}".format(source, " ".join(str(e).split())))
    except RecursionError:  # PyYAML's composer and constructor recurse per nesting level
        raise _too_deep(source)


def decode(text, source="<spec>", yaml_ok=False):
    """Decode spec text to plain data: JSON always (whatever the file is called: Parsl writes JSON into
    ``spec.yaml``); when *yaml_ok* and the text is not JSON, YAML. Errors are one-line SpecErrors naming
    *source*, and the line for syntax errors and duplicate keys."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError("{}: {} characters is too large for a spec (at most {} MB); is it the right file?"
                        .format(source, len(text), MAX_SPEC_BYTES >> 20))
    try:
        return _decode_json(text, source)
    except json.JSONDecodeError as e:
        if yaml_ok:
            return _decode_yaml(text, source, e)
        looks_like_json = text.lstrip()[:1] in ("{", "[", "")
        raise _json_error(e, source, "" if looks_like_json else
                          " (spec files are JSON; YAML is read from files named *.yml or *.yaml)")
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise SpecError("{}: not valid JSON: {}".format(source, str(e).splitlines()[0]))


def loads(text, source="<spec>", yaml_ok=False):
    """Parse spec text (JSON; YAML too when *yaml_ok*) into a :class:`Spec`; see :func:`decode`."""
    return parse_spec(decode(text, source, yaml_ok))


def load_spec(path):
    """Read and validate a spec file; ``-`` reads standard input (JSON). A file named ``*.yml``/``*.yaml`` may
    also be YAML. A missing or unreadable file raises :class:`InputMissing` (exit code 2); bad content
    :class:`SpecError` (exit code 1)."""
    if path == "-":
        return loads(sys.stdin.read(MAX_SPEC_BYTES + 1), "<stdin>")
    try:
        raw = read_input(path, MAX_SPEC_BYTES)  # never blocks on a FIFO without a writer
    except FileNotFoundError:
        raise InputMissing("spec file {} does not exist".format(path))
    except OSError as e:  # a directory, a device, no permission, ...
        raise InputMissing("cannot read spec file {}: {}".format(path, e.strerror or e))
    try:
        text = raw.decode("utf-8-sig")  # a BOM (some Windows editors write one) is not an error
    except UnicodeDecodeError as e:
        raise SpecError("{}: not UTF-8 text (byte 0x{:02x} at offset {}); a spec is a JSON or YAML text file"
                        .format(path, raw[e.start], e.start))
    return loads(text, path, yaml_ok=str(path).lower().endswith(_YAML_SUFFIXES))


def as_spec(value):
    """Accept a :class:`Spec`, a dict, or a path to a spec file, and return a :class:`Spec`."""
    if isinstance(value, Spec):
        return value
    if isinstance(value, dict):
        return parse_spec(value)
    return load_spec(str(value))
