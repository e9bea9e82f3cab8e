"""The current engine inside a conda environment: plan from conda-meta records, relocate to the build prefix.

:mod:`.current` calls in here. Inside a conda environment (``<sys.prefix>/conda-meta`` exists) the pip-level
closure is not enough: the interpreter, its shared libraries and the packages conda installed come from conda
records. There the roots are the spec's conda packages, ``python``, and the conda packages that own a kept pip
distribution (its ``.dist-info`` is in their ``files``); they are closed over the records' ``depends``
(:func:`.closure.conda_closure`, constraints checked with py-rattler's MatchSpec) and each kept record is shipped
as conda installed it:

* every path of its ``paths_data`` copied byte for byte (symlinks as symlinks, empty directories created), except
  that the source prefix is rewritten to the build prefix where the record says the installer wrote it: files with
  a ``prefix_placeholder`` (``file_mode`` text: plain replacement; binary: same-length replacement inside each
  NUL-terminated string, padded with NULs, as conda does; a build prefix longer than the source one does not fit,
  and the binary is then left as it is: conda-pack packs binaries from the package cache anyway, see below) and
  noarch-python entry points (their shebang). The built prefix is thus
  a conda prefix at the build path, which :func:`poncho_wq.archive.pack.pack_prefix` packs like any other: conda-pack
  reads each record's placeholders (from the package cache the record's ``link.source`` names, when it still
  exists, else by finding the build prefix in text files) and ``conda-unpack`` relocates on the worker. Caveat:
  conda-pack relocates *binary* files only through the package cache; with the cache cleaned they keep the build
  prefix (a warning says so);
* its ``conda-meta/<name>-<version>-<build>.json`` record copied unchanged (conda-pack cleans it when packing),
  and a fixed ``conda-meta/history`` listing the shipped packages;
* no interpreter copy: conda's ``python`` package is relocatable by design and ships as a record like the others.
  (With the test suite's stand-in ``python`` package, a venv of the host interpreter, the shipped environment
  still needs that interpreter at its path: fine on the machine that built it, which is all tests need.)

Pip-installed distributions no conda record owns are then copied from their ``RECORD`` exactly as in a venv.
"""

import dataclasses
import os
import re

from ..archive.pack import ensure_history
from ..errors import BuildError
from ..analysis import closure as _closure
from .portable import check_version


# ------------------------------------------------------------------------------------------------------ plan


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file to create in the prefix: ``target`` (relative to the prefix), from ``source``; ``kind`` is
    "copy" (bytes as they are), "script" (shebang rewritten) or "record" (a RECORD written for the copied
    files of the editable distribution ``owner``)."""

    target: str
    source: str
    kind: str = "copy"  # also "dir", "prefix-text", "prefix-binary" (conda files relocated to the build prefix)
    owner: str = ""  # the distribution it belongs to ("conda:<name>" for conda records)


def _conda_plan(spec, env, pip_dists, warnings):
    """The conda part of :func:`.current.plan` (*env*: the :class:`~poncho_wq.analysis.installation.Installation`):
    ((name, version, "conda"), ...), the kept records' entries, and
    the pip distributions (of *pip_dists*) no conda record owns."""
    prefix = env.conda_prefix
    records = env.conda_records
    matcher = _closure.CondaMatcher(records)
    roots, missing = [], []
    for text in spec.conda.packages if spec.conda else ():
        name = matcher.name(text)
        if name is None:
            raise BuildError("conda package {!r} does not name one package; the current engine needs exact "
                              "names".format(text))
        if name not in records:
            missing.append(text)
            continue
        rec = records[name]
        if not matcher.satisfies(text, name):
            raise BuildError("the spec asks for {} but {}={}={} is installed in the conda environment {}: build "
                              "from the channels (--engine conda), or install that version there".format(
                                  text, name, rec["version"], rec["build"], prefix))
        roots.append(name)
    if missing:
        raise BuildError("not installed in the conda environment {}: {}; install them there, or build from the "
                          "channels with --engine conda".format(prefix, ", ".join(missing)))
    if "python" in records:
        roots.append("python")
    unowned = {}
    for key in sorted(pip_dists):
        owner = env.conda_owner(pip_dists[key])
        if owner:
            roots.append(owner["name"])
        else:
            unowned[key] = pip_dists[key]
    closure = _closure.conda_closure(roots, records, matcher)
    for requirer, text in closure.missing:
        warnings.append("conda package {} depends on {}, which is not installed here: not shipped".format(requirer,
                                                                                                      text))
    for requirer, text, have in closure.conflicts:
        warnings.append("conda package {} depends on {} but {} is installed: shipping the installed one".format(
            requirer, text, have))
    if closure.unchecked:
        warnings.append("could not check the installed conda packages against {} (py-rattler unavailable or the "
                        "spec unparsable): matched by name".format(", ".join(closure.unchecked)))
    entries, dists, binary_uncached = [], [], []
    for name in sorted(closure.names):
        rec = records[name]
        dists.append((name, "{}={}".format(rec["version"], rec["build"]), "conda"))
        made = _conda_entries(rec, prefix, warnings)
        entries.extend(dataclasses.replace(e, owner="conda:" + name) for e in made)
        source = (rec.get("link") or {}).get("source") or ""
        if any(e.kind == "prefix-binary" for e in made) and not os.path.isdir(source):
            binary_uncached.append(name)
    if binary_uncached:
        warnings.append("conda package(s) {} have binary files with the prefix in them and are no longer in the "
                        "package cache: conda-pack cannot relocate those files on workers".format(
                            ", ".join(binary_uncached)))
    return dists, entries, unowned


def _conda_entries(rec, prefix, warnings):
    """The entries of one conda-meta record: its paths (relocation kinds from ``paths_data``) and the record."""

    paths = (rec.get("paths_data") or {}).get("paths")
    if paths is None:
        paths = [{"_path": f} for f in rec.get("files", ())]
    entries = []
    for p in paths:
        rel = p["_path"]
        src = os.path.join(prefix, rel)
        if not os.path.lexists(src):
            warnings.append("conda package {}: {} is listed in its record but missing: not shipped".format(
                rec["name"], rel))
            continue
        if os.path.islink(src):
            kind = "copy"  # the copy loop recreates symlinks as symlinks
        elif os.path.isdir(src):
            kind = "dir"
        elif p.get("prefix_placeholder"):
            kind = "prefix-binary" if p.get("file_mode") == "binary" else "prefix-text"
        elif p.get("path_type") == "unix_python_entry_point":
            kind = "prefix-text"  # generated at link time with the prefix's python in its shebang
        else:
            kind = "copy"
        entries.append(Entry(rel, src, kind))
    entries.append(Entry(os.path.join("conda-meta", os.path.basename(rec["_path"])), rec["_path"]))
    return entries


# ------------------------------------------------------------------------------------------------------ build


def replace_prefix_binary(data, old, new, what="a binary file"):
    """*data* with *old* replaced by *new* inside every NUL-terminated string that contains it, each string padded
    with NULs to its old length (conda's binary relocation: offsets in the file must not move)."""
    if old not in data:
        return data
    if len(new) > len(old):
        raise BuildError("{} holds the conda prefix {} in binary form, and the build prefix {} is longer: it "
                          "cannot be rewritten in place; set PONCHO_WQ_CACHE to a shorter directory".format(
                              what, old.decode(errors="replace"), new.decode(errors="replace")))
    def pad(m):
        text = m.group(0)
        out = text[:-1].replace(old, new)
        return out + b"\0" * (len(text) - len(out))

    return re.sub(re.escape(old) + b"[^\0]*\0", pad, data)


def _check_conda_python(spec, p):
    """The spec's Python version against the conda ``python`` record shipped (no interpreter copy here)."""
    version = next((v.split("=")[0] for n, v, k in p.dists if k == "conda" and n == "python"), None)
    if version is None:
        if spec.pip or spec.python_version:
            raise BuildError("the conda environment {} has no conda python package: the current engine ships the "
                              "interpreter from its conda record".format(p.env.conda_prefix))
        return
    parts = [int(x) for x in version.split(".")[:3] if x.isdigit()]
    check_version(spec, {"version": version, "version_info": parts}, p.env.python)


def _write_history(prefix, p):
    """The prefix's ``conda-meta/history`` names the conda packages shipped (the source's names packages that
    were not: it is not copied)."""
    ensure_history(prefix, "current", ["from a conda environment, with:"] + [
        "{}-{}".format(n, v.replace("=", "-")) for n, v, k in p.dists if k == "conda"])
