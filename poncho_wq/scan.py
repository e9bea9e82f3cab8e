"""Static import scanning of Python source, and the per-file scan cache :mod:`poncho_wq.analysis` walks with.

One file at a time, from the AST only (the code is never imported or run): :func:`scan_source` returns a
:class:`FileScan` with every import site (an :class:`ImportRef`, flagged ``OPTIONAL``, ``TYPE_CHECKING``,
``DYNAMIC``, ``TOPLEVEL``) and the qualified names of its functions. Which import forms count, and which are
optional, is described in :mod:`poncho_wq.analysis`; following local modules and resolving distributions happen
there too.

Speed: ``ast.parse`` dominates, and most of its cost is the cyclic garbage collector walking the millions of
node objects a big tree creates (AST nodes hold no reference cycles, so disabling it while parsing is safe). Only
statement lists are walked: imports are statements, so expressions are visited only when the source text
contains ``import_module``/``__import__`` at all. Cold runs over many files are parsed in forked worker
processes; warm runs read per-directory cache shards keyed on (path, size, mtime_ns).
"""

import ast
import concurrent.futures
import dataclasses
import gc
import hashlib
import logging
import marshal
import os
import sys
import tempfile
import threading
import time
from typing import NamedTuple, Tuple

from .config import settings
from .errors import InputMissing, PonchoError, SpecError

log = logging.getLogger(__name__)

# Flags of one import site.
OPTIONAL = 1  # missing is fine: try/except ImportError, its fallback handler, contextlib.suppress(ImportError)
TYPE_CHECKING = 2  # under `if TYPE_CHECKING:`: never executed at run time
DYNAMIC = 4  # importlib.import_module("x") / __import__("x")
TOPLEVEL = 8  # not inside a function body: runs when the module is imported

SCANNER_VERSION = 1  # bump when the scan result format or the rules change: invalidates every cache shard
_IMPORT_ERRORS = frozenset(("ImportError", "ModuleNotFoundError", "Exception", "BaseException"))
_PARALLEL_MIN_FILES = 48
_RACY_SECONDS = 2.0


class ImportRef(NamedTuple):
    """One import site: ``module`` (dotted, "" for ``from . import x``), relative ``level``, the names of a
    from-import (possible submodules), line, flags, and ``scope``: the enclosing class/function names."""

    module: str
    level: int
    names: Tuple[str, ...]
    lineno: int
    flags: int
    scope: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FileScan:
    """Everything the analyzer keeps from one source file (what the cache stores)."""

    imports: Tuple[ImportRef, ...]
    functions: Tuple[str, ...]  # qualified names ("f", "C.m", "f.inner") of every def, for --function

    def to_data(self):
        """Plain tuples, for :mod:`marshal` (the fastest loader of the standard library)."""
        return (tuple(tuple(i) for i in self.imports), self.functions)

    @classmethod
    def from_data(cls, data):
        imports, functions = data
        make = tuple.__new__
        return cls(tuple(make(ImportRef, i) for i in imports), tuple(functions))



# --------------------------------------------------------------------------------------------------- scanning


def _names_of(expr):
    """Exception class names an ``except`` clause catches (``None`` = bare except)."""
    if expr is None:
        return {"BaseException"}
    if isinstance(expr, ast.Tuple):
        out = set()
        for e in expr.elts:
            out |= _names_of(e)
        return out
    if isinstance(expr, ast.Name):
        return {expr.id}
    if isinstance(expr, ast.Attribute):
        return {expr.attr}
    return set()


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _suppresses_import_error(with_node):
    for item in with_node.items:
        call = item.context_expr
        if isinstance(call, ast.Call):
            fn = call.func
            fname = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if fname == "suppress" and any(_names_of(a) & _IMPORT_ERRORS for a in call.args):
                return True
    return False


class _Scanner:
    def __init__(self, dynamic):
        self.dynamic = dynamic
        self.imports = []
        self.functions = []

    def add(self, module, level, names, lineno, flags, scope):
        self.imports.append(ImportRef(module, level, names, lineno, flags, scope))

    def stmts(self, body, flags, scope):
        for node in body:
            t = type(node)
            if t is ast.Import:
                for alias in node.names:
                    self.add(alias.name, 0, (), node.lineno, flags, scope)
            elif t is ast.ImportFrom:
                if node.module == "__future__":
                    continue
                self.add(node.module or "", node.level or 0, tuple(a.name for a in node.names), node.lineno,
                         flags, scope)
            elif t is ast.FunctionDef or t is ast.AsyncFunctionDef:
                self.functions.append(".".join(scope + (node.name,)))
                if self.dynamic:
                    for expr in node.decorator_list + [node.args]:
                        self.exprs(expr, flags, scope)
                self.stmts(node.body, flags & ~TOPLEVEL, scope + (node.name,))
            elif t is ast.ClassDef:
                if self.dynamic:
                    for expr in node.decorator_list + node.bases + node.keywords:
                        self.exprs(expr, flags, scope)
                self.stmts(node.body, flags, scope + (node.name,))
            elif t is ast.If:
                if self.dynamic:
                    self.exprs(node.test, flags, scope)
                self.stmts(node.body, flags | TYPE_CHECKING if _is_type_checking(node.test) else flags, scope)
                self.stmts(node.orelse, flags, scope)
            elif t is ast.Try or t.__name__ == "TryStar":
                catches = [bool(_names_of(h.type) & _IMPORT_ERRORS) for h in node.handlers]
                self.stmts(node.body, flags | OPTIONAL if any(catches) else flags, scope)
                for handler, catch in zip(node.handlers, catches):
                    if self.dynamic and handler.type is not None:
                        self.exprs(handler.type, flags, scope)
                    self.stmts(handler.body, flags | OPTIONAL if catch else flags, scope)
                self.stmts(node.orelse, flags, scope)
                self.stmts(node.finalbody, flags, scope)
            elif (t is ast.With or t is ast.AsyncWith) and _suppresses_import_error(node):
                self.stmts(node.body, flags | OPTIONAL, scope)
            else:
                for value in ast.iter_child_nodes(node):
                    if isinstance(value, ast.stmt):
                        continue  # reached through the list fields below
                    if isinstance(value, (ast.expr, ast.withitem, ast.keyword)):
                        if self.dynamic:
                            self.exprs(value, flags, scope)
                    elif hasattr(value, "body"):  # match_case, excepthandler-like containers
                        if self.dynamic and getattr(value, "guard", None) is not None:
                            self.exprs(value.guard, flags, scope)
                        self.stmts(value.body, flags, scope)
                for field in ("body", "orelse", "finalbody"):
                    sub = getattr(node, field, None)
                    if isinstance(sub, list):
                        self.stmts(sub, flags, scope)

    def exprs(self, expr, flags, scope):
        for node in ast.walk(expr):
            if type(node) is not ast.Call or not node.args:
                continue
            fn = node.func
            fname = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if fname not in ("import_module", "__import__"):
                continue
            arg = node.args[0]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.strip(". ")):
                continue
            name = arg.value.strip()
            level = len(name) - len(name.lstrip("."))
            if fname == "__import__":
                level = 0
            self.add(name[level:], level, (), node.lineno, flags | DYNAMIC, scope)


def scan_source(source, filename):
    """Scan one file's source (str or bytes) and return its :class:`FileScan`; a syntax error is a PonchoError
    naming the file and line."""
    try:
        was_enabled = gc.isenabled()
        gc.disable()  # see the module docstring: the collector, not the parser, is the slow part
        try:
            tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        finally:
            if was_enabled:
                gc.enable()
    except SyntaxError as e:
        where = "{}:{}".format(filename, e.lineno) if e.lineno else filename
        raise SpecError("{}: syntax error: {}".format(where, e.msg))
    except (ValueError, UnicodeDecodeError) as e:  # null bytes, undecodable text
        raise SpecError("{}: cannot be parsed as Python source: {}".format(filename, e))
    except (RecursionError, MemoryError):
        # CPython's parser gives up on deep nesting with these instead of a SyntaxError: MemoryError for
        # `x = ----...1` (200,000 unary minus: its own stack overflows), RecursionError while building the AST for
        # 3,000 chained `+`. Python itself could not compile such a file either.
        raise _too_deep(filename)
    text = source if isinstance(source, str) else source.decode("latin-1")
    scanner = _Scanner(dynamic="import_module" in text or "__import__" in text)
    try:
        scanner.stmts(tree.body, TOPLEVEL, ())
    except RecursionError:  # nested statements the parser accepted but this recursive walk cannot follow
        raise _too_deep(filename, compiles=True)
    return FileScan(tuple(scanner.imports), tuple(scanner.functions))


def _too_deep(filename, compiles=False):
    return SpecError("{}: nested too deeply to analyze{}; simplify the file or leave it out of the scripts and "
                     "directories given".format(filename, "" if compiles else " (Python cannot compile it either)"))


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputMissing("{} does not exist".format(path))
    except OSError as e:
        raise InputMissing("cannot read {}: {}".format(path, e.strerror or e))


def scan_file(path):
    """Read and scan one file (no cache)."""
    return scan_source(_read(path), path)


def _scan_chunk(paths):
    """Worker-process entry point: scan several files; errors come back as values (PonchoError pickles badly
    across versions, and the parent must report the first one in a stable order). Any other exception a file
    causes is turned into a value too: raised in a worker, it would surface in the parent as a pickled traceback
    (or a broken pool) instead of one line naming the file."""
    out = []
    for p in paths:
        try:
            out.append((p, scan_file(p), None))
        except PonchoError as e:
            out.append((p, None, (str(e), e.exit_code)))
        except Exception as e:  # a parser or scanner bug on an odd file: still report it against that file
            log.debug("scanning %s failed", p, exc_info=True)
            out.append((p, None, ("{}: cannot be analyzed: {}: {}".format(p, type(e).__name__, e), 1)))
    return out


# ------------------------------------------------------------------------------------------------------- cache


def cache_dir():
    """The build cache's root (:attr:`poncho_wq.config.Settings.cache_dir`): the scan cache lives beside it."""
    return settings().cache_dir


class ScanCache:
    """Scan results per source file, keyed on (absolute path, size, mtime_ns), one shard per directory.

    Why shards per directory: a warm run over a 1,500-file tree then reads ~100 small files instead of 1,500,
    and a shard is rewritten only when one of its files changed. Each shard is replaced atomically (temp file +
    rename), so a reader never sees a half-written one; two writers racing lose one update, which only costs a
    re-parse next time. Shards carry the scanner version and the Python minor version (the grammar differs,
and shards are :mod:`marshal` data, whose format is tied to the Python version; they are only ever read
back by this code from the user's own cache directory).

    Why files modified in the last couple of seconds are not stored ("racy git"): a file rewritten within the
    file system's timestamp granularity with the same size would keep its (size, mtime_ns) key, and a stale
    result would be served forever. Such files are simply parsed again next time.
    """

    _memo: dict = {}  # process-wide: path -> (size, mtime_ns, FileScan); makes a repeated analyze() cheap

    def __init__(self, enabled=True, root=None):
        self.enabled = enabled
        self.root = os.path.join(root or cache_dir(), "analyze")
        self._shards = {}
        self._dirty = set()
        self._tag = "{}-py{}.{}".format(SCANNER_VERSION, *sys.version_info[:2])

    def _shard_path(self, directory):
        return os.path.join(self.root, hashlib.sha256(directory.encode("utf-8", "surrogateescape")).hexdigest()[:32]
                            + ".marshal")

    def _shard(self, directory):
        shard = self._shards.get(directory)
        if shard is None:
            shard = {}
            try:
                with open(self._shard_path(directory), "rb") as f:
                    data = marshal.loads(f.read())
                if data.get("tag") == self._tag and data.get("dir") == directory:
                    shard = data["files"]
            except (OSError, ValueError, KeyError, TypeError, EOFError, AttributeError):
                pass
            self._shards[directory] = shard
        return shard

    def get(self, path, st):
        if not self.enabled:
            return None  # use_cache=False: a full fresh pass, the in-process memo included
        key = (st.st_size, st.st_mtime_ns)
        hit = self._memo.get(path)
        if hit is not None and hit[:2] == key:
            return hit[2]
        directory, name = os.path.split(path)
        entry = self._shard(directory).get(name)
        if entry is not None and entry[0] == key[0] and entry[1] == key[1]:
            try:
                scan = FileScan.from_data(entry[2])
            except (ValueError, TypeError):
                return None
            self._memo[path] = key + (scan,)
            return scan
        return None

    def put(self, path, st, scan):
        if time.time() - st.st_mtime_ns / 1e9 < _RACY_SECONDS:
            return
        if not self.enabled:
            return
        self._memo[path] = (st.st_size, st.st_mtime_ns, scan)
        directory, name = os.path.split(path)
        self._shard(directory)[name] = (st.st_size, st.st_mtime_ns, scan.to_data())
        self._dirty.add(directory)

    def _run_path(self, key):
        return os.path.join(self.root, "runs", key + ".marshal")

    def load_run(self, key):
        if not self.enabled:
            return None
        try:
            with open(self._run_path(key), "rb") as f:
                tag, data = marshal.loads(f.read())
            return data if tag == self._tag else None
        except (OSError, ValueError, EOFError, TypeError):
            return None

    def store_run(self, key, data):
        path = self._run_path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps((self._tag, data)))
            os.replace(tmp, path)
        except (OSError, ValueError) as e:
            log.debug("cannot write analyze run cache: %s", e)

    def flush(self):
        """Write the changed shards; a cache that cannot be written is only a slower next run, not an error."""
        if not self._dirty:
            return
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as e:
            log.debug("analyze cache %s not writable: %s", self.root, e)
            self._dirty.clear()
            return
        for directory in sorted(self._dirty):
            data = {"tag": self._tag, "dir": directory, "files": self._shards[directory]}
            try:
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
                with os.fdopen(fd, "wb") as f:
                    f.write(marshal.dumps(data))
                os.replace(tmp, self._shard_path(directory))
            except OSError as e:
                log.debug("cannot write analyze cache shard for %s: %s", directory, e)
        self._dirty.clear()


def scan_files(paths, cache):
    """Scan many files through *cache*: returns {path: FileScan}; the first failing file (in the given order)
    raises its PonchoError. Uncached files are parsed in forked workers when there are many of them."""
    result, todo = {}, []
    stats = {}
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise InputMissing("{} does not exist".format(p))
        except OSError as e:
            raise InputMissing("cannot read {}: {}".format(p, e.strerror or e))
        stats[p] = st
        scan = cache.get(p, st)
        if scan is None:
            todo.append(p)
        else:
            result[p] = scan
    errors = {}
    for p, scan, err in _parse_many(todo):
        if err:
            errors[p] = err
        else:
            result[p] = scan
            cache.put(p, stats[p], scan)
    for p in paths:
        if p in errors:
            message, code = errors[p]
            raise {1: SpecError, 2: InputMissing}.get(code, PonchoError)(message, exit_code=code)
    return result


def _parse_many(paths):
    workers = min(os.cpu_count() or 1, 8)
    # fork only: spawn/forkserver children re-import the parent's __main__, which for a library call is the
    # user's (possibly unguarded) script. Forking is unsafe with other threads alive, so then stay serial.
    if (len(paths) < _PARALLEL_MIN_FILES or workers < 2 or threading.active_count() > 1
            or sys.platform != "linux" or settings().analyze_serial):
        return _scan_chunk(paths)
    import multiprocessing

    # Chunks balanced by size, several per worker so one big file does not leave a core idle.
    order = sorted(paths, key=lambda p: -os.path.getsize(p))
    nchunks = workers * 4
    chunks = [order[i::nchunks] for i in range(nchunks)]
    out = []
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
            for part in ex.map(_scan_chunk, [c for c in chunks if c]):
                out.extend(part)
    except (OSError, concurrent.futures.process.BrokenProcessPool) as e:
        log.debug("parallel scan failed (%s); scanning serially", e)
        return _scan_chunk(paths)
    return out
