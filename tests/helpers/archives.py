"""Reading members of environment tarballs in tests."""

import tarfile


def pyc_flags(path):
    """``{member: PEP 552 flags}`` of every ``.pyc`` in the tarball *path* (one pass): 3 = hash-based and checked
    against the source (what poncho_wq compiles at build time); 0 = timestamp-based (pip's, conda's)."""
    flags = {}
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isfile() and m.name.endswith(".pyc"):
                flags[m.name] = int.from_bytes(tar.extractfile(m).read(8)[4:8], "little")
    return flags


def tar_read(path, member):
    """The text of *member* in the tarball *path*."""
    with tarfile.open(path) as tar:
        return tar.extractfile(member).read().decode()
