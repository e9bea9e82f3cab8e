"""The floor of an environment (issue 19, first part): machine, libc and the highest GLIBC symbol version its
binaries need, computed at build time from the files themselves and kept in the tarball and the cache."""

import json
import os
import re
import subprocess
import sys
import tarfile

from helpers.cli import run_cli
from poncho_wq.archive.floor import elf_needs, prefix_floor


def _objdump_max_glibc(path):
    """What binutils says: the highest GLIBC_x.y among the file's version references."""
    out = subprocess.run(["objdump", "-p", path], capture_output=True, text=True, check=True).stdout
    refs = out.split("Version References:", 1)[1] if "Version References:" in out else ""
    versions = re.findall(r"GLIBC_(\d+(?:\.\d+)+)", refs)
    return max(versions, key=lambda v: tuple(map(int, v.split(".")))) if versions else None


def test_elf_needs_agrees_with_objdump_on_real_binaries():
    libdir = os.path.join(sys.base_prefix, "lib")
    candidates = [os.path.realpath(sys.executable), "/usr/bin/python3", "/bin/busybox", "/usr/bin/tar"]
    candidates += [os.path.join(libdir, n) for n in os.listdir(libdir) if n.startswith("libpython")]
    dynload = os.path.join(libdir, "python{}.{}".format(*sys.version_info[:2]), "lib-dynload")
    candidates += sorted(os.path.join(dynload, n) for n in os.listdir(dynload))[:20]
    checked = 0
    for path in candidates:
        if not os.path.isfile(path):
            continue
        needs = elf_needs(path)
        assert needs is not None and needs["machine"] == os.uname().machine, path
        assert needs["glibc"] == _objdump_max_glibc(path), path
        checked += 1
    assert checked >= 10


def test_non_elf_and_truncated_files_are_skipped(tmp_path):
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    with open(sys.executable, "rb") as f:
        (tmp_path / "truncated.so").write_bytes(f.read(100))
    assert elf_needs(str(tmp_path / "script")) is None
    assert elf_needs(str(tmp_path / "truncated.so")) in (None, {"machine": os.uname().machine, "interp": None,
                                                                "glibc": None})
    assert prefix_floor(str(tmp_path))["glibc"] is None


def test_another_architecture_is_named(tmp_path):
    """An ELF header of another machine (aarch64 = 183) is reported as such: what a worker compares with uname -m."""
    with open(os.path.realpath(sys.executable), "rb") as f:
        data = bytearray(f.read())
    data[18:20] = (183).to_bytes(2, "little")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_bytes(bytes(data))
    os.chmod(tmp_path / "bin" / "python3", 0o755)
    assert prefix_floor(str(tmp_path))["machine"] == "aarch64"


def test_a_build_records_its_floor_in_the_tarball_and_the_cache(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"python": "{}.{}".format(*sys.version_info[:2])}))
    out = tmp_path / "env.tar.gz"
    r = run_cli("poncho_package_create", "--cache-dir", tmp_path / "cache", spec, out)
    assert r.returncode == 0, r.stderr
    with tarfile.open(str(out)) as tar:
        floor = json.loads(tar.extractfile("poncho/floor.json").read())
    libpython = [m for m in os.listdir(os.path.join(sys.base_prefix, "lib")) if m.startswith("libpython")
                 and ".so" in m]
    expected = max((_objdump_max_glibc(p) for p in [os.path.realpath(sys.executable)] + [
        os.path.join(sys.base_prefix, "lib", m) for m in libpython]), key=lambda v: tuple(map(int, v.split("."))))
    assert floor["machine"] == os.uname().machine and floor["libc"] == "glibc"
    assert tuple(map(int, floor["glibc"].split("."))) >= tuple(map(int, expected.split(".")))
    meta = [json.loads((tmp_path / "cache" / "envs" / n).read_text())
            for n in os.listdir(tmp_path / "cache" / "envs") if n.endswith(".json")]
    assert meta[0]["floor"] == floor
    listing = run_cli("poncho_wq", "cache", "--cache-dir", tmp_path / "cache", "list")
    assert "{} glibc>={}".format(floor["machine"], floor["glibc"]) in listing.stdout, listing.stdout
    from poncho_wq import create

    hit = create(str(spec), cache_dir=str(tmp_path / "cache"))
    assert hit.cache_hit and hit.floor == floor


def test_a_prefix_with_an_interpreter_base_has_the_floor_of_its_files(tmp_path):
    """Issue 27: the files still the interpreter base's own (hard links) are not read again for each build; what they
    need comes from the base's elf-needs.json, read once. The floor is the one a full scan gives, also when a
    base file was replaced in the prefix (another inode: read as any other file)."""
    from poncho_wq.archive.basemember import InterpreterBase

    tree, prefix = tmp_path / "tree", tmp_path / "prefix"
    dynload = os.path.join(sys.base_prefix, "lib", "python{}.{}".format(*sys.version_info[:2]), "lib-dynload")
    (tree / "bin").mkdir(parents=True)
    (tree / "lib").mkdir()
    with open(os.path.realpath(sys.executable), "rb") as f:
        python = f.read()
    (tree / "bin" / "python3").write_bytes(python)
    os.chmod(tree / "bin" / "python3", 0o755)
    for name in sorted(os.listdir(dynload))[:8]:
        with open(os.path.join(dynload, name), "rb") as f:
            (tree / "lib" / name).write_bytes(f.read())
    for directory, _dirs, files in os.walk(str(tree)):
        os.makedirs(os.path.join(str(prefix), os.path.relpath(directory, str(tree))), exist_ok=True)
        for name in files:
            src = os.path.join(directory, name)
            os.link(src, os.path.join(str(prefix), os.path.relpath(src, str(tree))))
    base = InterpreterBase(tree=str(tree), identity="floor-test", store=str(tmp_path / "store"))
    full = prefix_floor(str(prefix))
    assert full["glibc"] and full["machine"] == os.uname().machine
    assert prefix_floor(str(prefix), base) == full
    with open(tmp_path / "store" / "elf-needs.json") as f:
        kept = json.load(f)
    assert kept["identity"] == "floor-test" and "bin/python3" in kept["needs"]
    # a base file replaced in the prefix by another machine's binary: read, not taken from the base's needs
    os.unlink(prefix / "bin" / "python3")
    data = bytearray(python)
    data[18:20] = (183).to_bytes(2, "little")
    (prefix / "bin" / "python3").write_bytes(bytes(data))
    os.chmod(prefix / "bin" / "python3", 0o755)
    mixed = prefix_floor(str(prefix))
    assert "aarch64" in mixed["machine"]
    assert prefix_floor(str(prefix), InterpreterBase(tree=str(tree), identity="floor-test",
                                                     store=str(tmp_path / "store"))) == mixed


def test_the_floor_of_base_files_is_read_from_the_prefix_when_the_base_cannot_tell(tmp_path):
    """The listing of the base comes from the build's fingerprint check; when the base's tree is gone by the time
    the floor is taken (another build found it damaged and removed it: renamed away, then deleted) its own files
    are still in the prefix (hard links) and give the floor; nothing is written where the base was (a base_dir
    made again would stop the other build from renaming its new base into place)."""
    from poncho_wq.archive.basemember import InterpreterBase, walk_base

    base_dir = tmp_path / "base"
    tree, prefix = base_dir / "tree", tmp_path / "prefix"
    (tree / "bin").mkdir(parents=True)
    (prefix / "bin").mkdir(parents=True)
    with open(os.path.realpath(sys.executable), "rb") as f:
        (tree / "bin" / "python3").write_bytes(f.read())
    os.chmod(tree / "bin" / "python3", 0o755)
    os.link(tree / "bin" / "python3", prefix / "bin" / "python3")
    base = InterpreterBase(tree=str(tree), identity="gone-test", store=str(base_dir / "packed"),
                           entries=walk_base(str(tree))[0])
    full = prefix_floor(str(prefix))
    assert full["glibc"]
    os.rename(base_dir, tmp_path / "base.trash-1")
    assert prefix_floor(str(prefix), base) == full
    assert not os.path.exists(base_dir)
