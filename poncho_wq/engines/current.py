"""The "current" engine: ship what is installed here, pruned to what the spec needs. No index, no network.

Why a third engine: re-solving a spec against an index needs network on the manager (HPC login nodes often
have none), may drift from the versions the user tested, and cannot reproduce local or editable installs.
conda-pack and Parsl's env_pack ship the *whole* environment instead; this engine ships only the closure of the
spec's distributions over their installed ``Requires-Dist`` (:mod:`.closure`), copied file by file from their
``RECORD`` into a relocatable copy of the interpreter (:func:`.interpreter.copy_interpreter`), so the tarball
holds the scripts' needs and nothing else.

The source environment is the one of *python* (default: the running interpreter), as
:mod:`poncho_wq.analysis.installation` models it for the analyzer too: its site directories, distribution index, scripts
directory, marker environment and conda records. Its base interpreter is what gets copied, so the Python version
always matches.

What is copied, and how:

* every file a kept distribution's ``RECORD`` lists, byte for byte, into the prefix's site-packages (the
  ``.dist-info`` included, ``RECORD`` unchanged). ``__pycache__/*.pyc`` entries are *not* copied, even when
  listed: pip compiles them at install time with the install-time mtimes of the sources, so they would differ
  from machine to machine and break "same inputs, same bytes"; the portable engine (uv) and the interpreter copy
  ship no bytecode either, and Python writes it on the worker on first import;
* files a ``RECORD`` lists outside site-packages: console scripts (``../../../bin/x``) go to the prefix's
  ``bin/`` with their shebang rewritten to the prefix's ``bin/python3`` (what uv writes in the portable engine;
  conda-pack then turns it into a relocatable one), including pip's ``#!/bin/sh`` + ``'''exec'`` form for long
  paths; other data files (``share/...``) keep their place relative to the installation base;
* editable installs (``direct_url.json`` with ``dir_info.editable``, setuptools' ``__editable__`` finders or
  ``.pth`` files, legacy ``.egg-link``/egg-info in a source tree) have no files to copy in site-packages: their
  import packages are copied from the source tree (without ``__pycache__``/``.pyc``/dot directories), next to
  their ``.dist-info`` (without ``direct_url.json``, which names a path of this machine) and a ``RECORD`` written
  for the copied files. A warning names them: what ships is the source *as it is now*, not a release.

The cache key (:func:`installed_identity`, added by :func:`poncho_wq.engines.cache_key`) covers every kept
distribution's name, version and ``RECORD`` hash plus the size and mtime of every source file: reinstalling or
editing anything that would be shipped gives a new key (and a new ``env-<key>.tar.gz`` name), anything else
installed in the environment does not.

Inside a conda environment (``<sys.prefix>/conda-meta`` exists) the pip-level closure is not enough: the
interpreter, its shared libraries and the packages conda installed come from conda records, which
:mod:`.current_conda` plans and relocates; pip-installed distributions no conda record owns are then
copied from their ``RECORD`` exactly as in a venv.
"""

import base64
import dataclasses
import hashlib
import json
import logging
import os
from urllib.parse import quote

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import BuildError, PonchoError
from ..fsutil import TOOL_STATE_DIRS, is_within
from ..analysis.installation import Installation, installation
from ..memo import register
from ..progress import as_progress
from ..spec import as_spec, parse_spec
from ..analysis import closure as _closure
from .current_conda import Entry, _check_conda_python, _conda_plan, _write_history, replace_prefix_binary
from .interpreter import copy_interpreter, probe_interpreter
from .portable import check_version

log = logging.getLogger(__name__)

_SKIP_DIRS = TOOL_STATE_DIRS


# ------------------------------------------------------------------------------------------------------ plan


@dataclasses.dataclass(frozen=True)
class Plan:
    env: Installation
    dists: tuple  # ((name, version, "installed"|"editable"|"conda"), ...), conda first, each sorted by name
    entries: tuple  # Entry, sorted by target
    identity: tuple
    warnings: tuple
    #: requirements the installed files cannot serve, for the package index (locked engine only): exact pins
    #: of distributions installed without a RECORD, and names the caller allowed that are not installed
    from_index: tuple = ()
    #: canonical name -> where its files come from ({"kind": "installed", "path": site dir}, "local", "conda")
    sources: tuple = ()


def _record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _install_base(location, env):
    """The installation base of a site directory (``<base>/lib/python3.X/site-packages`` -> ``<base>``)."""
    rel = env.purelib_rel.replace(os.sep, "/")
    if location.endswith("/" + rel):
        return location[: -len(rel) - 1]
    return os.path.dirname(os.path.dirname(os.path.dirname(location)))


def _installed_entries(dist, env, site_rel, warnings):
    location = dist.location
    base = _install_base(location, env)
    entries = []
    name = dist.name
    record = dist.record()
    if record is None:
        raise BuildError("{} {} has no RECORD (installed by a tool that does not list its files): cannot tell what "
                          "to copy; reinstall it with pip or uv".format(name, dist.version))
    for rel in record:
        parts = rel.split("/")
        if "__pycache__" in parts:
            continue  # see the module docstring: no bytecode from the source environment
        src = os.path.normpath(os.path.join(location, rel))
        if is_within(src, location):
            target, kind = os.path.join(site_rel, os.path.relpath(src, location)), "copy"
        elif os.path.basename(os.path.dirname(src)) in ("bin", "Scripts") or is_within(src, env.scripts):
            target, kind = os.path.join("bin", os.path.basename(src)), "script"
        elif is_within(src, base):
            target, kind = os.path.relpath(src, base), "copy"
        else:
            warnings.append("{}: {} is outside its installation ({}): not shipped".format(name, src, base))
            continue
        if not os.path.lexists(src):
            if not rel.endswith(".pyc"):
                warnings.append("{}: {} is listed in its RECORD but missing: not shipped".format(name, rel))
            continue
        entries.append(Entry(target, src, kind))
    return entries


def _editable_entries(dist, env, site_rel, warnings):
    name = dist.name
    sources = dist.editable_sources()
    if not sources:
        raise BuildError("{} is installed in editable mode but none of its packages could be found in its source "
                          "tree: reinstall it (pip install -e) or build from an index".format(name))
    entries = []
    for mod, path in sorted(sources.items()):
        if os.path.isfile(path):
            entries.append(Entry(os.path.join(site_rel, os.path.basename(path)), path))
            continue
        for root, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            for fn in sorted(filenames):
                if fn.endswith((".pyc", ".pyo")):
                    continue
                src = os.path.join(root, fn)
                entries.append(Entry(os.path.join(site_rel, mod, os.path.relpath(src, path)), src))
    # Console scripts and the metadata (minus what names this machine's paths) come from the dist-info.
    for e in _installed_entries(dist, env, site_rel, warnings):
        rel = os.path.relpath(e.target, site_rel)
        top = rel.split(os.sep)[0]
        if e.kind == "script":
            entries.append(e)
        elif top.endswith(".dist-info") and os.path.basename(rel) not in ("RECORD", "direct_url.json"):
            entries.append(e)
    dist_info = sorted({os.path.relpath(e.target, site_rel).split(os.sep)[0] for e in entries
                        if os.path.relpath(e.target, site_rel).split(os.sep)[0].endswith(".dist-info")})
    if dist_info:
        record_target = os.path.join(site_rel, dist_info[0], "RECORD")
        entries.append(Entry(record_target, "", "record"))
    warnings.append("{} {} is installed in editable mode: shipping its current source from {}".format(
        name, dist.version, ", ".join(sorted(set(sources.values())))))
    return entries


def _root_requirements(spec, index, env, warnings, from_index=None):
    """The spec's pip requirements as installed roots; one not installed is an error, or, when *from_index* is a
    list, is appended to it (the locked engine asks the index for it)."""
    roots, missing = [], []
    for text in spec.pip:
        try:
            req = Requirement(text)
        except InvalidRequirement as e:
            raise PonchoError("pip requirement {!r} is not valid: {}".format(text, e))
        if not _closure.evaluate_root_marker(req, env.markers):
            continue
        dist = index.get(canonicalize_name(req.name))
        if dist is None:
            (from_index if from_index is not None else missing).append(text)
            continue
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            raise BuildError("the spec asks for {} but {} {} is installed in the environment of {}: build from an "
                              "index, or install that version there".format(text, req.name, dist.version,
                                                                           env.python))
        roots.append(req)
    if missing:
        raise BuildError("not installed in the environment of {}: {}; install them there, or build from a package "
                          "index instead of the current environment".format(env.python, ", ".join(missing)))
    return roots


#: Plans by (spec digest, the Installation object, which is replaced when its site dirs change).
_PLAN_MEMO: dict = {}
register(_PLAN_MEMO.clear)


def plan(spec, python=None, index_fallback=False):
    """What the current engine ships for *spec* from the environment of *python* (see the module docstring).

    *index_fallback* (the locked engine, :mod:`.locked`): a distribution whose installed files cannot be shipped
    (no RECORD to list them) and a requirement that is not installed are not errors but go to
    :attr:`Plan.from_index`, as exact pins of the installed version for the former."""
    spec = as_spec(spec)
    env = installation(python)  # the environment files are copied from
    if spec.conda and not env.conda_prefix:
        raise BuildError("the spec has a conda section ({}) but {} does not run in a conda environment: the "
                          "current engine copies conda packages from a conda environment only; build from the "
                          "spec with --engine conda".format(" ".join(spec.conda.packages), env.python))
    # The Installation is a new object whenever its site directories or conda-meta changed (see installation()).
    memo_key = (spec.digest(), env, index_fallback)
    if memo_key in _PLAN_MEMO:
        return _PLAN_MEMO[memo_key]
    warnings = []
    index = env.distributions()
    from_index = [] if index_fallback else None
    roots = _root_requirements(spec, index, env, warnings, from_index)
    result = _closure.pip_closure(roots, index, env.markers)
    for requirer, text in result.missing:
        warnings.append("{} requires {}, which is not installed here: not shipped".format(requirer, text))
    for requirer, text, version in result.conflicts:
        warnings.append("{} requires {} but {} is installed: shipping the installed one".format(requirer, text,
                                                                                              version))
    site_rel = env.purelib_rel
    entries, dists, sources = {}, [], {}
    pip_dists = result.dists
    if env.conda_prefix:
        conda_dists, conda_entries, pip_dists = _conda_plan(spec, env, result.dists, warnings)
        dists.extend(conda_dists)
        for e in conda_entries:
            entries[e.target] = e
        for name, version, _kind in conda_dists:
            rec = env.conda_records.get(name, {})
            sources[canonicalize_name(name)] = {"kind": "conda", "channel": rec.get("channel") or "",
                                                "build": rec.get("build") or ""}
    for key in sorted(pip_dists):
        dist = pip_dists[key]
        editable = dist.is_editable()
        if from_index is not None and not editable and dist.record() is None:
            # Installed by a tool that lists no files (distutils, a Debian package's egg-info): the same version
            # from the index, never another one (the installer is given ==version and --no-deps).
            from_index.append("{}=={}".format(dist.name, dist.version))
            continue
        dists.append((dist.name, dist.version, "editable" if editable else "installed"))
        sources[key] = ({"kind": "local", "path": dist.local_source() or dist.location} if editable
                        else {"kind": "installed", "path": dist.location})
        made = (_editable_entries if editable else _installed_entries)(dist, env, site_rel, warnings)
        for e in made:
            e = dataclasses.replace(e, owner=key)
            old = entries.get(e.target)
            if old is not None and old.source != e.source and not _same_bytes(old.source, e.source):
                warnings.append("{} is installed by two distributions with different content; shipping the one "
                                "of {}".format(e.target, dist.name))
            entries[e.target] = e
    ident = []
    for e in sorted(entries.values(), key=lambda e: e.target):
        if e.kind == "record":
            continue
        st = os.lstat(e.source)
        ident.append((e.target, e.kind, st.st_size, st.st_mtime_ns))
    identity = (tuple(dists), tuple(ident))
    if from_index:
        identity += (tuple(sorted(from_index)),)  # names and versions only: never what the network answers
    p = Plan(env, tuple(dists), tuple(sorted(entries.values(), key=lambda e: e.target)), identity,
             tuple(dict.fromkeys(warnings)), tuple(from_index or ()), tuple(sorted(sources.items())))
    _PLAN_MEMO[memo_key] = p
    return p


def _same_bytes(a, b):
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


def installed_identity(spec, python=None, index_fallback=False):
    """The part of the cache key that stands for the installed files a build would copy (a sha256 hex)."""
    p = plan(spec, python, index_fallback)
    return hashlib.sha256(json.dumps(p.identity, separators=(",", ":")).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------------ build


def rewrite_shebang(data, python_path):
    """*data* with its Python shebang pointing at *python_path* (also pip's ``#!/bin/sh`` ``'''exec'`` form)."""
    if not data.startswith(b"#!"):
        return data
    lines = data.split(b"\n")
    if lines[0].strip() == b"#!/bin/sh" and len(lines) > 2 and lines[1].startswith(b"'''exec' ") \
            and lines[2].strip() == b"' '''":
        rest = lines[3:]
    elif b"python" in lines[0]:
        rest = lines[1:]
    else:
        return data
    return b"\n".join([b"#!" + python_path.encode()] + rest)


def build_current_prefix(spec, prefix, python=None, progress=None, index_fallback=False):
    """Populate *prefix* with a relocatable copy of the interpreter and the planned distributions' files; return
    the plan (its :attr:`Plan.from_index` is left to the caller)."""
    progress = as_progress(progress)
    p = plan(spec, python, index_fallback)
    for w in p.warnings:
        log.warning("poncho: warning: %s", w)
    if p.env.conda_prefix:
        _check_conda_python(as_spec(spec), p)
    else:
        info = probe_interpreter(p.env.python)
        check_version(as_spec(spec), info, p.env.python)
        with progress.phase("install", "python {} from {}".format(info["version"], p.env.python)):
            copy_interpreter(info["executable"], prefix)
    prefix = os.path.abspath(prefix)
    python3 = os.path.join(prefix, "bin", "python3")
    old, new = p.env.conda_prefix.encode(), prefix.encode()
    records = []
    with progress.phase("copy", "{} distribution(s) from {}".format(len(p.dists), p.env.prefix)):
        for e in p.entries:
            dest = os.path.join(prefix, e.target)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if e.kind == "record":
                records.append(e)
                continue
            if e.kind == "dir":
                os.makedirs(dest, exist_ok=True)
                continue
            if os.path.islink(e.source):
                if os.path.lexists(dest):
                    os.unlink(dest)
                os.symlink(os.readlink(e.source), dest)
                continue
            with open(e.source, "rb") as f:
                data = f.read()
            if e.kind == "script":
                data = rewrite_shebang(data, python3)
            elif e.kind == "prefix-text":
                data = data.replace(old, new)
            elif e.kind == "prefix-binary":
                try:
                    data = replace_prefix_binary(data, old, new, e.target)
                except PonchoError as err:
                    # What ships is not this copy: conda-pack packs the package's pristine file (placeholder
                    # and all) from the package cache; without the cache nothing relocates binaries (warned).
                    log.info("poncho: %s; left unchanged in the build prefix", err)
            with open(dest, "wb") as f:
                f.write(data)
            os.chmod(dest, 0o755 if os.stat(e.source).st_mode & 0o111 else 0o644)
        for record in records:
            _write_record(prefix, p, record)
        if p.env.conda_prefix:
            _write_history(prefix, p)
    progress.info("shipped %s", ", ".join(
        "{}{}{}{}".format(n, "=" if k == "conda" else "==", v, _KIND_NOTE.get(k, "")) for n, v, k in p.dists)
        or "no distributions")
    return p


_KIND_NOTE = {"editable": " (editable)", "conda": " (conda)"}


def _write_record(prefix, p, record):
    """A RECORD for an editable distribution's copied files (the installed one lists the ``__editable__`` hooks)."""
    site = os.path.dirname(os.path.dirname(record.target))
    lines = []
    for e in p.entries:
        if e.owner != record.owner or e.kind == "record":
            continue
        with open(os.path.join(prefix, e.target), "rb") as f:
            data = f.read()
        lines.append("{},{},{}".format(os.path.relpath(e.target, site), _record_hash(data), len(data)))
    lines.append("{},,".format(os.path.relpath(record.target, site)))
    dest = os.path.join(prefix, record.target)
    with open(dest, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(sorted(lines[:-1]) + lines[-1:]) + "\n")
    os.chmod(dest, 0o644)


def spec_with_local(spec, analysis=None, keep_unresolved=False):
    """*spec* with the analysis' local (editable / local-directory) distributions named as ``name @ file://dir``
    and its unresolved (not installed) imports left out unless *keep_unresolved* (the locked engine asks the index
    for those the caller allowed): the requirements the current engine ships."""
    spec = as_spec(spec)
    if analysis is None:
        return spec
    data = spec.to_dict()
    unresolved = set() if keep_unresolved else {canonicalize_name(u.strip("_."))
                                                for u in getattr(analysis, "unresolved", ())}
    pip = [r for r in data.get("pip", []) if canonicalize_name(Requirement(r).name) not in unresolved]
    named = {canonicalize_name(Requirement(r).name) for r in pip}
    for dist, source in sorted((getattr(analysis, "local_distributions", None) or {}).items()):
        if canonicalize_name(dist) not in named:
            pip.append("{} @ file://{}".format(dist, quote(os.path.abspath(source))))
    if pip:
        data["pip"] = pip
    else:
        data.pop("pip", None)
    return parse_spec(data)
