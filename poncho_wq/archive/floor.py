"""The floor of an environment: the CPU architecture and the oldest C library its binaries can run on.

Why: managers run on new laptops and login nodes, workers on older cluster nodes (RHEL 8: glibc 2.28) or on other
architectures. An environment whose interpreter needs ``GLIBC_2.35`` unpacks completely on a glibc 2.31 worker and
then dies in the dynamic loader with a message that names neither the cause nor the fix. The floor is computed
here, at build time, from the files themselves (not from the build machine): the ELF machine of every executable
and shared object, the libc family from the program interpreter (``ld-linux`` vs ``ld-musl``), and the highest
``GLIBC_x.y`` symbol version any of them requires (the ``.gnu.version_r`` section: what ``objdump -p`` lists
under "Version References"). It is stored in the cache metadata and in the tarball twice: ``poncho/floor.json``
for programs, and ``poncho/floor`` (:data:`FLOOR_MEMBER`, ``key=value`` lines) for the run shim, which has only
sh, tar and gzip. The packer writes ``poncho/floor`` as the archive's first member, so the shim reads it from the
first 64 KiB of the decompressed stream and refuses a worker of another architecture or with an older C library
*before* unpacking (see ``poncho_floor_ok`` in ``poncho_wq/data/poncho_package_run``), with one line naming what
the environment needs, what the worker has and how to build for it.

The ELF reading is a few ``struct`` calls on the section headers: no tool is needed and a file that is not ELF,
or is truncated, is skipped.
"""

import json
import mmap
import os
import struct
from typing import TYPE_CHECKING, Dict, Iterator, Optional, Tuple

if TYPE_CHECKING:
    from .basemember import InterpreterBase

#: e_machine values and the names ``uname -m`` prints for them.
MACHINES = {3: "i686", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64le", 22: "s390x"}
_SHT_GNU_VERNEED = 0x6FFFFFFE
_PT_INTERP = 3


def _version_key(version: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in version.split(".") if x.isdigit())


def elf_needs(path: str) -> Optional[Dict[str, object]]:
    """``{"machine", "interp", "glibc"}`` of the ELF file *path* (``glibc``: the highest ``GLIBC_x.y`` it
    requires, or None), or None when *path* is not a readable ELF file."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF" or os.fstat(f.fileno()).st_size < 64:
                return None
            # mmap: only the headers and the version sections are read, not a 100 MB shared library.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(data)
    except (OSError, ValueError, struct.error, IndexError):
        return None  # unreadable, truncated or odd: not ours to judge


def _parse(data: "mmap.mmap") -> Dict[str, object]:
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        (e_machine,) = struct.unpack_from(end + "H", data, 18)
        e_phoff, e_shoff = struct.unpack_from(end + "QQ", data, 32)
        e_phentsize, e_phnum, e_shentsize, e_shnum = struct.unpack_from(end + "HHHH", data, 54)
    else:
        (e_machine,) = struct.unpack_from(end + "H", data, 18)
        e_phoff, e_shoff = struct.unpack_from(end + "II", data, 28)
        e_phentsize, e_phnum, e_shentsize, e_shnum = struct.unpack_from(end + "HHHH", data, 42)
    interp = None
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        if is64:
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(end + "IIQQQQ", data, off)
        else:
            p_type, p_offset, _va, _pa, p_filesz = struct.unpack_from(end + "IIIII", data, off)
        if p_type == _PT_INTERP:
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode("ascii", "replace")
    sections = []
    for i in range(e_shnum):
        off = e_shoff + i * e_shentsize
        if is64:
            _name, sh_type, _flags, _addr, sh_offset, sh_size, sh_link = struct.unpack_from(end + "IIQQQQI", data, off)
        else:
            _name, sh_type, _flags, _addr, sh_offset, sh_size, sh_link = struct.unpack_from(end + "IIIIIII", data, off)
        sections.append((sh_type, sh_offset, sh_size, sh_link))
    best = None
    for sh_type, sh_offset, _size, sh_link in sections:
        if sh_type != _SHT_GNU_VERNEED:
            continue
        strtab = sections[sh_link][1]
        vn = sh_offset
        while True:
            _ver, cnt, _file, aux, nxt = struct.unpack_from(end + "HHIII", data, vn)
            va = vn + aux
            for _ in range(cnt):
                _hash, _flags, _other, name, anext = struct.unpack_from(end + "IHHII", data, va)
                label = data[strtab + name:data.find(b"\0", strtab + name)].decode("ascii", "replace")
                if label.startswith("GLIBC_") and label[6:7].isdigit():
                    version = label[6:]
                    if best is None or _version_key(version) > _version_key(best):
                        best = version
                if not anext:
                    break
                va += anext
            if not nxt:
                break
            vn += nxt
    machine = MACHINES.get(e_machine, "elf-machine-{}".format(e_machine))
    if e_machine == 21 and end == ">":
        machine = "ppc64"  # one ELF machine for both byte orders; uname -m says ppc64 on a big-endian worker
    return {"machine": machine, "interp": interp,
            "glibc": best}


def _elf_files(prefix: str, base: "Optional[InterpreterBase]" = None) -> Iterator[Tuple[str, bool]]:
    """``(path, owned)`` for the files of *prefix* that may be ELF (shared objects, executables); *owned*: the file
    is still the interpreter *base*'s own (the same inode, which one ``scandir`` tells without a ``stat``)."""
    listing = base.listing() if base is not None else {}
    if listing and {e.dev for e in listing.values() if e.kind == "F"} != {os.stat(prefix).st_dev}:
        listing = {}  # placed by copying (another file system): nothing is the base's own
    work = [(prefix, "")]
    while work:
        directory, rel_dir = work.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.name != "__pycache__":
                    work.append((entry.path, rel_dir + entry.name + "/"))
                continue
            known = listing.get(rel_dir + entry.name)
            owned = known is not None and known.kind == "F" and known.ino == entry.inode()
            name = entry.name
            if name.endswith(".so") or ".so." in name or (
                    known.mode & 0o111 if owned else os.access(entry.path, os.X_OK)):
                yield entry.path, owned


def prefix_floor(prefix: str, base: "Optional[InterpreterBase]" = None) -> Dict[str, object]:
    """The floor of the environment in *prefix*: ``{"machine", "libc", "glibc", "glibc_by"}``.

    ``machine``: the ELF machine of its binaries (None for a pure-data or pure-Python prefix without an
    interpreter); ``libc``: "glibc", "musl" or None; ``glibc``: the highest glibc symbol version any binary
    requires (None: no glibc requirement) and ``glibc_by``: the first file (relative path) that requires it.
    *base*: the interpreter base (:class:`.basemember.InterpreterBase`) placed into *prefix*: what its own files
    need is read once per base (:func:`base_needs`), not from each prefix.
    """
    machines: set = set()
    libc: Optional[str] = None
    best: Optional[str] = None
    by: Optional[str] = None
    known = base_needs(base) if base is not None else {}
    for path, owned in sorted(_elf_files(prefix, base)):
        rel = os.path.relpath(path, prefix)
        # what the base could not tell (its tree gone or unreadable when read) is read here, as any other file
        needs = known[rel] if owned and rel in known else elf_needs(path)
        if needs is None:
            continue
        machines.add(str(needs["machine"]))
        interp = str(needs["interp"] or "")
        if "ld-musl" in interp:
            libc = "musl"
        elif interp and libc is None:
            libc = "glibc"
        version = needs["glibc"] if isinstance(needs["glibc"], str) else None
        if version and (best is None or _version_key(version) > _version_key(best)):
            best, by = version, os.path.relpath(path, prefix)
    if best and libc is None:
        libc = "glibc"
    machine = sorted(machines)[0] if len(machines) == 1 else (",".join(sorted(machines)) or None)
    return {"machine": machine, "libc": libc, "glibc": best, "glibc_by": by}


#: Bumped when what :func:`elf_needs` reports changes: a base's ``elf-needs.json`` of another format is read again.
NEEDS_FORMAT = 1


def base_needs(base: "InterpreterBase") -> Dict[str, Optional[Dict[str, object]]]:
    """:func:`elf_needs` of each file of the interpreter *base* that may be ELF (relative path -> needs, or None: not
    ELF), read once per base and kept beside its packed parts (``<store>/elf-needs.json``, for the base's identity;
    a read-only cache only costs reading them again)."""
    path = os.path.join(base.store, "elf-needs.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if isinstance(doc, dict) and doc.get("format") == NEEDS_FORMAT and doc.get("identity") == base.identity \
                and isinstance(doc.get("needs"), dict):
            return doc["needs"]
    except (OSError, ValueError):
        pass
    if not os.path.isdir(base.tree):
        return {}  # removed meanwhile: nothing to tell, and nothing written where the base was
    # every file that may be ELF, None for those that are not: a file missing here is read from the prefix
    needs = {os.path.relpath(file, base.tree): elf_needs(file) for file, _owned in _elf_files(base.tree)}
    try:
        os.makedirs(base.store, exist_ok=True)
        tmp = "{}.tmp-{}".format(path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"format": NEEDS_FORMAT, "identity": base.identity, "needs": needs}, f, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass
    return needs


#: The sh-readable floor inside an environment (and the first member of its tarball: see :mod:`poncho_wq.archive.pack`).
FLOOR_MEMBER = "poncho/floor"
#: The keys of :data:`FLOOR_MEMBER`, in order.
FLOOR_KEYS = ("machine", "libc", "glibc", "glibc_by")


def floor_text(floor: Dict[str, object]) -> str:
    """*floor* as the shim reads it: one ``key=value`` line per :data:`FLOOR_KEYS` (empty value: unknown or no
    requirement, not checked). A non-printable character becomes ``?``: the shim reads the file line by line,
    compares the values and prints them in its message."""
    lines = ["# what this environment needs of a machine (poncho_wq.floor; read by poncho_package_run and run_in_env)"]
    for key in FLOOR_KEYS:
        value = floor.get(key)
        value = "" if value is None else "".join(c if c.isprintable() else "?" for c in str(value))
        lines.append("{}={}".format(key, value))
    return "\n".join(lines) + "\n"


def write_floor(prefix: str, base: "Optional[InterpreterBase]" = None) -> Dict[str, object]:
    """Compute the floor of *prefix* (*base*: see :func:`prefix_floor`) and store it inside it as
    ``poncho/floor.json`` and :data:`FLOOR_MEMBER` (for workers); return it."""
    floor = prefix_floor(prefix, base)
    path = os.path.join(prefix, "poncho", "floor.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(floor, f, sort_keys=True)
        f.write("\n")
    with open(os.path.join(prefix, FLOOR_MEMBER), "w", encoding="utf-8") as f:
        f.write(floor_text(floor))
    return floor
