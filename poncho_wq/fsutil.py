"""Writing results without ever leaving a partial file behind.

A command that fails half-way must not leave an output file that a later step (or a user) mistakes for a good
one. Everything poncho_wq publishes is written to a temporary sibling first and renamed into place, which is
atomic on POSIX file systems; ``-`` means standard output, written only once the content is complete.
"""

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

from .errors import BuildError, SpecError

#: Directories of version control and tool caches: never the content of a project, a package or a data directory.
#: Every walker over user trees (analysis package data, files=, projects, code layers, the current engine) starts
#: from this set and adds what its own question needs (build output, virtual environments, ...).
TOOL_STATE_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".tox", ".nox", ".mypy_cache", ".pytest_cache"})


@contextlib.contextmanager
def atomic_output(path, mode="w", file_mode=None):
    """Yield a file object whose content appears at *path* only if the block finishes without error: written to
    a temporary file beside it, flushed to disk, then renamed (with *file_mode*, default: what the umask gives a
    new file; 0o444 for content-named cache files, whose name must always mean the same bytes).

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
        rename_into_place(tmp, path, file_mode)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def rename_into_place(tmp, path, file_mode=None):
    """Rename *tmp* onto *path* with *file_mode*, by default the permissions a newly created file would get
    (mkstemp uses 0600)."""
    if file_mode is None:
        umask = os.umask(0)
        os.umask(umask)
        file_mode = 0o666 & ~umask
    os.chmod(tmp, file_mode)
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


_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def copy_contents(src_fd, dst_fd):
    """Copy the whole of *src_fd* into the empty *dst_fd*; return how: "reflink", "copy_file_range" or "copy".

    Why three ways: a reflink (FICLONE: btrfs, XFS, bcachefs) shares the blocks copy-on-write, so a later write to
    either file never reaches the other - the point of copying at all - at no cost in time or space.
    ``copy_file_range`` lets the kernel copy (server-side on NFS 4.2, reflinked by some file systems) without the
    data passing through user space. A plain read/write loop is the fallback for everything else.
    """
    try:
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
        return "reflink"
    except OSError:
        pass
    size = os.fstat(src_fd).st_size
    copied = _kernel_copy(src_fd, dst_fd, size, same_offsets=True)
    if copied == size:
        return "copy_file_range"
    os.lseek(src_fd, copied, os.SEEK_SET)
    os.lseek(dst_fd, copied, os.SEEK_SET)
    while True:
        block = os.read(src_fd, 1 << 20)
        if not block:
            return "copy"
        view = memoryview(block)
        while view:
            view = view[os.write(dst_fd, view):]


def _kernel_copy(src_fd, dst_fd, size, same_offsets):
    """Copy the first *size* bytes of *src_fd* with ``copy_file_range`` to the same offsets of *dst_fd*
    (*same_offsets*) or at its current offset; return how many were copied before the kernel stopped or refused
    (0 where it cannot: the caller copies the rest itself)."""
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < size:
                n = os.copy_file_range(src_fd, dst_fd, size - copied, copied, copied if same_offsets else None)
                if n == 0:
                    break
                copied += n
        except OSError as e:
            # Not supported across these file systems (EXDEV on old kernels), or by this one: fall back. A real
            # write failure (ENOSPC, EIO) is not retried the slow way.
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                raise
    return copied


def append_contents(src_fd, dst_fd, size):
    """Append the first *size* bytes of *src_fd* (from its start) at *dst_fd*'s current offset, which moves past
    them; return how ("copy_file_range" or "copy"). The kernel copies when it can (no pass through user space),
    as in :func:`copy_contents`."""
    copied = _kernel_copy(src_fd, dst_fd, size, same_offsets=False)
    if copied == size:
        return "copy_file_range"
    while copied < size:
        block = os.pread(src_fd, min(1 << 20, size - copied), copied)
        if not block:
            raise OSError(errno.EIO, "file shorter than expected ({} of {} bytes)".format(copied, size))
        view = memoryview(block)
        while view:
            view = view[os.write(dst_fd, view):]
        copied += len(block)
    return "copy"


def write_error(path, error):
    """A :class:`~poncho_wq.errors.BuildError` (exit 3) for an OSError met while writing the output *path*.

    One line naming the path, what the system said and what to do, instead of a traceback.
    """
    hint = {errno.ENOSPC: "free some space there or choose another output path",
            errno.EDQUOT: "free some space there (disk quota) or choose another output path",
            errno.EROFS: "the file system is read-only: choose another output path",
            errno.EACCES: "choose a directory you can write to",
            errno.EPERM: "choose a directory you can write to",
            errno.EISDIR: "give a file name, such as {}".format(os.path.join(path, "env.tar.gz")),
            errno.ENOTDIR: "a parent of the output path is a file, not a directory"}.get(error.errno,
                                                                                        "choose another output path")
    where = error.filename if error.filename and error.filename != path else None
    return BuildError("cannot write {}{}: {}; {}".format(
        path, " ({})".format(where) if where else "", error.strerror or error, hint))


def check_output_path(path):
    """Refuse an output *path* that can never be written, before spending minutes on a build: an existing
    directory. (Full or read-only file systems are found when writing: :func:`write_error`.)"""
    if path != "-" and os.path.isdir(path):
        raise write_error(path, OSError(errno.EISDIR, os.strerror(errno.EISDIR), path))


def place_copy(src, output):
    """Publish a copy of *src* at *output* atomically (temp file beside it, fsync, rename); return how it was
    copied (see :func:`copy_contents`).

    Never a hard link: the output belongs to the user, who may overwrite it (``echo x > env.tar.gz``); a hard link
    to a cache entry would carry that write into the entry every later task is served from. A copy also makes
    ``os.replace`` a real rename: with a link, temp file and output could be the same inode, and renaming a file
    onto itself is a no-op that leaves the temp name behind.
    Raises :class:`~poncho_wq.errors.BuildError` (exit 3) when the output cannot be written; nothing is left.
    """
    check_output_path(output)
    directory = os.path.dirname(os.path.abspath(output))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(output), dir=directory)
        try:
            with open(src, "rb") as source:
                how = copy_contents(source.fileno(), fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        rename_into_place(tmp, output)
        return how
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            if e.filename and os.path.abspath(e.filename) == os.path.abspath(src):
                raise BuildError("cannot read {} to copy it to {}: {}; run the command again (a concurrent "
                                 "`cache rm` or prune may have removed it)".format(src, output, e.strerror or e)) from e
            raise write_error(output, e) from e
        raise


def refuse_output_onto_input(output, inputs, option="output"):
    """Raise :class:`~poncho_wq.errors.SpecError` (exit 1) when *output* names one of *inputs*: the same path
    after resolving symlinks, or the same file (a hard link). Writing the result there would destroy the input it
    was made from. ``-`` (standard input/output) is never a file. An input that is a directory covers the
    ``.py`` files in it (the analyzer reads them all)."""
    if output == "-":
        return
    out_real = os.path.realpath(output)
    try:
        out_st = os.stat(output)
    except OSError:
        out_st = None
    for item in inputs:
        if item == "-":
            continue
        same = os.path.realpath(item) == out_real
        if not same and out_st is not None:
            with contextlib.suppress(OSError):
                same = os.path.samestat(os.stat(item), out_st)
        if not same and os.path.isdir(item) and out_real.endswith(".py"):
            same = is_within(out_real, os.path.realpath(item))
        if same:
            raise SpecError("the {} {} is the input {}: writing it would destroy the input; choose another {} "
                            "path (or - for standard output)".format(option, output, item, option))


#: Name prefix of the scratch directory a ``--no-cache`` build makes next to its output.
#: What :func:`remove_later` renames a directory to (beside where it was).
TRASH_PREFIX = "trash-"


def remove_later(path):
    """Remove the directory *path* without waiting for it: renamed at once (beside itself, ``trash-<name>-<pid>``:
    nothing looks it up by its old name any more) and removed by a detached ``rm -rf``, which outlives this
    process. A build's prefix is thousands of files: removing it took 0.1 s of a small environment's 1.2 s build
    (0.3 s with pandas) after the result was ready. What a remover killed with the machine leaves is removed by
    :func:`remove_old_trash`. Removed here and now when it cannot be renamed or no process can be started."""
    parent, name = os.path.split(os.path.abspath(path))
    trash = os.path.join(parent, "{}{}-{}-{}".format(TRASH_PREFIX, name, os.getpid(), time.monotonic_ns()))
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        # sh starts rm in the background and exits at once: rm is no child of ours to wait for, and in a session of
        # its own no signal to our process group (Ctrl-C) stops it half-way.
        subprocess.run(["/bin/sh", "-c", 'rm -rf -- "$1" </dev/null >/dev/null 2>&1 &', "sh", trash],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       start_new_session=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        shutil.rmtree(trash, ignore_errors=True)


def remove_old_trash(directory, seconds=600):
    """Remove what :func:`remove_later` left in *directory* more than *seconds* ago (its remover died)."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TRASH_PREFIX)]
    except OSError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(directory, name)
        try:
            if now - os.lstat(path).st_ctime > seconds:  # the rename set its ctime
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


SCRATCH_PREFIX = ".poncho-build-"
#: A scratch directory without its lock file is taken for dead only when older than this (seconds): its builder
#: may be between creating the directory and the lock file.
_UNLOCKED_SCRATCH_AGE = 60


@contextlib.contextmanager
def build_scratch(directory):
    """Yield a new scratch directory inside *directory*, held under an ``flock`` for as long as the block runs,
    and remove it afterwards (also on an exception or a signal turned into one: see ``cli.common``).

    Why the lock: a SIGKILLed build cannot clean up. Its scratch (gigabytes for a large environment) would stay
    next to the output forever, so every build first removes the scratch directories in *directory* whose lock is
    free - the kernel releases an ``flock`` when its holder dies, however it dies - and leaves alone those of
    builds still running.
    """
    remove_dead_scratch(directory)
    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=directory)
    try:
        fd = os.open(os.path.join(scratch, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield scratch
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_dead_scratch(directory):
    """Remove the scratch directories of dead builds in *directory* (see :func:`build_scratch`)."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(SCRATCH_PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(os.path.join(path, ".lock"), os.O_RDWR)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if os.path.isdir(path) and time.time() - os.stat(path).st_mtime > _UNLOCKED_SCRATCH_AGE:
                    shutil.rmtree(path, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a running build holds it
        else:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


def read_input(path, limit):
    """At most *limit* + 1 bytes of the input file *path* (the caller refuses more), without ever blocking on
    an ``open()``.

    Why: ``open()`` of a FIFO waits for a writer, for ever when none comes (``poncho_package_create fifo out``
    hung). The file is opened non-blocking and used blocking afterwards: a pipe or FIFO with a live writer
    (``<(generate-spec)``) is read to its end, one with no writer reads as empty. Devices and sockets are refused
    (``/dev/zero`` is bounded by *limit*, a terminal would wait): :class:`OSError` with a clear ``strerror``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise OSError(errno.EINVAL, "not a regular file, pipe or FIFO", path)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        chunks, size = [], 0
        while size <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - size))
            if not block:
                break
            chunks.append(block)
            size += len(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_toml(file: str) -> dict:
    """The TOML document *file*, by ``tomllib`` (Python 3.11+), else ``tomli``, else the copy pip vendors (Python
    3.9 and 3.10 are supported and ship no TOML reader). Raises ValueError (not TOML), OSError, or ImportError
    (no reader at all)."""
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib  # type: ignore
        except ImportError:
            try:
                from pip._vendor import tomli as tomllib  # type: ignore
            except ImportError:
                raise ImportError("no TOML reader in this Python (before 3.11): pip install tomli") from None
    with open(file, "rb") as f:
        return tomllib.load(f)
