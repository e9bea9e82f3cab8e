"""Tiny, real conda packages and a local channel for tests, with nothing but tarfile and py-rattler.

Conda channels are unreachable from the test machines, and ``conda-build``/``conda-index`` need a conda
installation, so tests make their own packages. A ``.tar.bz2`` conda package is just a tarball with the payload
files at their install paths plus an ``info/`` directory; the installers (py-rattler, conda, mamba) read:

* ``info/index.json``: name, version, build, build_number, depends, subdir, noarch (the repodata record);
* ``info/paths.json``: one entry per payload file (path type, sha256, size, and for files to relocate the
  ``prefix_placeholder`` and ``file_mode``);
* ``info/files``: the plain list of payload paths (older installers; conda-pack cross-checks it);
* ``info/has_prefix``: the pre-paths.json form of the placeholder list (``<placeholder> <mode> <path>``);
* ``info/link.json``: only for ``noarch: python`` packages (entry points).

Payload files may contain :data:`PLACEHOLDER`, the build prefix conda-build records; listing them in
*prefix_placeholder_files* makes the installer replace it with the real prefix (text mode), which is what
conda-pack's ``conda-unpack`` later redoes for the final location: use it to test relocation.

**No conda ``python`` package exists here.** Generic packages (``noarch: generic`` in ``noarch/``, or any package
in ``linux-64/``) install fine without one, including files under ``lib/python3.11/site-packages/<mod>/``; only
``noarch: python`` packages (``noarch="python"``) need a ``python`` record in the same solve, because the
installer derives site-packages and the entry-point shebangs from it. For those (and for a prefix that pip can
install into) :func:`make_python_standin` makes a ``python`` package that is a venv of the test interpreter:
a real interpreter with the prefix as ``sys.prefix``, but NOT relocatable to another machine (absolute symlink
and ``pyvenv.cfg`` home); packed and unpacked on the same machine it works.

Typical use::

    url = make_channel(tmp_path / "channel", [
        dict(name="libgreet", version="1.0", files={"share/greet.txt": "hello\\n"}),
        dict(name="hello", version="2.0", depends=["libgreet >=1"],
             files={"bin/hello": "#!/bin/sh\\necho " + PLACEHOLDER + "\\n"},
             prefix_placeholder_files=["bin/hello"]),
    ])
    install_prefix(url, ["hello"], str(tmp_path / "prefix"))
"""

import asyncio
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

#: The placeholder prefix conda-build writes into text files; installers replace it with the target prefix.
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
#: Fixed member mtime and record timestamp (milliseconds), so packages are reproducible.
MTIME = 1700000000


def _bytes(content):
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


def make_package(channel_dir, name, version, build="0", depends=(), files=None, subdir="noarch",
                 prefix_placeholder_files=(), executables=(), symlinks=None, noarch=None, entry_points=(),
                 build_number=0, constrains=()):
    """Write ``<channel_dir>/<subdir>/<name>-<version>-<build>.tar.bz2`` and return its path.

    *files*: ``{relpath: str|bytes}`` payload (relative to the prefix; for ``noarch="python"`` packages use
    ``site-packages/<mod>/...`` paths as conda-build does). Files under ``bin/`` and those in *executables* get
    mode 0755. *prefix_placeholder_files*: text files containing :data:`PLACEHOLDER` to relocate.
    *symlinks*: ``{relpath: target}`` (installed as symlinks, ``path_type: softlink``).
    *noarch*: None (defaults to ``"generic"`` in the ``noarch`` subdir), ``"generic"`` or ``"python"``.
    *entry_points*: ``"name = module:func"`` strings (``noarch: python`` only; written to ``info/link.json``).
    The channel must be (re)indexed with :func:`index_channel` afterwards.
    """
    files = {k: _bytes(v) for k, v in (files or {}).items()}
    symlinks = dict(symlinks or {})
    placeholders = set(prefix_placeholder_files)
    missing = placeholders - set(files)
    if missing:
        raise ValueError("prefix_placeholder_files not in files: {}".format(sorted(missing)))
    if noarch is None and subdir == "noarch":
        noarch = "generic"
    index = {"name": name, "version": str(version), "build": build, "build_number": build_number,
             "depends": list(depends), "constrains": list(constrains), "license": "BSD-3-Clause",
             "subdir": subdir, "timestamp": MTIME * 1000}
    if noarch:
        index["noarch"] = noarch
    if subdir != "noarch":
        index["platform"], _, arch = subdir.partition("-")
        index["arch"] = {"64": "x86_64", "aarch64": "aarch64", "ppc64le": "ppc64le"}.get(arch, arch)

    paths = []
    for rel in sorted(set(files) | set(symlinks)):
        if rel in symlinks:
            paths.append({"_path": rel, "path_type": "softlink",
                          "sha256": hashlib.sha256(symlinks[rel].encode()).hexdigest(), "size_in_bytes": 0})
            continue
        entry = {"_path": rel, "path_type": "hardlink", "sha256": hashlib.sha256(files[rel]).hexdigest(),
                 "size_in_bytes": len(files[rel])}
        if rel in placeholders:
            entry.update(prefix_placeholder=PLACEHOLDER, file_mode="text")
        paths.append(entry)
    info = {
        "info/index.json": json.dumps(index, indent=2, sort_keys=True),
        "info/paths.json": json.dumps({"paths": paths, "paths_version": 1}, indent=2),
        "info/files": "".join(p["_path"] + "\n" for p in paths),
    }
    if placeholders:
        info["info/has_prefix"] = "".join("{} text {}\n".format(PLACEHOLDER, p) for p in sorted(placeholders))
    if noarch == "python":
        info["info/link.json"] = json.dumps({"noarch": {"type": "python", "entry_points": list(entry_points)},
                                             "package_metadata_version": 1})
    elif entry_points:
        raise ValueError("entry_points need noarch='python'")

    out_dir = os.path.join(str(channel_dir), subdir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "{}-{}-{}.tar.bz2".format(name, version, build))
    with tarfile.open(path, "w:bz2") as tar:
        for arc in sorted(info):
            _add(tar, arc, _bytes(info[arc]), 0o644)
        for rel in sorted(files):
            mode = 0o755 if rel.startswith("bin/") or rel in executables else 0o644
            _add(tar, rel, files[rel], mode)
        for rel in sorted(symlinks):
            member = tarfile.TarInfo(rel)
            member.type, member.linkname, member.mtime, member.mode = tarfile.SYMTYPE, symlinks[rel], MTIME, 0o777
            tar.addfile(member)
    return path


def make_python_standin(channel_dir, version=None, build="h0_standin"):
    """A ``linux-64`` ``python`` package that turns the prefix into a venv of the running test interpreter.

    ``bin/python3.X`` is a symlink to :data:`sys.executable` and ``pyvenv.cfg`` points at its directory, so
    ``<prefix>/bin/python`` has ``sys.prefix == <prefix>`` and site-packages in ``<prefix>/lib/python3.X`` (where
    noarch-python packages and pip put their files). *version* defaults to this interpreter's version, which is
    what the installer uses for site-packages and entry-point shebangs.
    """
    version = version or platform.python_version()
    short = "python{}.{}".format(*sys.version_info[:2])
    cfg = "home = {}\ninclude-system-site-packages = false\nversion = {}\n".format(
        os.path.dirname(sys.executable), version)
    return make_package(channel_dir, "python", version, build=build, subdir="linux-64",
                        files={"pyvenv.cfg": cfg, "lib/{}/site-packages/README.txt".format(short): "stand-in\n"},
                        symlinks={"bin/" + short: sys.executable, "bin/python3": short, "bin/python": short})


def _add(tar, arcname, data, mode):
    member = tarfile.TarInfo(arcname)
    member.size, member.mtime, member.mode = len(data), MTIME, mode
    tar.addfile(member, io.BytesIO(data))


def index_channel(channel_dir):
    """Write ``repodata.json`` for every subdir with py-rattler's indexer (``noarch/`` must exist, even empty)."""
    from rattler.index import index_fs

    os.makedirs(os.path.join(str(channel_dir), "noarch"), exist_ok=True)
    asyncio.run(index_fs(str(channel_dir), write_zst=False, write_shards=False, force=True))


def channel_url(channel_dir):
    return "file://" + os.path.abspath(str(channel_dir))


def make_channel(channel_dir, packages):
    """Make every package (a dict of :func:`make_package` keyword arguments), index, and return the file:// URL."""
    for kwargs in packages:
        make_package(channel_dir, **kwargs)
    index_channel(channel_dir)
    return channel_url(channel_dir)


def install_prefix(channel, specs, prefix, cache_dir=None):
    """Solve *specs* against the local *channel* (URL or directory) offline and install them into *prefix*.

    Returns the solved records. *cache_dir* is rattler's package cache (default: ``<prefix>.pkgs`` next to the
    prefix, never the user's cache).
    """
    from rattler import MatchSpec, install, solve

    from poncho_wq.engines.conda import current_subdir

    channel = channel if "://" in str(channel) else channel_url(channel)
    records = asyncio.run(solve([channel], list(specs), platforms=[current_subdir(), "noarch"]))
    # install(requested_specs=[MatchSpec]) rejects the Python wrapper type in py-rattler 0.28; the inner object works.
    asyncio.run(install(records, str(prefix), cache_dir=str(cache_dir or str(prefix) + ".pkgs"),
                        show_progress=False, requested_specs=[MatchSpec(s)._match_spec for s in specs]))
    return records
