"""Extract an untrusted tarball without letting it write anywhere but the destination directory.

Environment specs may name arbitrary ``http`` tarballs, and ``tarfile.extractall`` trusts its input: absolute
member names, ``../`` components, symlinks to ``/etc`` followed by a member written *through* that symlink, hard
links to files outside, device nodes and setuid bits all do what the archive says. Python 3.12 added extraction
filters (``filter="data"``) for exactly this, but poncho_wq supports Python 3.9+, and the filter's semantics differ
between patch releases. So this module does not call ``extract`` at all: it walks the members itself and writes
each one with plain ``os`` calls after checking it, which makes the rules below hold on every version:

* names must be relative and must not contain ``..`` (after dropping a leading ``./``);
* only regular files, directories, symlinks and hard links; character/block devices, FIFOs and unknown member
  types are refused;
* a symlink's target must stay inside the destination, judged both lexically and with the links already on disk
  resolved (``realpath``); since a later link can change what an earlier one resolves to, every symlink is
  checked again once everything is extracted;
* a hard link must point at a regular file extracted earlier from the same archive;
* no member is ever written through a symlink: every parent directory of a member must be a real directory, and
  an existing link at the member's own path is replaced, not followed;
* modes are sanitized (no setuid/setgid/sticky, no group/other write; the owner can always read and write files
  and enter directories); owners are never changed; mtimes are kept.

Any refusal or archive corruption raises :class:`~poncho_wq.errors.PonchoError` (exit code 3) naming the member,
and leaves a partly extracted destination behind: callers extract into a fresh temporary directory and publish it
by rename only on success (see :mod:`poncho_wq.engines.data`).

The archive is read in *stream* mode (``r|...``), so it may come from a non-seekable file object, and it is read
once, which also means a hard link can only refer to an earlier member - as tar itself requires.
"""

import os
import shutil
import stat
import tarfile
import zlib

from ..errors import BuildError, PonchoError

try:
    from lzma import LZMAError
except ImportError:  # pragma: no cover - Python built without liblzma: xz archives cannot be read anyway
    LZMAError = tarfile.TarError  # type: ignore[misc,assignment]

#: What corrupt input raises, depending on where the decoder notices (bz2 reports bad data as OSError).
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, LZMAError)

#: Spec / user names of compressions -> tarfile stream-mode suffixes ("*" = detect from the magic bytes).
_COMPRESSION = {None: "*", "gzip": "gz", "gz": "gz", "bzip2": "bz2", "bz2": "bz2", "xz": "xz", "none": ""}
_CHUNK = 1 << 20


def _fail(name, why):
    raise BuildError("refusing to extract archive member {!r}: {}".format(name, why))


def _clean_name(name):
    """The member's relative path with ``./`` prefixes removed, or a refusal."""
    if not name or "\0" in name:
        _fail(name, "empty or invalid name")
    if name.startswith("/") or os.path.isabs(name):
        _fail(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        _fail(name, "path contains '..'")
    return "/".join(parts)


def _inside(root, path):
    return path == root or path.startswith(root + os.sep)


def _file_mode(mode):
    mode = (mode & 0o755) | 0o600
    if not mode & 0o100:
        mode &= ~0o111
    return mode


def _dir_mode(mode):
    return (mode & 0o755) | 0o700


class _Extractor:
    def __init__(self, dest):
        self.root = os.path.realpath(dest)
        self.files = set()  # regular files extracted so far (relative names): valid hard-link targets
        self.links = []  # (relative name, absolute path) of created symlinks, re-checked at the end

    def _parent_dirs(self, rel, name):
        """Create the parents of *rel* as real directories; refuse to go through a symlink or a file."""
        path = self.root
        for part in rel.split("/")[:-1]:
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                _fail(name, "it would be written through the symlink {!r}".format(os.path.relpath(path, self.root)))
            if not stat.S_ISDIR(st.st_mode):
                _fail(name, "its parent {!r} is not a directory".format(os.path.relpath(path, self.root)))
        return os.path.join(self.root, rel)

    def _clear(self, path, name, want_dir=False):
        """Remove an earlier non-directory at *path* (tar semantics: a later member replaces an earlier one)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if want_dir:
                return True
            _fail(name, "a directory of the same name was extracted before")
        os.unlink(path)
        return False

    def member(self, tar, m):
        rel = _clean_name(m.name)
        if not rel:
            if m.isdir():
                return  # "./" itself
            _fail(m.name, "names the destination directory itself")
        if m.ischr() or m.isblk() or m.isfifo():
            _fail(m.name, "device or FIFO members are not allowed")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            _fail(m.name, "unsupported member type {!r}".format(m.type))
        path = self._parent_dirs(rel, m.name)
        if m.isdir():
            if not self._clear(path, m.name, want_dir=True):
                os.mkdir(path)
            os.chmod(path, _dir_mode(m.mode))
        elif m.issym():
            self._symlink(m, rel, path)
        elif m.islnk():
            self._hardlink(m, rel, path)
        else:
            self._clear(path, m.name)
            src = tar.extractfile(m)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            os.chmod(path, _file_mode(m.mode))
            os.utime(path, (m.mtime, m.mtime))
            self.files.add(rel)

    def _symlink(self, m, rel, path):
        target = m.linkname
        if not target:
            _fail(m.name, "symlink with an empty target")
        if os.path.isabs(target):
            _fail(m.name, "symlink to the absolute path {!r}".format(target))
        lexical = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if not _inside(self.root, lexical) or not _inside(self.root, os.path.realpath(lexical)):
            _fail(m.name, "symlink target {!r} points outside the destination".format(target))
        self._clear(path, m.name)
        os.symlink(target, path)
        self.files.discard(rel)
        self.links.append((m.name, path))

    def _hardlink(self, m, rel, path):
        try:
            target = _clean_name(m.linkname)
        except PonchoError as e:
            _fail(m.name, "hard link to {!r}: {}".format(m.linkname, str(e).rsplit(": ", 1)[-1]))
        if target not in self.files:
            _fail(m.name, "hard link to {!r}, which is not a regular file extracted earlier from this archive"
                  .format(m.linkname))
        source = os.path.join(self.root, target)
        self._clear(path, m.name)
        try:
            os.link(source, path, follow_symlinks=False)
        except OSError:
            shutil.copy2(source, path, follow_symlinks=False)
        self.files.add(rel)

    def recheck_links(self):
        for name, path in self.links:
            if os.path.islink(path) and not _inside(self.root, os.path.realpath(path)):
                _fail(name, "symlink target {!r} resolves outside the destination once all links exist"
                      .format(os.readlink(path)))


def safe_extract(source, dest, *, compression=None):
    """Extract the tarball *source* (a path or a binary file object) into the directory *dest* (created if needed).

    *compression*: None (detected), ``"gzip"``, ``"bzip2"``, ``"xz"`` or ``"none"``. Raises PonchoError
    (exit code 3) for an unsafe member (see the module docstring) or a corrupt/unsupported archive.
    """
    if compression not in _COMPRESSION:
        raise PonchoError("unknown compression {!r}; expected gzip, bzip2 or xz".format(compression))
    mode = "r|" + _COMPRESSION[compression]
    os.makedirs(dest, exist_ok=True)
    extractor = _Extractor(dest)
    own = isinstance(source, (str, bytes, os.PathLike))
    fileobj = open(source, "rb") if own else source
    try:
        with tarfile.open(fileobj=fileobj, mode=mode) as tar:
            for m in tar:
                extractor.member(tar, m)
        extractor.recheck_links()
    except PonchoError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise BuildError("cannot extract the archive: {}: {}".format(type(e).__name__, e))
    finally:
        if own:
            fileobj.close()
