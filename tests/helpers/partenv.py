"""Small environments with real distributions (dist-info RECORDs) packed by poncho_wq's packer, for the parts tests.

Each is built under ``<parent>/tmp/build-<key>/prefix<pad>``, the shape of a cache build's scratch prefix (the
prefix recorded in conda-unpack, which parts replace by a placeholder), with ``lib/python3.11/`` (interpreter
files), ``bin/python`` running the machine's python3, and one distribution per ``dists`` entry: its package
(``__init__.py`` naming its version, ``where.txt`` holding the build prefix, ``blob.bin`` of its size in
deterministic bytes), its ``.dist-info`` with METADATA and RECORD, and a console script in ``bin/``.
"""

import base64
import hashlib
import json
import os
import random

from helpers.shimutil import _PAD


def _blob(name, version, size):
    rnd = random.Random("{}-{}".format(name, version))
    return bytes(rnd.getrandbits(8) for _ in range(min(size, 4096))) * (size // 4096 + 1)


def _record_row(rel, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "{},sha256={},{}".format(rel, digest, len(data))


def make_env(parent, key, dists, *, extra_file=None, run_in_env=False, conda=None, floor=None):
    """Build and pack an environment; *dists* = ``{name: (version, bytes)}``; returns the tarball path
    ``<parent>/env-<key[:32]>.tar.gz``. *extra_file*: ``(relative path, text)`` of one more unowned file.
    *run_in_env*: poncho_wq's ``bin/run_in_env`` too, as the builders add it (TaskVine runs tasks through it).
    *conda*: ``{package: {relative path: bytes or None}}``: conda packages, each a ``conda-meta/<package>-1.0-0.json``
    record (not in a package cache: conda-pack treats them as it treats any uncached record) listing those files,
    written with that many deterministic bytes (``None``: a file written already, listed only).
    *floor*: the text of ``poncho/floor`` in place of the one computed (a floor this machine does not meet)."""
    from poncho_wq.archive.floor import FLOOR_MEMBER, write_floor
    from poncho_wq.archive.pack import ensure_history, pack_prefix

    key = key.ljust(32, "0")[:32]
    prefix = os.path.join(str(parent), "tmp", "build-" + key, "prefix" + _PAD)
    site = os.path.join(prefix, "lib", "python3.11", "site-packages")

    def write(rel, data, mode=0o644):
        path = os.path.join(prefix, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(path, mode)

    write("bin/python", '#!/bin/sh\nexec /usr/bin/python3 "$@"\n', 0o755)
    write("lib/python3.11/os_stub.py", "# interpreter file\n")
    write("lib/python3.11/encodings/stub.py", "# interpreter file\n")
    write("lib/libpython3.11.so.1.0", b"\0ELF-ish\0" * 100)
    for name, (version, size) in sorted(dists.items()):
        files = {
            "{}/__init__.py".format(name): "VERSION = {!r}\n".format(version).encode(),
            "{}/where.txt".format(name): (prefix + "\n").encode(),
            "{}/blob.bin".format(name): _blob(name, version, size),
        }
        info = "{}-{}.dist-info".format(name, version)
        files[info + "/METADATA"] = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version).encode()
        files[info + "/INSTALLER"] = b"pip\n"
        script = "#!{}/bin/python\nimport {}\n".format(prefix, name).encode()
        rows = [_record_row(rel, data) for rel, data in sorted(files.items())]
        rows.append(_record_row("../../../bin/{}-cli".format(name), script))
        rows.append(info + "/RECORD,,")
        for rel, data in files.items():
            write(os.path.join("lib/python3.11/site-packages", rel), data)
        write("bin/{}-cli".format(name), script, 0o755)
        write(os.path.join("lib/python3.11/site-packages", info, "RECORD"), "\n".join(rows) + "\n")
    if extra_file:
        write(extra_file[0], extra_file[1])
    if run_in_env:
        from poncho_wq.shim import run_in_env_path

        with open(run_in_env_path(), "rb") as f:
            write("bin/run_in_env", f.read(), 0o755)
    for package, files in sorted((conda or {}).items()):
        for rel, size in sorted(files.items()):
            if size is not None:
                write(rel, _blob(package + rel, "1.0", size)[:size])
        record = {"name": package, "version": "1.0", "build": "0", "build_number": 0, "channel": "test",
                  "url": "https://example.invalid/{}-1.0-0.conda".format(package),
                  "files": sorted(files), "link": {"source": "", "type": 1}}
        write("conda-meta/{}-1.0-0.json".format(package), json.dumps(record, indent=1, sort_keys=True))
    ensure_history(prefix, "test")
    write_floor(prefix)
    if floor is not None:
        write(FLOOR_MEMBER, floor)
    out = os.path.join(str(parent), "env-{}.tar.gz".format(key))
    pack_prefix(prefix, out, n_threads=1)
    assert os.path.isdir(site)
    return out
