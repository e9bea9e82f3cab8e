"""A conda prefix's ``conda-meta`` records, read once: which conda package installed what.

Why a module of its own: the analysis' installation model (:mod:`.installation`, which asks who owns a
``.dist-info``), the lock every build writes (:mod:`poncho_wq.archive.lock`) and a build's target check
(:mod:`poncho_wq.engines`) all read these records through one memo, so an unreadable record is warned about once.
A build needs only this reader, not the installation model (``importlib.metadata``, ``email``: about 15 ms of a
command line build's imports, before anything is built).
"""

import glob
import json
import logging
import os
from typing import Dict, Tuple

from ..identity import stat_key
from ..memo import register

log = logging.getLogger(__name__)


#: prefix -> (the stat keys of its conda-meta/*.json, its records, its metadata-directory owner map): the records
#: are read again only when one of them is added, removed or rewritten, so an unreadable one is warned about once.
_conda_meta: Dict[str, Tuple[tuple, Dict[str, dict], Dict[str, dict]]] = {}
clear_cache = register(_conda_meta.clear)


def conda_records(prefix: str) -> Dict[str, dict]:
    """The readable ``conda-meta/*.json`` records of the conda prefix *prefix*, by package name (``_path``: the
    record's file); an unreadable one is skipped with a warning (once while it stays as it is)."""
    return dict(_read_conda_meta(prefix)[0])


def conda_meta_owners(prefix: str) -> Dict[str, dict]:
    """Real path of each ``.dist-info`` / ``.egg-info`` directory a conda record of *prefix* lists -> that record
    (the first one, in record order): which conda package installed a Python distribution. One map for the
    analysis (:meth:`Installation.conda_owner`) and the lock (:mod:`poncho_wq.archive.lock`)."""
    return dict(_read_conda_meta(prefix)[1])


def _read_conda_meta(prefix: str) -> Tuple[Dict[str, dict], Dict[str, dict]]:
    paths = sorted(glob.glob(os.path.join(glob.escape(prefix), "conda-meta", "*.json")))
    stamp = tuple((p, stat_key(p)) for p in paths)
    hit = _conda_meta.get(prefix)
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    records: Dict[str, dict] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                rec = json.load(f)
            rec["name"], rec["version"], rec["build"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable conda record %s: %s", path, e)
            continue
        rec["_path"] = path
        records[rec["name"]] = rec
    owners: Dict[str, dict] = {}
    for rec in records.values():
        for rel in rec.get("files", ()):
            parts = rel.split("/")
            for i, part in enumerate(parts):
                if part.endswith((".dist-info", ".egg-info")):
                    owners.setdefault(os.path.realpath(os.path.join(prefix, *parts[: i + 1])), rec)
                    break
    _conda_meta[prefix] = (stamp, records, owners)
    return records, owners
