"""The interpreter base packed once (issue 27): a prefix holding a base's files (hard links, as the portable and
current engines place them) packs into one ordinary gzip member whose base part comes from the base's store; the
archive holds the same members as the plain packing, is read by GNU tar, busybox tar, tarfile (random access and
stream mode), gzip and pigz, is reproducible with and without the stored part, and the shim unpacks it."""

import hashlib
import os
import shutil
import subprocess
import tarfile
import zlib

import pytest

from helpers.shimutil import SHELLS, make_prefix, run_shim, shim_env
from poncho_wq.archive.basemember import InterpreterBase, crc32_combine
from poncho_wq.archive.floor import FLOOR_MEMBER, write_floor
from poncho_wq.archive.lock import LOCK_MEMBER
from poncho_wq.archive.pack import pack_prefix


def _base(tmp_path):
    """A base tree: files over two compression chunks, an executable, a symlink, a directory, a long name."""
    tree = tmp_path / "interp" / "tree"
    (tree / "lib" / "python3.x" / "encodings").mkdir(parents=True)
    (tree / "bin").mkdir()
    (tree / "bin" / "python3.x").write_bytes(b"\x7fELF fake interpreter\n" * 1000)
    (tree / "bin" / "python3.x").chmod(0o755)
    os.symlink("python3.x", str(tree / "bin" / "python3"))
    rnd = hashlib.sha256(b"seed").digest()
    (tree / "lib" / "python3.x" / "big.bin").write_bytes(rnd * ((3 << 20) // 32) + b"os.py " * 200000)
    for i in range(50):
        (tree / "lib" / "python3.x" / "encodings" / "enc{}.py".format(i)).write_text("x = {}\n".format(i) * i)
    (tree / "lib" / "python3.x" / ("n" * 120 + ".py")).write_text("long = 1\n")
    (tree / "lib" / "python3.x" / "copied.py").write_text("copied = True\n")
    return tree


def _place(tree, prefix):
    """Hard-link *tree* into *prefix*, except copied.py (copied: it must go with the rest)."""
    for directory, dirs, files in os.walk(str(tree)):
        rel = os.path.relpath(directory, str(tree))
        dest = os.path.join(prefix, rel)
        os.makedirs(dest, exist_ok=True)
        for name in dirs + files:
            src = os.path.join(directory, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), os.path.join(dest, name))
            elif os.path.isfile(src):
                (shutil.copy2 if name == "copied.py" else os.link)(src, os.path.join(dest, name))


@pytest.fixture
def setup(tmp_path):
    tree = _base(tmp_path)
    prefix = make_prefix(tmp_path, run_in_env=True)
    _place(tree, prefix)
    os.makedirs(os.path.join(prefix, "poncho"), exist_ok=True)
    with open(os.path.join(prefix, LOCK_MEMBER), "w") as f:
        f.write('{"distributions": []}\n')
    write_floor(prefix)
    base = InterpreterBase(tree=str(tree), identity="test-base", store=str(tmp_path / "interp" / "packed"))
    return prefix, base


def _members(path):
    """name -> (type, mode, size, mtime, linkname, uid, gid, content) of every member, in archive order."""
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            data = tar.extractfile(m).read() if m.isfile() else None
            out[m.name] = (m.type, m.mode, m.size, m.mtime, m.linkname, m.uid, m.gid, m.uname, m.gname, data)
    return out


def test_spliced_archive_has_the_plain_packings_members_in_one_gzip_member(setup, tmp_path):
    prefix, base = setup
    plain, spliced = str(tmp_path / "plain.tar.gz"), str(tmp_path / "spliced.tar.gz")
    pack_prefix(prefix, plain, n_threads=2)
    pack_prefix(prefix, spliced, n_threads=2, interpreter_base=base)
    assert os.listdir(base.store), "the base part was not kept"
    a, b = _members(plain), _members(spliced)
    assert a == b
    names = list(b)
    assert names[:2] == [FLOOR_MEMBER, LOCK_MEMBER]
    # The base's members come next, together; the copied file and the rest after them.
    base_names = {"bin", "bin/python3.x", "bin/python3", "lib/python3.x/big.bin", "lib/python3.x/encodings",
                  "lib/python3.x/encodings/enc7.py", "lib/python3.x/" + "n" * 120 + ".py"}
    positions = {n: names.index(n) for n in base_names if n in names}
    assert "bin/python3.x" in positions and "lib/python3.x/big.bin" in positions
    assert names.index("lib/python3.x/copied.py") > max(positions.values())
    assert names.index("bin/hello") > max(positions.values())
    # One gzip member: nothing after the first member's end; the CRC and length were combined right.
    with open(spliced, "rb") as f:
        raw = f.read()
    d = zlib.decompressobj(31)
    stream = d.decompress(raw)
    assert d.eof and d.unused_data == b""
    with open(plain, "rb") as f:
        assert len(stream) == len(zlib.decompress(f.read(), 31))  # the same tar length, end padding included


def test_spliced_archive_is_read_by_every_reader(setup, tmp_path):
    prefix, base = setup
    spliced = str(tmp_path / "spliced.tar.gz")
    pack_prefix(prefix, spliced, n_threads=2, interpreter_base=base)
    expected = sorted(_members(spliced))
    with tarfile.open(spliced, "r|gz") as tar:  # stream mode reads only the first member of a multi-member gzip
        assert sorted(m.name for m in tar) == expected
    for cmd in (["tar", "-tzf", spliced], ["busybox", "tar", "-tzf", spliced]):
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        assert sorted(n.rstrip("/") for n in r.stdout.split()) == expected, cmd
    for tool in ("gzip", "pigz"):
        subprocess.run([tool, "-t", spliced], check=True)
    out = tmp_path / "busybox-x"
    out.mkdir()
    subprocess.run(["busybox", "tar", "-xzf", spliced, "-C", str(out)], check=True)
    assert (out / "lib" / "python3.x" / "big.bin").read_bytes() == \
        (base_tree_file(base, "lib/python3.x/big.bin"))


def base_tree_file(base, rel):
    with open(os.path.join(base.tree, rel), "rb") as f:
        return f.read()


@pytest.mark.parametrize("use_pigz", [None, False])
def test_spliced_archive_is_reproducible_with_and_without_the_stored_part(setup, tmp_path, use_pigz):
    prefix, base = setup
    first, second, third = (str(tmp_path / n) for n in ("1.tar.gz", "2.tar.gz", "3.tar.gz"))
    pack_prefix(prefix, first, n_threads=2, interpreter_base=base, use_pigz=use_pigz)
    stored = sorted(os.listdir(base.store))
    assert [n.rsplit(".", 1)[1] for n in stored] == ["deflate", "json"]
    pack_prefix(prefix, second, n_threads=1, interpreter_base=base, use_pigz=use_pigz)  # reuses the part
    with open(first, "rb") as a, open(second, "rb") as b:
        assert a.read() == b.read()
    # A damaged part is noticed (its sha256) and made again: still the same bytes.
    part = os.path.join(base.store, stored[0])
    os.chmod(part, 0o644)
    with open(part, "r+b") as f:
        f.seek(100)
        f.write(b"\0damaged\0")
    pack_prefix(prefix, third, n_threads=2, interpreter_base=base, use_pigz=use_pigz)
    with open(first, "rb") as a, open(third, "rb") as c:
        assert a.read() == c.read()


def _stored_part(base):
    """``(record path, data path, key)`` of the one part kept in *base*'s store."""
    import json

    [record_name] = [n for n in os.listdir(base.store) if n.endswith(".json")]
    record_path = os.path.join(base.store, record_name)
    with open(record_path) as f:
        key = json.load(f)["key"]
    return record_path, record_path[:-len(".json")] + ".deflate", key


def test_a_stored_part_is_trusted_by_its_stat_and_any_other_file_is_hashed(setup, tmp_path):
    """The part file its record names by inode, size and mtime is used without being read (hashing 12 MB was
    15-25 ms of every small build); a part file put there otherwise (replaced: another inode, or a record of an
    older version without the stat) is read and checked against its sha256; a wrong one is packed again. Every
    way gives the same archive bytes."""
    import json

    from poncho_wq.archive.basemember import load_part

    prefix, base = setup
    outs = [str(tmp_path / "{}.tar.gz".format(i)) for i in range(4)]
    pack_prefix(prefix, outs[0], n_threads=2, interpreter_base=base)
    record_path, data_path, key = _stored_part(base)
    trusted = load_part(base, key)
    assert trusted.data is None and trusted.path == data_path
    pack_prefix(prefix, outs[1], n_threads=2, interpreter_base=base)

    # Replaced by a copy with the same bytes: another inode, so it is read and hashed (and accepted).
    shutil.copy(data_path, data_path + ".new")
    os.replace(data_path + ".new", data_path)
    checked = load_part(base, key)
    assert checked.data is not None and checked.size == trusted.size
    pack_prefix(prefix, outs[2], n_threads=2, interpreter_base=base)

    # Replaced by other bytes of the same size: the hash says no; packed again and stored again.
    with open(data_path, "rb") as f:
        size = len(f.read())
    with open(data_path + ".new", "wb") as f:
        f.write(b"\0" * size)
    os.replace(data_path + ".new", data_path)
    assert load_part(base, key) is None
    pack_prefix(prefix, outs[3], n_threads=2, interpreter_base=base)
    assert load_part(base, key).path == data_path  # stored anew, trusted again
    digests = {hashlib.sha256(open(o, "rb").read()).hexdigest() for o in outs}
    assert len(digests) == 1

    # A record written before records held the stat: hashed, accepted.
    record = json.load(open(record_path))
    del record["stat"]
    with open(record_path, "w") as f:
        json.dump(record, f)
    assert load_part(base, key).data is not None


def test_no_member_of_the_base_packs_as_before(setup, tmp_path):
    prefix, _base_unused = setup
    other = tmp_path / "other-tree"
    (other / "elsewhere").mkdir(parents=True)
    base = InterpreterBase(tree=str(other), identity="x", store=str(tmp_path / "other-packed"))
    a, b = str(tmp_path / "a.tar.gz"), str(tmp_path / "b.tar.gz")
    pack_prefix(prefix, a, n_threads=1)
    pack_prefix(prefix, b, n_threads=1, interpreter_base=base)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()
    assert not os.path.exists(base.store)


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_shim_unpacks_a_spliced_archive(setup, tmp_path, shell):
    prefix, base = setup
    tarball = str(tmp_path / ("env-" + "c" * 32 + ".tar.gz"))
    pack_prefix(prefix, tarball, n_threads=2, interpreter_base=base)
    root = tmp_path / "root"
    r = run_shim(["-e", tarball, "sh", "-c", 'cat "$CONDA_PREFIX/lib/python3.x/encodings/enc3.py"; hello'],
                 shell=SHELLS[shell], env=shim_env(root))
    assert r.returncode == 0, r.stderr
    env_dir = root / ("env-" + "c" * 32)
    assert r.stdout == "x = 3\n" * 3 + "prefix={}\n".format(env_dir)
    assert (env_dir / "lib" / "python3.x" / "big.bin").read_bytes() == base_tree_file(base, "lib/python3.x/big.bin")


def test_crc32_combine_matches_zlib():
    a, b = b"poncho" * 1000, bytes(range(256)) * 4097
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b""), 0) == zlib.crc32(a)
    rnd = hashlib.sha256(b"lengths").digest() * 40000  # 1.28 MB, not repetitive in a short period
    for n in (1, 2, 3, 7, 8, 9, 255, 511, 4097, 65535, 1 << 20, len(rnd)):
        for head in (b"", b"x", rnd[:1000]):
            assert crc32_combine(zlib.crc32(head), zlib.crc32(rnd[:n]), n) == zlib.crc32(head + rnd[:n]), (n, head)


def test_a_part_accepted_by_its_hash_is_trusted_by_its_stat_from_then_on(setup, tmp_path):
    """A record an older version wrote (no stat), or a part file replaced by the same bytes (a cache copied or
    restored: other inodes), is hashed once and accepted; its record then gets the file's stat, so that the
    next build uses it unread. Without that, every build of a cache kept from before the upgrade hashed the
    12 MB part again, forever (nothing stores a part that was found)."""
    import json

    from poncho_wq.archive.basemember import load_part

    prefix, base = setup
    outs = [str(tmp_path / "{}.tar.gz".format(i)) for i in range(2)]
    pack_prefix(prefix, outs[0], n_threads=2, interpreter_base=base)
    record_path, data_path, key = _stored_part(base)

    record = json.load(open(record_path))
    del record["stat"]
    with open(record_path, "w") as f:
        json.dump(record, f)
    assert load_part(base, key).data is not None  # hashed, accepted
    assert load_part(base, key).path == data_path  # and trusted from then on

    shutil.copy(data_path, data_path + ".new")
    os.replace(data_path + ".new", data_path)
    assert load_part(base, key).data is not None
    assert load_part(base, key).path == data_path
    pack_prefix(prefix, outs[1], n_threads=2, interpreter_base=base)
    assert open(outs[0], "rb").read() == open(outs[1], "rb").read()


def test_a_trusted_part_is_copied_from_the_file_its_stat_was_checked_on(setup, tmp_path):
    """The part trusted by its stat is copied from that very file (kept open), not from whatever the path names
    when the archive is written: the store removed in between (``rm -r`` of the cache, a base found stale and
    removed by another build) used to fail the build with FileNotFoundError; before parts were trusted, their
    bytes were in memory from the moment they were loaded."""
    import json

    from poncho_wq.archive.basemember import load_part

    prefix, base = setup
    pack_prefix(prefix, str(tmp_path / "0.tar.gz"), n_threads=2, interpreter_base=base)
    [record_name] = [n for n in os.listdir(base.store) if n.endswith(".json")]
    key = json.load(open(os.path.join(base.store, record_name)))["key"]
    data_path = os.path.join(base.store, record_name[:-len(".json")] + ".deflate")
    with open(data_path, "rb") as f:
        expected = f.read()
    part = load_part(base, key)
    assert part.data is None  # trusted
    shutil.rmtree(base.store)
    with open(str(tmp_path / "out"), "wb") as out:
        out.write(b"head")
        part.write_to(out)
        out.write(b"tail")
    assert open(str(tmp_path / "out"), "rb").read() == b"head" + expected + b"tail"
