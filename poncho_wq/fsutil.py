"""Writing results without ever leaving a partial file behind.

A command that fails half-way must not leave an output file that a later step (or a user) mistakes for a good
one. Everything poncho_wq publishes is written to a temporary sibling first and renamed into place, which is
atomic on POSIX file systems; ``-`` means standard output, written only once the content is complete.
"""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def atomic_output(path, mode="w"):
    """Yield a file object whose content appears at *path* only if the block finishes without error.

    ``path == "-"`` writes to standard output instead (text or binary according to *mode*).
    """
    if path == "-":
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def publish(tmp, path):
    """Rename *tmp* onto *path* with the permissions a newly created file would get (mkstemp uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def mtime_ns(path):
    """``st_mtime_ns`` of *path*, or None when it cannot be stat'ed (a site or conda-meta directory that does
    not exist yet is a valid state of a memo key, not an error)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def is_within(path, root):
    """Is *path* *root* itself or below it? Compares strings only: the caller normalizes both sides (a prefix
    test without the separator would take ``/a/bc`` to be within ``/a/b``)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
