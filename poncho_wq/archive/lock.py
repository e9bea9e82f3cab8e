"""``poncho/lock.json``: what an environment holds, where each distribution came from, and why it is there.

Every environment tarball carries it (written by :func:`poncho_wq.engines.build_prefix` after the engine filled the
prefix, so it describes what was really installed, whatever the engine): for each Python distribution in the
prefix its name, version, source -- ``index`` (with the wheel's file name and sha256 when poncho_wq downloaded it
itself), ``installed`` (files copied from a site directory of the manager), ``local`` (a project or editable
install, from its directory), ``conda`` (a conda package), ``url``/``vcs`` (a direct reference) --, its size (the
bytes of the files its RECORD lists), the sha256 of its RECORD (which lists the hash of every file: equal RECORDs,
equal files) and why it is there: the import names it provides to the analyzed scripts (``import yaml``), the
distributions that require it (``required by pandas``), or ``named in the spec``.

Why the import's file and line are not in the tarball (:attr:`poncho_wq.analysis.analyzer.Analysis.lock` has them, and
``poncho_wq inspect job.py`` prints them): the tarball's name is its cache key, and the key would then change with
every edit that moves an import by one line -- a rebuild of the whole base for a code change, which layered
environments exist to avoid -- or the same name would stand for different bytes. The import names are part of the
key (:func:`why_digest`).

The member is the archive's second (after ``poncho/floor``, see :mod:`poncho_wq.archive.pack`), so :func:`read_lock`
reads it without decompressing the rest. ``poncho_wq inspect`` prints it as a table, ``poncho_wq diff`` compares two
(:mod:`poncho_wq.cli.inspect`).
"""

import csv
import email.parser
import glob
import hashlib
import io
import json
import os
import tarfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..analysis.condameta import conda_meta_owners
from ..errors import InputMissing, SpecError

LOCK_MEMBER = "poncho/lock.json"
FORMAT = 1


def why_digest(why: Optional[Mapping[str, Sequence[str]]]) -> Optional[str]:
    """The sha256 of a why mapping (canonical name -> reasons) for cache keys; None for no mapping."""
    if not why:
        return None
    doc = sorted((canonicalize_name(k), sorted(set(v))) for k, v in why.items())
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def _site_dirs(prefix: str) -> List[str]:
    return sorted(glob.glob(os.path.join(glob.escape(prefix), "lib", "python3*", "site-packages")))


def _record(meta_dir: str) -> Tuple[List[str], Optional[str]]:
    path = os.path.join(meta_dir, "RECORD")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return [], None
    rows = csv.reader(io.StringIO(data.decode("utf-8", "replace")))
    return [row[0] for row in rows if row and row[0]], hashlib.sha256(data).hexdigest()


def _metadata(meta_dir: str) -> Tuple[str, str, List[str]]:
    """(name, version, Requires-Dist) from a ``.dist-info``'s METADATA (email headers)."""
    try:
        with open(os.path.join(meta_dir, "METADATA"), encoding="utf-8", errors="replace") as f:
            msg = email.parser.Parser().parse(f, headersonly=True)
    except OSError:
        stem = os.path.basename(meta_dir)[: -len(".dist-info")]
        name, _, version = stem.partition("-")
        return name, version, []
    return msg.get("Name", ""), msg.get("Version", ""), list(msg.get_all("Requires-Dist") or [])


def _derived_source(meta_dir: str, conda: Mapping[str, dict]) -> Dict[str, str]:
    """Where a distribution of a prefix came from when the engine did not say: its conda record, its
    ``direct_url.json`` (a local project, a VCS checkout, a URL), else the package index."""
    rec = conda.get(os.path.realpath(meta_dir))
    if rec is not None:
        return {"kind": "conda", "channel": str(rec.get("channel") or ""), "build": str(rec.get("build") or "")}
    try:
        with open(os.path.join(meta_dir, "direct_url.json"), encoding="utf-8") as f:
            direct = json.load(f)
    except (OSError, ValueError):
        direct = None
    if isinstance(direct, dict) and isinstance(direct.get("url"), str):
        url = direct["url"]
        if "vcs_info" in direct:
            return {"kind": "vcs", "url": url, "commit": str(direct["vcs_info"].get("commit_id", ""))}
        if url.startswith("file://"):
            return {"kind": "local", "path": url[len("file://"):]}
        return {"kind": "url", "url": url}
    return {"kind": "index"}


def _python_markers(prefix: str, site: str) -> Dict[str, str]:
    markers = dict(default_environment())
    version = os.path.basename(os.path.dirname(site))[len("python"):]
    if version and version != markers["python_version"]:
        markers["python_version"] = version
        markers["python_full_version"] = version + ".0"
    return markers


def lock_document(prefix: str, spec, engine: str, sources: Optional[Mapping[str, dict]] = None,
                  why: Optional[Mapping[str, Sequence[str]]] = None) -> Dict[str, Any]:
    """The lock document of the filled *prefix*: every distribution in its site-packages (see the module
    docstring). *sources*: what the engine knows of where each came from (canonical name -> source); *why*:
    canonical name -> reasons from the analysis (without file and line)."""
    sources = {canonicalize_name(k): v for k, v in (sources or {}).items()}
    why = {canonicalize_name(k): list(v) for k, v in (why or {}).items()}
    named = set()
    for text in list(getattr(spec, "pip", ()) or ()):
        try:
            named.add(canonicalize_name(Requirement(text).name))
        except InvalidRequirement:
            pass
    conda = conda_meta_owners(prefix)
    dists: Dict[str, Dict[str, Any]] = {}
    requires: Dict[str, List[str]] = {}
    markers: Dict[str, str] = {}
    for site in _site_dirs(prefix):
        markers = markers or _python_markers(prefix, site)
        for meta_dir in sorted(glob.glob(os.path.join(glob.escape(site), "*.dist-info"))):
            name, version, reqs = _metadata(meta_dir)
            key = canonicalize_name(name or os.path.basename(meta_dir).split("-")[0])
            if key in dists:
                continue
            files, record_sha = _record(meta_dir)
            size = 0
            for rel in files:
                path = os.path.normpath(os.path.join(site, rel))
                if path.startswith(prefix) and os.path.isfile(path) and not os.path.islink(path):
                    size += os.path.getsize(path)
            dists[key] = {"name": name, "version": version,
                          "source": sources.get(key) or _derived_source(meta_dir, conda), "size": size,
                          "record_sha256": record_sha}
            requires[key] = reqs
    required_by: Dict[str, List[str]] = {}
    for key, reqs in requires.items():
        for text in reqs:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate(dict(markers, extra="")):
                continue
            dep = canonicalize_name(req.name)
            if dep in dists and dep != key:
                required_by.setdefault(dep, []).append(dists[key]["name"])
    out = []
    for key in sorted(dists):
        d = dists[key]
        reasons = list(why.get(key, ()))
        reasons += ["required by {}".format(n) for n in sorted(set(required_by.get(key, ())), key=str.lower)]
        if not reasons and key in named:
            reasons = ["named in the spec"]
        d["why"] = list(dict.fromkeys(reasons)) or ["installed with the environment's tools"]
        out.append(d)
    return {"format": FORMAT, "engine": engine, "python": getattr(spec, "python_version", None) or "",
            "distributions": out}


def write_lock(prefix: str, spec, engine: str, sources=None, why=None) -> Dict[str, Any]:
    """Write ``poncho/lock.json`` into *prefix* (see :func:`lock_document`); return the document."""
    doc = lock_document(prefix, spec, engine, sources, why)
    path = os.path.join(prefix, LOCK_MEMBER)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    return doc


def read_lock(tarball: str) -> Dict[str, Any]:
    """The lock document of an environment tarball (read from the start of the stream: it is the second
    member). InputMissing when the file is missing, SpecError when it is no tarball or carries no lock."""
    if not os.path.isfile(tarball):
        raise InputMissing("environment tarball {} does not exist".format(tarball))
    try:
        with tarfile.open(tarball, "r|*") as tar:
            for member in tar:
                if member.name in (LOCK_MEMBER, "./" + LOCK_MEMBER) and member.isfile():
                    f = tar.extractfile(member)
                    data = json.loads(f.read().decode("utf-8")) if f is not None else None
                    if not isinstance(data, dict) or not isinstance(data.get("distributions"), list):
                        raise SpecError("{}: {} is not a lock document".format(tarball, LOCK_MEMBER))
                    return data
    except (tarfile.TarError, OSError, EOFError, ValueError, UnicodeDecodeError) as e:
        raise SpecError("{} cannot be read as an environment tarball: {}".format(tarball, e))
    raise SpecError("{} has no {} (built by upstream's tools, conda-pack, or a poncho_wq older than the lock): "
                    "rebuild it with poncho_wq to see what it holds".format(tarball, LOCK_MEMBER))


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return "{:.0f} {}".format(n, unit) if unit == "B" else "{:.1f} {}".format(n, unit)
        n /= 1000.0
    return str(n)


def source_text(source: Mapping[str, Any]) -> str:
    kind = source.get("kind", "?")
    if kind == "index" and source.get("wheel"):
        return "index {} sha256:{}".format(source["wheel"], str(source.get("sha256", ""))[:12])
    if kind in ("installed", "local"):
        return "{} {}".format(kind, source.get("path", ""))
    if kind == "conda":
        return "conda {}".format(source.get("channel", "")).strip()
    if kind in ("url", "vcs"):
        return "{} {}".format(kind, source.get("url", ""))
    return kind


def table(doc: Mapping[str, Any], sources: bool = False) -> str:
    """The lock as a text table: name, version, size, why (and where from, with *sources*)."""
    rows = [("name", "version", "size", "why") + (("source",) if sources else ())]
    total = 0
    for d in doc.get("distributions", ()):
        total += int(d.get("size") or 0)
        row = (str(d.get("name", "")), str(d.get("version", "")), _size(int(d.get("size") or 0)),
               "; ".join(d.get("why") or ()))
        rows.append(row + ((source_text(d.get("source") or {}),) if sources else ()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells + list(r[len(widths):])).rstrip())
    lines.append("{} distributions, {}".format(len(rows) - 1, _size(total)))
    return "\n".join(lines) + "\n"


def diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> List[Tuple[str, str, str, str]]:
    """What changed from lock *a* to lock *b*: ``(mark, name, before, after)`` sorted by name, mark ``+`` (only in
    b), ``-`` (only in a), ``~`` (another version, or the same version from another source or with other files)."""
    def by_name(doc):
        return {canonicalize_name(str(d.get("name", ""))): d for d in doc.get("distributions", ())}

    left, right = by_name(a), by_name(b)
    out = []
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        if x is None:
            out.append(("+", y["name"], "", "{} ({})".format(y.get("version"), source_text(y.get("source") or {}))))
        elif y is None:
            out.append(("-", x["name"], "{} ({})".format(x.get("version"), source_text(x.get("source") or {})), ""))
        elif x.get("version") != y.get("version"):
            out.append(("~", y["name"], str(x.get("version")), str(y.get("version"))))
        elif (x.get("source") or {}).get("kind") != (y.get("source") or {}).get("kind"):
            out.append(("~", y["name"], "{} ({})".format(x.get("version"), source_text(x.get("source") or {})),
                        "{} ({})".format(y.get("version"), source_text(y.get("source") or {}))))
        elif x.get("record_sha256") and y.get("record_sha256") and x["record_sha256"] != y["record_sha256"]:
            out.append(("~", y["name"], "{} (files {})".format(x.get("version"), x["record_sha256"][:12]),
                        "{} (files {})".format(y.get("version"), y["record_sha256"][:12])))
    return out


def diff_text(changes: Iterable[Tuple[str, str, str, str]]) -> str:
    lines = []
    for mark, name, before, after in changes:
        if mark == "+":
            lines.append("+ {} {}".format(name, after))
        elif mark == "-":
            lines.append("- {} {}".format(name, before))
        else:
            lines.append("~ {} {} -> {}".format(name, before, after))
    return "\n".join(lines) + "\n" if lines else "no differences\n"
