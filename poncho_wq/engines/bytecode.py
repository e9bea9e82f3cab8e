"""Bytecode for every environment, compiled at build time by the environment's own interpreter.

Why: without ``.pyc`` files in the tarball every task compiles every library module it imports, on every worker,
every time (the run directory is shared and tasks are short, so nothing warms): ``import sympy`` took 5x longer
than in a venv with pip's bytecode. Compiling once here moves that cost to the build.

How, and why each choice:

* **checked-hash** pycs (PEP 552): valid whatever the files' mtimes (the reproducible packer fixes every mtime,
  which made conda's own timestamp pycs stale), and still checked against the source, so a ``.py`` that
  ``conda-unpack`` rewrites on the worker is compiled again (in memory) instead of running stale code. Checking
  costs one read and one SipHash of the source per import, far less than compiling it.
* **The environment's interpreter** compiles (``<prefix>/bin/python``, isolated mode): the magic number must be
  the target's, which for a conda spec is not the manager's Python.
* **Recorded paths without the build prefix**: the source path recorded in each code object is rewritten from the
  build prefix to ``/poncho-env``. The import system replaces it with the real path when it loads the pyc, and a
  pyc holding the build prefix would be handed to conda-unpack as a binary file to patch, which breaks marshal
  data. For the same reason a ``.py`` whose text contains the build prefix (``_sysconfigdata``, some conda
  packages) is not compiled: it is rewritten on the worker anyway.
* ``force``: conda packages ship timestamp pycs; they are replaced by checked-hash ones.
* **A pyc cache** under the build cache (``<cache>/bytecode/``), keyed by the interpreter's magic number, the
  recorded path and the source bytes: compiling is most of a build's time for large packages (pandas: 3.7 s of
  8 s), and a rebuild after adding one dependency would otherwise compile every other package again. A pyc is
  a pure function of that key, so a cached one is the same bytes a compile would give.
* **Started early** (:func:`start_early`): the portable engine starts the compile script as soon as the
  interpreter is in the prefix, and uv installs meanwhile; the script reads the site directories when its input
  comes. A small environment's build no longer waits for an interpreter to start after uv (issue 27).
"""

import contextlib
import contextvars
import os

from ..tools import StartedTool

#: What the recorded source paths start with instead of the build prefix.
RECORDED_PREFIX = "/poncho-env"

# Runs under the environment's own interpreter: compile what is on its sys.path inside the prefix. A pyc that is
# already the checked-hash pyc of its very source (the interpreter base's stdlib, compiled once per interpreter and
# hard-linked into the prefix) is kept: no work, and no write near a file shared with the base.
_COMPILE = r"""
import hashlib, importlib.util, os, py_compile, sys
# Input on stdin, NUL-separated (paths as the file system has them): prefix, recorded prefix, pyc cache, base
# tree, then the directories left out of the archive. It may come long after this process started (see
# start_early): it started with -S, and reads the site directories only now that the installer is done with them.
# site.main() is the documented way to do here what a start without -S does (.pth files, sitecustomize).
fields = [os.fsdecode(f) for f in sys.stdin.buffer.read().split(b"\0")]
if len(fields) < 4:
    sys.exit("no input: the build that started this compiler stopped before its packages were installed")
prefix, recorded, store, base = fields[:4]
skip = set(p for p in fields[4:] if p)
import site
site.main()
needle = prefix.encode()
magic = importlib.util.MAGIC_NUMBER
dirs = []
for d in sys.path:
    d = os.path.abspath(d)
    if os.path.isdir(d) and (d + os.sep).startswith(prefix + os.sep) and d not in dirs:
        dirs.append(d)
roots = [d for d in dirs if not any(d != o and (d + os.sep).startswith(o + os.sep) for o in dirs)]
made = set()
def inodes(d):
    try:
        with os.scandir(d) as it:
            return {e.name: e.inode() for e in it}
    except OSError:
        return {}
def place(src, dst):
    # A pyc of the cache is the same bytes whoever made it: hard-linked (one system call, no copy), copied where
    # a link cannot be made (another file system); never written in place (a new inode: a linked file stays).
    d = os.path.dirname(dst)
    if d not in made:
        os.makedirs(d, exist_ok=True)
        made.add(d)
    tmp = "{}.tmp-{}".format(dst, os.getpid())
    try:
        os.link(src, tmp)
    except OSError:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            fo.write(fi.read())
    os.replace(tmp, dst)
# One pass reads each source once: the pyc already in place (the interpreter base's stdlib, hard-linked into the
# prefix, is kept), else the pyc cache's by the key of the source's bytes (linked here, no process started), else
# it is compiled below.
todo, cached = [], 0
for d in roots:
    for root, subdirs, files in os.walk(d):
        subdirs[:] = sorted(s for s in subdirs if s != "__pycache__" and os.path.join(root, s) not in skip)
        # A source and its pyc that are still the interpreter base's own files (hard links: the same inodes as in
        # the base's tree) were compiled with the base: neither is read again (the stdlib: 700 files).
        same = same_pyc = set()
        if base:
            there = base + root[len(prefix):]
            here_i, there_i = inodes(root), inodes(there)
            pyc_here, pyc_there = inodes(os.path.join(root, "__pycache__")), inodes(os.path.join(there, "__pycache__"))
            same = {n for n, i in here_i.items() if there_i.get(n) == i}
            same_pyc = {n for n, i in pyc_here.items() if pyc_there.get(n) == i}
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            p = os.path.join(root, f)
            if f in same and os.path.basename(importlib.util.cache_from_source(p)) in same_pyc:
                continue
            try:
                with open(p, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if needle in data:
                continue
            cfile = importlib.util.cache_from_source(p)
            try:
                with open(cfile, "rb") as fh:
                    head = fh.read(16)
                if head == magic + b"\x03\0\0\0" + importlib.util.source_hash(data):
                    continue
            except (OSError, ValueError):
                pass
            dfile = recorded + p[len(prefix):]
            kept = None
            if store:
                key = hashlib.sha256(magic + dfile.encode() + b"\0" + data).hexdigest()
                kept = os.path.join(store, key[:2], key + ".pyc")
                try:
                    place(kept, cfile)
                    cached += 1
                    continue
                except OSError:
                    pass
            todo.append((p, cfile, dfile, kept))
def one(job):
    p, cfile, dfile, kept = job
    try:
        py_compile.compile(p, cfile=cfile, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    except (py_compile.PyCompileError, SyntaxError, UnicodeError, OSError, ValueError):
        return 0  # not Python 3 (some packages ship Python 2 leftovers or templates): pip skips them too
    if kept:
        try:
            place(cfile, kept)
        except OSError:
            pass  # a full or read-only cache only costs the next build a compile
    return 1
if len(todo) > 64 and (os.cpu_count() or 1) > 1:
    import concurrent.futures, multiprocessing  # only here: most builds take everything from the pyc cache
    # fork: the workers run one() of this -c script, which a spawned or forkserver child (Python 3.14's default on
    # Linux) cannot import
    fork = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    with concurrent.futures.ProcessPoolExecutor(mp_context=fork) as pool:
        sum(pool.map(one, todo, chunksize=32))
else:
    sum(one(job) for job in todo)
print(len(todo), cached)
"""


def _python(prefix):
    for name in ("python3", "python"):
        python = os.path.join(prefix, "bin", name)
        if os.path.exists(python):
            return python
    return None


def _start(prefix):
    """The compile script started under *prefix*'s interpreter, waiting for its input; None without one."""
    python = _python(prefix)
    if python is None:
        return None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    return StartedTool([python, "-I", "-S", "-c", _COMPILE],
                       "compiling the environment's bytecode with {}".format(python), env=env)


def compile_tree(prefix, store=None, base_tree=None, skip=(), started=None):
    """Compile the ``.py`` files on the ``sys.path`` of *prefix*'s interpreter, inside *prefix*, to checked-hash
    pycs, taking those already in the pyc cache *store* (a directory; None: no cache) from there; returns how many
    were compiled and how many taken from the cache (None: no interpreter, e.g. a data-only spec). Files that do
    not compile (Python 2 leftovers in some packages, templates) are skipped, as pip does. *skip*: directories
    (relative to *prefix*) left alone, with all below them: the packer leaves them out (packages' tests).
    *started*: the script already started for *prefix* (:func:`start_early`), else it is started now."""
    prefix = os.path.abspath(prefix)
    tool = started or _start(prefix)
    if tool is None:
        return None
    fields = [prefix, RECORDED_PREFIX, store or "", os.path.abspath(base_tree) if base_tree else ""]
    fields += [os.path.join(prefix, d) for d in sorted(skip)]
    r = tool.finish(b"\0".join(os.fsencode(f) for f in fields))
    compiled, cached = (int(x) for x in r.stdout.split())
    return compiled, cached


# prefix -> the compile script started ahead for it, within one early_compilers() block
_EARLY = contextvars.ContextVar("poncho_wq_early_compilers", default=None)


@contextlib.contextmanager
def early_compilers(enabled=True):
    """Within the block, :func:`start_early` starts a prefix's compile script ahead of its use, and
    :func:`compile_prefix` takes it; one that was never used (the build failed first) is killed on the way out.
    *enabled*: False when the block's build compiles nothing (a cross-architecture target)."""
    started = {}
    token = _EARLY.set(started if enabled else None)
    try:
        yield
    finally:
        _EARLY.reset(token)
        for tool in started.values():
            tool.abort()


def start_early(prefix):
    """Start *prefix*'s compile script now, for :func:`compile_prefix` to use later in the same
    :func:`early_compilers` block (a no-op outside one).

    Why: the script is an interpreter start and a few imports, 30-70 ms of a small build (more on a loaded
    machine). Started once the interpreter is in the prefix and before the installer runs, it starts while the
    installer waits on the network; it reads its input (and the site directories) only when it gets it."""
    started = _EARLY.get()
    prefix = os.path.abspath(prefix)
    if started is not None and prefix not in started:
        tool = _start(prefix)
        if tool is not None:
            started[prefix] = tool


def compile_prefix(prefix, progress, root, base_tree=None, skip=()):
    """:func:`compile_tree` as the build's "bytecode" phase, with the pyc cache under the build cache *root*
    (None: ``--no-cache`` builds write nothing to a cache); *base_tree*: the interpreter base's tree placed into
    *prefix* by hard links (its files still linked are already compiled); *skip*: see :func:`compile_tree`."""
    started = (_EARLY.get() or {}).pop(os.path.abspath(prefix), None)
    with progress.phase("bytecode") as phase:
        try:
            n = compile_tree(prefix, os.path.join(root, "bytecode") if root else None, base_tree, skip, started)
        finally:
            if started is not None:
                started.abort()  # a no-op once finished
        if phase is not None and n is not None:
            phase.note("{} module(s) compiled, {} from the pyc cache".format(*n))
