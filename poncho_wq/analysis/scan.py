"""Static import scanning of Python source, and the per-file scan cache :mod:`poncho_wq.analysis.analyzer` walks with.

One file at a time, from the AST only (the code is never imported or run): :func:`scan_source` returns a
:class:`FileScan` with every import site (an :class:`ImportRef`, flagged ``OPTIONAL``, ``TYPE_CHECKING``,
``DYNAMIC``, ``TOPLEVEL``, and carrying the static conditions of the ``if`` blocks around it), the directories the
file puts on ``sys.path`` with static expressions, and the qualified names of its functions. Which import forms
count, and which are optional, is described in :mod:`poncho_wq.analysis.analyzer`; following local modules, deciding
which
branches are dead and resolving distributions happen there too.

Why conditions are kept rather than decided here: whether ``if __package__ or "." in __name__:`` (the guard every
SWIG-4 module starts with) is true depends on how the file is reached (as a package submodule or as a top-level
module), and ``sys.version_info`` tests depend on the target Python; the scan of a file is cached once for every
use. A condition is a small tuple (see :func:`condition`), evaluated by :func:`evaluate` for a :class:`Context`.

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
from typing import NamedTuple, Optional, Tuple

from ..config import settings
from ..errors import InputMissing, PonchoError, SpecError

log = logging.getLogger(__name__)

# Flags of one import site.
OPTIONAL = 1  # missing is fine: try/except ImportError, its fallback handler, contextlib.suppress(ImportError)
TYPE_CHECKING = 2  # under `if TYPE_CHECKING:`: never executed at run time
DYNAMIC = 4  # importlib.import_module("x") / __import__("x")
TOPLEVEL = 8  # not inside a function body: runs when the module is imported

# 2: import guards (ImportRef.guards), sys.path entries (FileScan.paths), non-identifier dynamic names skipped
SCANNER_VERSION = 2  # bump when the scan result format or the rules change: invalidates every cache shard
_IMPORT_ERRORS = frozenset(("ImportError", "ModuleNotFoundError", "Exception", "BaseException"))
_PARALLEL_MIN_FILES = 48
_RACY_SECONDS = 2.0


class ImportRef(NamedTuple):
    """One import site: ``module`` (dotted, "" for ``from . import x``), relative ``level``, the names of a
    from-import (possible submodules), line, flags, ``scope``: the enclosing class/function names, and
    ``guards``: ``((condition, branch), ...)`` of the enclosing ``if`` blocks whose test is understood (see
    :func:`condition`; *branch* is True in the body, False in the ``else``)."""

    module: str
    level: int
    names: Tuple[str, ...]
    lineno: int
    flags: int
    scope: Tuple[str, ...]
    guards: Tuple[Tuple[tuple, bool], ...] = ()


class PathEntry(NamedTuple):
    """A directory the file adds to ``sys.path``: ``where`` is "front" (``sys.path.insert``: searched before the
    installed packages) or "back" (``append``, ``extend``, ``site.addsitedir``); ``path`` is absolute, or relative
    to the working directory the script runs in."""

    where: str
    path: str
    lineno: int


@dataclasses.dataclass(frozen=True)
class FileScan:
    """Everything the analyzer keeps from one source file (what the cache stores)."""

    imports: Tuple[ImportRef, ...]
    functions: Tuple[str, ...]  # qualified names ("f", "C.m", "f.inner") of every def, for --function
    paths: Tuple[PathEntry, ...] = ()  # directories put on sys.path with static expressions

    def to_data(self):
        """Plain tuples, for :mod:`marshal` (the fastest loader of the standard library)."""
        return (tuple(tuple(i) for i in self.imports), self.functions, tuple(tuple(p) for p in self.paths))

    @classmethod
    def from_data(cls, data):
        imports, functions, paths = data
        make = tuple.__new__
        return cls(tuple(make(ImportRef, i) for i in imports), tuple(functions),
                   tuple(make(PathEntry, p) for p in paths))



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


# ------------------------------------------------------------------------------------------ static conditions
#
# A condition is a tuple: ("pkg",) for ``__package__`` (true in a package's modules), ("sub",) for
# ``"." in __name__`` (true in a submodule), ("ver", op, value, n) for ``sys.version_info[:n] op value`` (n None:
# the whole version_info), ("plat" | "osname" | "system", op, value) for ``sys.platform`` / ``os.name`` /
# ``platform.system()``, ("not", c), ("and", c...), ("or", c...), and ("?",) for anything else.

_UNKNOWN = ("?",)
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
        ast.NotIn: "not in"}
_SWAPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _dotted(expr):
    """``a.b.c`` of a Name/Attribute chain, else ""."""
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        parts.append(expr.id)
        return ".".join(reversed(parts))
    return ""


def _subject(expr):
    """(kind, n) of what a comparison tests, or None."""
    name = _dotted(expr)
    if name == "sys.version_info":
        return "ver", None
    if name in ("sys.version_info.major",):
        return "ver", 1
    if name == "sys.platform":
        return "plat", None
    if name == "os.name":
        return "osname", None
    if isinstance(expr, ast.Call) and not expr.args and _dotted(expr.func) == "platform.system":
        return "system", None
    if isinstance(expr, ast.Subscript) and _dotted(expr.value) == "sys.version_info":
        index = expr.slice
        if isinstance(index, ast.Constant) and index.value == 0:
            return "ver", 1
        if (isinstance(index, ast.Slice) and index.lower is None and index.step is None
                and isinstance(index.upper, ast.Constant) and isinstance(index.upper.value, int)):
            return "ver", index.upper.value
    return None


def _literal(expr):
    try:
        value = ast.literal_eval(expr)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, (str, int, tuple)) and not isinstance(value, bool):
        return value
    return None


def condition(test):
    """The condition tuple of an ``if`` test (see the comment above); ("?",) when it is not understood."""
    t = type(test)
    if t is ast.BoolOp:
        return ("and" if isinstance(test.op, ast.And) else "or",) + tuple(condition(v) for v in test.values)
    if t is ast.UnaryOp and isinstance(test.op, ast.Not):
        return ("not", condition(test.operand))
    if t is ast.Name and test.id == "__package__":
        return ("pkg",)
    name = _dotted(test)
    if name in ("six.PY2", "six.PY3"):
        return ("ver", "==", (int(name[-1]),), 1)
    if t is ast.Compare and len(test.ops) == 1:
        op = _OPS.get(type(test.ops[0]))
        left, right = test.left, test.comparators[0]
        if op == "in" and isinstance(left, ast.Constant) and left.value == "." and _dotted(right) == "__name__":
            return ("sub",)
        if op == "not in" and isinstance(left, ast.Constant) and left.value == "." and _dotted(right) == "__name__":
            return ("not", ("sub",))
        if op is None:
            return _UNKNOWN
        subject, value = _subject(left), _literal(right)
        if subject is None and op in _SWAPPED:
            subject, value, op = _subject(right), _literal(left), _SWAPPED[op]
        if subject is None or value is None:
            return _UNKNOWN
        kind, n = subject
        if kind == "ver":
            value = (value,) if isinstance(value, int) else value
            if not isinstance(value, tuple) or not all(isinstance(v, int) for v in value) or op in ("in", "not in"):
                return _UNKNOWN
            return ("ver", op, value, n)
        if not (isinstance(value, str) or (isinstance(value, tuple) and all(isinstance(v, str) for v in value))):
            return _UNKNOWN
        return (kind, op, value)
    if t is ast.Call and isinstance(test.func, ast.Attribute) and test.func.attr == "startswith" and len(
            test.args) == 1 and not test.keywords:
        subject, value = _subject(test.func.value), _literal(test.args[0])
        if subject is not None and subject[0] != "ver" and isinstance(value, (str, tuple)):
            return (subject[0], "startswith", value)
    return _UNKNOWN


class Context(NamedTuple):
    """What conditions are evaluated against: is the module in a package (``__package__`` set), is it a
    submodule (``"." in __name__``) -- None when unknown (a script may be run as a file or with ``-m``) --, the
    target's version tuple (major, minor, micro) and its ``sys.platform``, ``os.name`` and ``platform.system()``."""

    package: Optional[bool]
    submodule: Optional[bool]
    version: Tuple[int, ...]
    platform: str = "linux"
    os_name: str = "posix"
    system: str = "Linux"


def _compare(have, op, value):
    if op == "==":
        return have == value
    if op == "!=":
        return have != value
    if op == "<":
        return have < value
    if op == "<=":
        return have <= value
    if op == ">":
        return have > value
    if op == ">=":
        return have >= value
    if op == "in":
        return have in value
    if op == "not in":
        return have not in value
    if op == "startswith":
        return have.startswith(value)
    raise ValueError(op)


def evaluate(cond, ctx):
    """True, False, or None (unknown) for the condition tuple *cond* in :class:`Context` *ctx*."""
    kind = cond[0]
    if kind == "pkg":
        return ctx.package
    if kind == "sub":
        return ctx.submodule
    if kind == "not":
        inner = evaluate(cond[1], ctx)
        return None if inner is None else not inner
    if kind in ("and", "or"):
        values = [evaluate(c, ctx) for c in cond[1:]]
        if kind == "and":
            return False if False in values else (None if None in values else True)
        return True if True in values else (None if None in values else False)
    try:
        if kind == "ver":
            _, op, value, n = cond
            have = tuple(ctx.version)
            if n is None:
                if len(value) > len(have) and op not in ("==", "!="):
                    return None  # the micro version (or more) of the target is not known
                have = have + ("final", 0) if len(have) == 3 else have  # version_info's own length
            else:
                have = have[:n]
                if len(have) < n:
                    return None
            return _compare(have, op, tuple(value))
        if kind in ("plat", "osname", "system"):
            have = {"plat": ctx.platform, "osname": ctx.os_name, "system": ctx.system}[kind]
            return _compare(have, cond[1], cond[2])
    except (TypeError, ValueError):
        return None
    return None


# ------------------------------------------------------------------------------------------ static sys.path


_PATH_FUNCS = {"dirname", "abspath", "realpath", "normpath", "join", "Path", "PurePath", "PosixPath",
               "PurePosixPath", "str", "fspath", "getcwd"}


class _PathEval:
    """Evaluates the directory expressions of ``sys.path.insert(0, ...)`` and friends: string literals,
    ``__file__``, ``os.path.dirname/abspath/realpath/normpath/join``, ``pathlib.Path(...)`` with ``.parent``,
    ``.parents[n]``, ``.resolve()``, ``.absolute()``, ``.joinpath()`` and ``/``, ``str()``/``os.fspath()``, string
    ``+``, ``os.getcwd()`` (the working directory: "."), and module-level names assigned such values. Anything else
    is not static: None."""

    def __init__(self, filename):
        self.file = filename if filename and os.path.isabs(filename) else None
        self.names = {}

    def value(self, e, depth=0):
        if depth > 20:
            return None
        t = type(e)
        if t is ast.Constant:
            return e.value if isinstance(e.value, str) else None
        if t is ast.Name:
            return self.file if e.id == "__file__" else self.names.get(e.id)
        if t is ast.Attribute and e.attr == "parent":
            inner = self.value(e.value, depth + 1)
            return os.path.dirname(os.path.normpath(inner)) if inner is not None else None
        if t is ast.Subscript and isinstance(e.value, ast.Attribute) and e.value.attr == "parents":
            inner = self.value(e.value.value, depth + 1)
            if inner is None or not (isinstance(e.slice, ast.Constant) and isinstance(e.slice.value, int)):
                return None
            inner = os.path.normpath(inner)
            for _ in range(e.slice.value + 1):
                inner = os.path.dirname(inner)
            return inner
        if t is ast.BinOp:
            left, right = self.value(e.left, depth + 1), self.value(e.right, depth + 1)
            if left is None or right is None:
                return None
            if isinstance(e.op, ast.Div):
                return os.path.join(left, right)
            if isinstance(e.op, ast.Add):
                return left + right
            return None
        if t is ast.Call and not e.keywords:
            func = e.func
            if isinstance(func, ast.Attribute) and func.attr in ("resolve", "absolute") and not e.args:
                inner = self.value(func.value, depth + 1)
                return os.path.normpath(inner) if inner is not None else None
            if isinstance(func, ast.Attribute) and func.attr == "joinpath":
                parts = [self.value(a, depth + 1) for a in [func.value] + list(e.args)]
                return os.path.join(*parts) if None not in parts else None
            name = _dotted(func).rsplit(".", 1)[-1]
            if name not in _PATH_FUNCS:
                return None
            if name == "getcwd":
                return "." if not e.args else None
            args = [self.value(a, depth + 1) for a in e.args]
            if None in args or not args:
                return None
            if name == "dirname" and len(args) == 1:
                return os.path.dirname(args[0])
            if name in ("abspath", "realpath", "normpath", "str", "fspath") and len(args) == 1:
                return os.path.normpath(args[0]) if name != "str" and name != "fspath" else args[0]
            if name in ("join", "Path", "PurePath", "PosixPath", "PurePosixPath"):
                return os.path.join(*args)
        return None

    def assign(self, node):
        """Remember ``NAME = <static path>`` (module level and function bodies alike: names are few)."""
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = self.value(node.value)
            if value is not None:
                self.names[node.targets[0].id] = value
            else:
                self.names.pop(node.targets[0].id, None)

    def entries(self, call):
        """The :class:`PathEntry` values of a ``sys.path.insert/append/extend`` or ``site.addsitedir`` call."""
        name = _dotted(call.func)
        if name == "sys.path.insert" and len(call.args) == 2:
            where, exprs = "front", [call.args[1]]
        elif name == "sys.path.append" and len(call.args) == 1:
            where, exprs = "back", [call.args[0]]
        elif name == "sys.path.extend" and len(call.args) == 1 and isinstance(call.args[0], (ast.List, ast.Tuple)):
            where, exprs = "back", list(call.args[0].elts)
        elif name in ("site.addsitedir", "addsitedir") and call.args:
            where, exprs = "back", [call.args[0]]
        else:
            return []
        out = []
        for expr in exprs:
            value = self.value(expr)
            if value:
                out.append(PathEntry(where, os.path.normpath(value), call.lineno))
        return out


# --------------------------------------------------------------------------------------------------- scanner


def _relative_targets(body):
    """Top-level names a ``try`` body imports relatively (``from . import x`` -> x, ``from .m import y`` -> m)."""
    out = set()
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


class _Scanner:
    def __init__(self, dynamic, paths=None):
        self.dynamic = dynamic
        self.paths = paths  # a _PathEval when the source mentions sys.path or addsitedir
        self.imports = []
        self.functions = []
        self.path_entries = []
        self.guards = []
        self.fallback_for = frozenset()  # relative imports of the enclosing try: their absolute fallbacks are dead

    def add(self, module, level, names, lineno, flags, scope):
        guards = tuple(self.guards)
        if level == 0 and module.split(".")[0] in self.fallback_for:
            # `try: from . import _x` / `except ImportError: import _x`: the fallback runs only where the module
            # is not in a package (then the relative import cannot work)
            guards += ((("pkg",), False),)
        self.imports.append(ImportRef(module, level, names, lineno, flags, scope, guards))

    def branch(self, cond, taken, body, flags, scope):
        if cond == _UNKNOWN:
            self.stmts(body, flags, scope)
            return
        self.guards.append((cond, taken))
        try:
            self.stmts(body, flags, scope)
        finally:
            self.guards.pop()

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
                if _is_type_checking(node.test):
                    self.stmts(node.body, flags | TYPE_CHECKING, scope)
                    self.stmts(node.orelse, flags, scope)
                else:
                    cond = condition(node.test)
                    self.branch(cond, True, node.body, flags, scope)
                    self.branch(cond, False, node.orelse, flags, scope)
            elif t is ast.Try or t.__name__ == "TryStar":
                catches = [bool(_names_of(h.type) & _IMPORT_ERRORS) for h in node.handlers]
                self.stmts(node.body, flags | OPTIONAL if any(catches) else flags, scope)
                outer, relative = self.fallback_for, _relative_targets(node.body)
                for handler, catch in zip(node.handlers, catches):
                    if self.dynamic and handler.type is not None:
                        self.exprs(handler.type, flags, scope)
                    self.fallback_for = frozenset(relative) if catch and relative else outer
                    try:
                        self.stmts(handler.body, flags | OPTIONAL if catch else flags, scope)
                    finally:
                        self.fallback_for = outer
                self.stmts(node.orelse, flags, scope)
                self.stmts(node.finalbody, flags, scope)
            elif (t is ast.With or t is ast.AsyncWith) and _suppresses_import_error(node):
                self.stmts(node.body, flags | OPTIONAL, scope)
            else:
                if self.paths is not None:
                    if t is ast.Expr and type(node.value) is ast.Call:
                        self.path_entries += self.paths.entries(node.value)
                    elif t is ast.Assign:
                        self.paths.assign(node)
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
            if not all(part.isidentifier() for part in name[level:].split(".")):
                # `__import__("os;rm -rf /")`: no module can have that name; a string built for something else
                log.debug("ignoring %s(%r) at line %s: not a module name", fname, arg.value, node.lineno)
                continue
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
    paths = _PathEval(filename) if "sys.path" in text or "addsitedir" in text else None
    scanner = _Scanner(dynamic="import_module" in text or "__import__" in text, paths=paths)
    try:
        scanner.stmts(tree.body, TOPLEVEL, ())
    except RecursionError:  # nested statements the parser accepted but this recursive walk cannot follow
        raise _too_deep(filename, compiles=True)
    return FileScan(tuple(scanner.imports), tuple(scanner.functions), tuple(dict.fromkeys(scanner.path_entries)))


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
