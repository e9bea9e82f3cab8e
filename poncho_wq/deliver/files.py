"""Explicit task files: ``PonchoTask(..., files=["job.yaml", "data/"])`` for data the code reads by path.

Why a list of its own: the analysis follows imports, and package data ships with the packages it follows, but a
``job.yaml`` or a model read with ``open("my-model.h5")`` from the task's working directory is named by nothing
the analysis can see. Each file ships as a cached input under its relative name in the task sandbox (the task's
working directory), so the code finds it where it found it on the manager.

Rules (checked before anything is analyzed or built, so a typo costs nothing):

* an entry is a path (``str`` or ``os.PathLike``) or a pair ``(source path, name in the sandbox)``;
* a path is shipped under its path relative to the current directory (``data/x.csv`` stays ``data/x.csv``);
  an absolute path inside the current directory is treated the same way;
* a path outside the current directory (absolute, or reaching up with ``..``) is refused: the task sees only
  names relative to its sandbox, and silently shipping ``/data/cfg.yaml`` as ``cfg.yaml`` would hide that code
  reading the absolute path will not find it; give the pair ``("/data/cfg.yaml", "cfg.yaml")`` to say where it
  goes;
* a directory ships every regular file below it (caches, VCS and editor debris left out), one input each;
* a missing entry is :class:`~poncho_wq.errors.InputMissing` (exit code 2), one line naming the file and the fix;
* refused as :class:`~poncho_wq.errors.SpecError` (exit code 1): names poncho_wq itself puts in the sandbox (the
  shim ``poncho_package_run``, ``env-*.tar.gz``, ``code-*.tar.gz``: Work Queue keeps the first input of a name and
  drops the next with only a line on stderr), a name that is both a file and a directory of another (``a`` and
  ``a/b``), names that are not UTF-8 (the bindings take C strings), sandbox names with control or non-ASCII
  characters (Work Queue's protocol cut or mangled them) or too long (over 1024 characters, 255 per level), a
  source whose file name is too long for the workers' cache names, a directory with no file to ship (empty
  directories do not travel) and a directory holding a symbolic link to itself or a directory above it (a loop);
  the current directory itself (name what is in it).

Each file is attached as a content-named copy (:func:`poncho_wq.assemble.layers.content_copy`): Work Queue caches
inputs by
their *local path*, so a file attached by its own path after an edit would run with the old bytes.
"""

import os
import re
from typing import Any, Iterable, List, Tuple

from ..archive.cache import content_copy
from ..errors import InputMissing, SpecError
from ..fsutil import TOOL_STATE_DIRS
from ..identity import file_digest

#: Directory and file names never shipped from a directory entry (named explicitly, a file ships whatever it is).
_SKIP_DIRS = TOOL_STATE_DIRS | {".ipynb_checkpoints", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp")
_SKIP_FILES = frozenset({".DS_Store", "Thumbs.db"})

_FIX = "give a path relative to the current directory ({}) or a pair (source, name in the sandbox)"
#: What poncho_wq attaches to every task's sandbox under names of its own (see poncho_wq.task).
_RESERVED = re.compile(r"^(poncho_package_run|env-[^/]*\.tar\.gz|code-[^/]*\.tar\.gz)$")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_names(pairs: Iterable[Tuple[str, str]], who: str) -> None:
    """Refuse sandbox names the task could not get as given: a name poncho_wq uses itself, one that is also a
    directory of another name, and names or sources that are not UTF-8."""
    names = {}
    for src, arc in pairs:
        if _RESERVED.match(arc):
            raise SpecError("{} files: {} would be {} in the sandbox, a name poncho_wq uses for its own inputs (the "
                            "run shim and the environment tarballs); give it another name with a pair "
                            "(source, name)".format(who, src, arc))
        if not _utf8(arc) or not _utf8(src):
            raise SpecError("{} files: {!r} is not a UTF-8 name, which Work Queue and TaskVine cannot take; rename "
                            "the file, or give a pair (source, name) with a UTF-8 name (and a UTF-8 source "
                            "path)".format(who, arc if not _utf8(arc) else src))
        if not _SANDBOX_NAME.fullmatch(arc):
            raise SpecError("{} files: the sandbox name {!r} of {} has a control character or a non-ASCII "
                            "character, which Work Queue's protocol does not carry intact; give a pair (source, "
                            "name) with a name of printable ASCII characters".format(who, _bounded(arc), src))
        long = next((part for part in arc.split("/") if len(part.encode()) > 255), None)
        if long is not None or len(arc) > MAX_NAME:
            raise SpecError("{} files: the sandbox name {!r} of {} is too long ({} characters; at most {}, and 255 "
                            "per directory level): give a pair (source, shorter name)".format(
                                who, _bounded(arc), src, len(arc), MAX_NAME))
        if _wq_encoded(os.path.basename(src)) > MAX_CACHED_BASENAME:
            raise SpecError("{} files: the file name of {} is too long for the workers' caches (they name a cached "
                            "input after its file name, url-encoded, within 255 bytes); rename the file to at most "
                            "about {} plain characters".format(who, _bounded(src), MAX_CACHED_BASENAME))
        names[arc] = src
    for arc, src in names.items():
        parent = os.path.dirname(arc)
        while parent:
            if parent in names:
                raise SpecError("{} files: {} would be a file in the sandbox ({}) and also the directory of {} ({}); "
                                "give one of them another name with a pair (source, name)".format(
                                    who, parent, names[parent], arc, src))
            parent = os.path.dirname(parent)


#: What a sandbox name may hold: printable ASCII. A newline ends Work Queue's protocol line (the name arrived cut),
#: and non-ASCII names arrived mangled (issue 29).
_SANDBOX_NAME = re.compile(r"[ -~]+")
#: The longest sandbox name (a path below the sandbox) accepted.
MAX_NAME = 1024
#: Work Queue names a cached input ``file-<n>-<md5>-<url-encoded basename of the local file>`` (CCTools 7.x), in a
#: directory entry of at most 255 bytes: a longer one could not be created on the worker (INPUT_MISSING).
MAX_CACHED_BASENAME = 200


def _wq_encoded(name: str) -> int:
    """The length of *name* url-encoded as Work Queue does (3 bytes for blanks, controls, ``%\\<>'"`` and bytes
    above ``z``)."""
    return sum(3 if (b <= 32 or b > 122 or b in b"%\\<>'\"") else 1 for b in name.encode("utf-8", "surrogateescape"))


def _bounded(text: str) -> str:
    return text if len(text) <= 80 else text[:60] + "..." + text[-12:]


def _name_ok(name: str) -> bool:
    norm = os.path.normpath(name)
    return bool(name) and not os.path.isabs(norm) and norm != "." and not norm.startswith(".." + os.sep) \
        and norm != ".."


def _entry(item: Any, who: str) -> Tuple[str, str]:
    """``(absolute source, sandbox name)`` of one ``files=`` entry, not yet checked for existence."""
    if isinstance(item, tuple) and len(item) == 2:
        source, name = item
        if not isinstance(name, (str, os.PathLike)) or not isinstance(source, (str, os.PathLike)):
            raise SpecError("{} files: {!r} is not valid; expected (source path, name in the sandbox), both "
                            "strings".format(who, item))
        source, name = os.fspath(source), os.fspath(name)
        if not _name_ok(name):
            raise SpecError("{} files: the sandbox name {!r} of {} is not valid; expected a relative path inside the "
                            "sandbox such as 'cfg.yaml' or 'data/cfg.yaml'".format(who, name, source))
        return os.path.abspath(source), os.path.normpath(name)
    if isinstance(item, os.PathLike) or isinstance(item, str):
        path = os.fspath(item)
        if not isinstance(path, str) or not path.strip():
            raise SpecError("{} files: {!r} is not valid; expected a file or directory path".format(who, item))
        source = os.path.abspath(path)
        rel = os.path.relpath(source, os.getcwd())
        if rel == ".":
            raise SpecError("{} files: {} is the current directory itself; name the files or directories in it "
                            "that the task reads (files=['data', 'job.yaml'])".format(who, path))
        if not _name_ok(rel):
            raise SpecError("{} files: {} is outside the current directory, and a task sees its files under names "
                            "relative to its sandbox; pass ({!r}, {!r}) to ship it as {}, or {}".format(
                                who, path, path, os.path.basename(source), os.path.basename(source),
                                "run from a directory above it"))
        return source, rel
    raise SpecError("{} files: {!r} ({}) is not valid; expected a list of paths or (source, name) pairs".format(
        who, item, type(item).__name__))


def resolve_files(files: Iterable[Any], who: str = "PonchoTask") -> Tuple[Tuple[str, str], ...]:
    """``((absolute source, sandbox name), ...)`` for a ``files=`` argument, directories expanded, sorted by name.

    Raises :class:`~poncho_wq.errors.InputMissing` for a missing entry and :class:`~poncho_wq.errors.SpecError` for
    a bad one, or two different files given the same name."""
    if files is None:
        return ()
    if isinstance(files, dict):
        raise SpecError("{} files: a dict is not valid (which is the source, which the name?); give a list of "
                        "paths or (source, name in the sandbox) pairs, e.g. files=[{!r}]".format(
                            who, next(iter(files.items()), ("model.h5", "models/m.h5"))))
    if isinstance(files, (str, bytes, os.PathLike)):
        raise SpecError("{} files: {!r} is not valid; expected a list of paths, e.g. files=[{!r}]".format(
            who, files, os.fspath(files) if not isinstance(files, bytes) else files))
    try:
        items = list(files)
    except TypeError:
        raise SpecError("{} files: {!r} is not valid; expected a list of paths or (source, name) pairs".format(
            who, files)) from None
    out: dict = {}
    for item in items:
        source, name = _entry(item, who)
        if not os.path.exists(source):
            raise InputMissing("{} files: {} does not exist (looked for {}); create it, fix the path, or {}".format(
                who, item[0] if isinstance(item, tuple) else os.fspath(item), source,
                _FIX.format(os.getcwd())))
        expanded = _expand(source, name, who)
        if not expanded:
            raise SpecError("{} files: directory {} holds no file to ship (empty directories do not travel; caches "
                            "and VCS files are left out); create it in the task (os.makedirs), or leave it "
                            "out".format(who, source))
        for src, arc in expanded:
            old = out.setdefault(arc, src)
            if old != src:
                raise SpecError("{} files: two files would be {} in the sandbox: {} and {}; give one of them "
                                "another name with a pair (source, name)".format(who, arc, old, src))
    result = tuple(sorted(((src, arc) for arc, src in out.items()), key=lambda sa: sa[1]))
    check_names(result, who)
    return result


def _unreadable(path: str, who: str) -> InputMissing:
    return InputMissing("{} files: cannot read {} (permission denied); make it readable, or leave it out".format(
        who, path))


def _expand(source: str, name: str, who: str) -> List[Tuple[str, str]]:
    if os.path.isfile(source):
        if not os.access(source, os.R_OK):
            raise _unreadable(source, who)
        return [(source, name)]
    if not os.path.isdir(source):
        raise SpecError("{} files: {} is neither a regular file nor a directory; ship files only".format(who, source))
    out = []

    def refuse(error):
        raise InputMissing("{} files: cannot read {} ({}); make it readable, or leave it out".format(
            who, error.filename, error.strerror or error))

    # Symbolic links are followed (a link to a data set elsewhere ships its files), so a link to the directory
    # itself or one above it would be walked until the path is too long: refused, naming the link.
    chains = {source: frozenset([os.path.realpath(source)])}  # each directory's real path and its parents'
    for directory, dirs, names in os.walk(source, followlinks=True, onerror=refuse):
        chain = chains.pop(directory)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for d in dirs:
            real = os.path.realpath(os.path.join(directory, d))
            if real in chain:
                raise SpecError("{} files: {} is a symbolic link to {}, a directory it is in (a loop); remove it, or "
                                "name the files to ship".format(who, os.path.join(directory, d), real))
            chains[os.path.join(directory, d)] = chain | {real}
        for n in sorted(names):
            if n in _SKIP_FILES or n.endswith(_SKIP_SUFFIXES):
                continue
            path = os.path.join(directory, n)
            if os.path.isfile(path):
                if not os.access(path, os.R_OK):
                    raise _unreadable(path, who)
                out.append((path, os.path.normpath(os.path.join(name, os.path.relpath(path, source)))))
    return out


def merge_files(*groups: Iterable[Tuple[str, str]], who: str = "PonchoTask") -> Tuple[Tuple[str, str], ...]:
    """One ``(source, name)`` list from several (a task's scripts, its ``files=``, a project's data files): the
    same name from two different files is refused (which one would the code read?); same content is fine."""
    out: dict = {}
    for group in groups:
        for src, arc in group:
            old = out.setdefault(arc, src)
            if old != src and file_digest(old)[0] != file_digest(src)[0]:
                raise SpecError("{}: two different files would be {} in the sandbox: {} and {}; rename one, or give "
                                "it another name with files=[(source, name)]".format(who, arc, old, src))
    return tuple(sorted(((src, arc) for arc, src in out.items()), key=lambda sa: sa[1]))


def sandbox_inputs(explicit: Iterable[Tuple[str, str]], environment: Any = None,
                   scripts: Iterable[Tuple[str, str]] = (), who: str = "PonchoTask") -> List[Tuple[str, str]]:
    """``(content-named copy, sandbox name)`` for what a task attaches besides its environment: its resolved
    ``files=`` (*explicit*, from :func:`resolve_files`) and its environment's data files (a project's
    ``data_files``: :attr:`poncho_wq.assemble.environment.Environment.files`). *scripts* (``(source, name)``) are
    attached
    by the task already: a file with a script's name and content is left out, a different one refused."""
    scripts = tuple(scripts)
    data = tuple(getattr(environment, "files", ()) or ())
    check_names(data, who)  # a project's data_files: checked here, once they are known
    merged = merge_files(scripts, data, explicit, who=who)
    check_names(merged, who)  # a name of one group may be the directory of another's
    taken = {arc for _src, arc in scripts}
    out = []
    for src, arc in merged:
        if arc in taken:
            continue
        try:
            out.append((content_copy(src), arc))
        except OSError as e:  # removed or made unreadable since resolve_files() saw it
            raise InputMissing("{} files: cannot read {} for {} ({}); it changed since the task was made: submit "
                               "the task again".format(who, src, arc, e.strerror or e)) from None
    return out


__all__ = ["check_names", "merge_files", "resolve_files", "sandbox_inputs"]
