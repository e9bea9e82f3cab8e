"""TaskVine adapter: poncho_wq environments on TaskVine's own execution-context protocol, for tasks, serverless
libraries and DaskVine.

TaskVine unpacks an environment once per worker with a mini task (ours, :data:`UNPACK_COMMAND`: the run shim's
``--extract-to``, with pigz when the worker has it, instead of ``declare_poncho``'s single ``tar xf``), moves
``output`` into the worker cache as ``__vine_env_<id>`` and runs each task as
``__vine_env_<id>/bin/run_in_env <command>``.
Every poncho_wq tarball carries ``bin/run_in_env`` (POSIX sh), which relocates the environment lazily at its
final location (once, under a lock: upstream never runs ``conda-unpack`` on this path) and then activates it.

    from ndcctools import taskvine as vine
    from poncho_wq.taskvine import PonchoVineTask, create_library, declare_environment, dask_environment

    m = vine.Manager(port=0)
    m.submit(PonchoVineTask(m, "python3 job.py 7"))         # ships job.py and its local modules
    lib = create_library(m, "lib", my_func)                  # serverless: analyzed env + TaskVine's runtime
    m.install_library(lib); m.submit(vine.FunctionCall("lib", "my_func", 1))
    graph.compute(scheduler=dv.get, environment=dask_environment(dv))   # DaskVine, declared once

Why the serverless and DaskVine environments need more than the analysis gives: on the worker, TaskVine's
generated ``library_code.py`` imports ``cloudpickle``, ``threadpoolctl`` and ``ndcctools.taskvine.utils`` (which
loads ``_cvine.so`` and, through the package ``__init__``, ``packaging``); DaskVine's tasks unpickle
``ndcctools.taskvine.dask_executor.execute_graph_vertex``. ``ndcctools`` is not on PyPI, so the manager's own
installed copy is shipped as a wheel (:mod:`poncho_wq.deliver.ndcctools_wheel`).

Declared environments are remembered per manager in a :class:`weakref.WeakKeyDictionary`: declaring the same
tarball again returns the same ``File`` (workers unpack it once), and a manager that is no longer used is freed.
"""

import importlib
import importlib.metadata
import inspect
import logging
import os
import re
import site
import sys
import sysconfig
import threading
import time
import weakref
from typing import Optional

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .analysis.analyzer import MANAGER_ONLY
from .analysis.import_extras import extra_distributions
from .assemble.environment import Environment, as_environment
from .assemble.layers import content_copy, vine_layer
from .deliver.ndcctools_wheel import ndcctools_requirement
from .errors import ActivationError, PonchoError, SpecError
from .config import settings
from .deliver.files import resolve_files, sandbox_inputs
from .deliver.fetch import NOTE_MARK, STALL_SECONDS, fetch_script
from .deliver.publish import as_distribution, fetch_for
from .shim import RUN_IN_ENV, ShimError  # also for users: PonchoVineTask.shim_error() returns one
from .shim import shim_path
from .shim import shim_error_from as _shim_error_from
from .spec import parse_spec
from .task import _parts_of, _short_repr, check_command_argument, check_environment_argument, task_layers
from .waiting import watch, worker_program
from .worker import fetch_sections
from .wq import quiet_at_exit

#: What TaskVine's serverless library runtime imports on the worker besides the functions' own needs
#: (ndcctools 7.17.1 ``poncho/library_network_code.py`` and ``taskvine/__init__.py``).
LIBRARY_RUNTIME = ("cloudpickle", "threadpoolctl", "packaging")
#: What DaskVine's tasks (and, in ``task_mode="function-calls"``, its library) import on the worker.
DASK_RUNTIME = LIBRARY_RUNTIME + ("dask",)


#: TaskVine's cache level for environments, code layers and the tarballs they come from (those named by content
#: excepted: :func:`_tarball_cache`) (issue 27), so that the next
#: manager's tasks on a worker find them ready (no transfer, no unpack): levels above "workflow" (``cache=True``,
#: deleted when the manager disconnects) name files by content. Not "worker": TaskVine 7.17.1's worker loads its cache
#: directory anew at every manager connection and deletes there whatever is below "forever" (vine_cache_load), so a
#: "worker" file does not reach the next manager either (measured: the second manager sent the whole tarball again).
#: "forever" files stay in the worker's workspace, which the worker removes when it exits (unless it runs with
#: ``--keep-workspace``): in effect the worker's lifetime.
ENV_CACHE = "forever"


#: A tarball named by its content: the build cache's ``env-<hex>.tar.gz``, a code layer's ``code-<hex>.tar.gz``.
_CONTENT_NAMED = re.compile(r"(env|code)-[0-9a-f]{16,}\.tar\.gz\Z")


def _tarball_cache(path):
    """The cache level to declare the tarball *path* at, whose unpacked output (the unpack mini task's) is at
    :data:`ENV_CACHE`. TaskVine 7.17.1 names a file at the "worker" or "forever" level by an md5 of its content,
    read in full in every new manager process (vine_cached_name: 0.03-0.04 s of a second workflow's first task on
    an 11.9 MB tarball, about 3 ms per MB), and a file below them by its path, size and mtime (vine_meta_name: a
    stat). A tarball named by its content needs no second digest, so it is declared at the workflow level: what the
    next manager reuses is the mini task's output, still "forever", whose name (an md5 of the mini task's
    definition, its inputs' names included) is the same in every manager process for the same file, and the
    tarball itself no longer stays on the worker beside its unpacked copy. The build cache and the code layers give
    their tarballs an mtime derived from their content (:func:`poncho_wq.identity.set_content_mtime`), so a
    same-content rebuild (after ``cache prune``) keeps that name, and the workers their unpacked copy. Any other
    tarball stays at "forever" (named by content: it may be rewritten under the same name)."""
    return True if _CONTENT_NAMED.match(os.path.basename(path)) else ENV_CACHE


def _env_cache(distribution):
    """The cache level of an environment: :data:`ENV_CACHE`, except in ``url`` mode, whose fetch mini task stays at
    the workflow level: a failed fetch leaves a stub environment (:data:`_FETCH_STUB`) that must not outlive the
    workflow, and at the "forever" level the lying-server test's fetch stalled (not understood yet)."""
    return ENV_CACHE if as_distribution(distribution).mode in ("direct", "serve") else True

_declared: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # manager -> {tarball abspath: File}
_sources: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # manager -> {tarball abspath: source File}
_declared_lock = threading.Lock()


def _vine():
    try:
        from ndcctools import taskvine
    except ImportError as e:
        raise PonchoError("poncho_wq.taskvine needs CCTools' Python bindings (ndcctools.taskvine): {}; install "
                          "conda-forge's ndcctools or build CCTools with Python support".format(e))
    quiet_at_exit(*(v for v in vars(taskvine).values() if isinstance(v, type) and callable(getattr(v, "__del__", None))
                    and getattr(v, "__module__", "").startswith("ndcctools.taskvine")))
    return taskvine


# -- environments ---------------------------------------------------------------------------------------------
def declare_environment(manager, environment=None, command=None, *, distribution=None, seed=None):
    """Declare *environment* to a TaskVine manager as a poncho package; return the File for ``add_environment``
    (also what DaskVine's ``environment=`` and ``FunctionCall`` libraries take).

    *environment*: a tarball path, a spec (path, dict or Spec), an :class:`Environment`, or None (analyze
    *command*'s scripts and ``__main__``). Declared once per manager and tarball: many tasks share the same
    worker-side copy, which TaskVine unpacks once per worker.

    Where the tarball comes from (issue 16): *distribution* (a mode name or :class:`poncho_wq.deliver.publish.Delivery`;
    default from ``PONCHO_WQ_DISTRIBUTION`` / ``PONCHO_WQ_PUBLISH_DIR`` / ``PONCHO_WQ_PUBLISH_URL``): ``direct``
    sends it from the manager; ``url`` publishes it and each worker fetches it itself (:func:`_source_file`).
    *seed* (seconds; default ``PONCHO_WQ_VINE_SEED``, 0 = off): let one worker get the tarball first, then every
    other worker from its peers (:func:`_seeded`); this call then waits, at most that long, for the first copy.
    With ``PONCHO_WQ_PARTS=1`` in ``direct`` or ``url`` mode, the environment is declared as its content-addressed
    parts instead (:func:`_assembled`; no seed then).
    """
    check_environment_argument(environment, "declare_environment")
    env = as_environment(environment, command)
    path = os.path.abspath(env.build())
    with _declared_lock:
        files = _declared.setdefault(manager, {})
        if path not in files and settings().parts and as_distribution(distribution).mode in ("direct", "serve", "url"):
            files[path] = _assembled(manager, env, path, distribution)
        if path not in files:
            tarball = _source_file(manager, path, distribution)
            cache = _env_cache(distribution)
            wait = _seed_seconds(seed)
            if wait:
                seeded = _seeded(manager, tarball, wait)
                if seeded is not None:
                    # A temp file has a random name: a "forever" environment made from it would never be found
                    # again, only pile up in the worker's cache, one per workflow.
                    tarball, cache = seeded, True
            files[path] = _unpacked(manager, tarball, cache)
            _sources.setdefault(manager, {})[path] = tarball
        return files[path]


#: The command of the unpack mini task (:func:`_unpacked`): poncho_package_run's ``--extract-to`` (pigz when the
#: worker has it, gzip otherwise; the shim's refusals: members with ``..``, links leading out, device nodes, setuid
#: bits), then ``output/bin/run_in_env`` as TaskVine's ``declare_poncho`` calls it (a no-op, see run_in_env.sh).
UNPACK_COMMAND = "sh poncho_package_run --extract-to output -e package.tar.gz && output/bin/run_in_env"


def _unpacked(manager, tarball, cache):
    """The environment directory a worker makes from *tarball* (a File) with our unpack mini task
    (:data:`UNPACK_COMMAND`), cached at *cache*. Why not ``declare_poncho``: TaskVine 7.17.1's mini task is
    ``mkdir output && tar xf package.tar.gz -C output && output/bin/run_in_env``, one tar+gzip process: 4.5 s of a
    5.3 s cold start on a 57 MB environment, 1.34x Work Queue's (issue 27); and its extraction is not the shim's.
    The shim travels as a second input, declared once per manager ("forever" and so named by content: each
    worker gets it once). Called holding ``_declared_lock``."""
    task = _vine().Task(UNPACK_COMMAND)
    task.add_input(tarball, "package.tar.gz")
    task.add_input(_shim_file(manager), "poncho_package_run")
    return manager.declare_minitask(task, "output", cache=cache)


def _shim_file(manager):
    """The run shim as a File, declared once per manager (called holding ``_declared_lock``)."""
    files = _declared.setdefault(manager, {})
    shim = shim_path()
    if shim not in files:
        files[shim] = manager.declare_file(shim, cache=ENV_CACHE)
    return files[shim]


def _assembled(manager, env, path, distribution=None):
    """With ``PONCHO_WQ_PARTS=1`` (issue 28, docs/parts.md): the environment made on a worker from the parts of its
    tarball *path*, each part a File of its own at :data:`ENV_CACHE` (declared once per manager, named by content
    by TaskVine: a worker receives each part once, across environments and workflows, and peers spread them like
    any cached file), assembled by the unpack mini task with the shim's ``--part``: each part unpacked once per
    worker in the shim's per-worker root, the environment hard-linked from them. Called holding
    ``_declared_lock``.

    In ``url`` mode each part is published and fetched by a fetch mini task of its own (:func:`_part_fetch`), and
    the environment stays at the workflow level, as :func:`_env_cache` says: a failed fetch leaves a failure note
    as the part, and the shim then makes ``output`` a stub environment (fetch.sh's vine-stub, same exit code and
    message) without unpacking anything into its per-worker root."""
    files = _declared.setdefault(manager, {})
    parts = _parts_of(env, path)
    url = as_distribution(distribution).mode == "url"
    command = "sh poncho_package_run --extract-to output -e {}{} && output/bin/run_in_env".format(
        env.remote_name[:-len(".tar.gz")], "".join(" --part " + p.name for p in parts))
    task = _vine().Task(command)
    for p in parts:
        key = ("fetch", p.name) if url else p.path
        if key not in files:
            files[key] = _part_fetch(manager, p, distribution) if url else manager.declare_file(p.path, cache=ENV_CACHE)
        task.add_input(files[key], p.name)
    task.add_input(_shim_file(manager), "poncho_package_run")
    return manager.declare_minitask(task, "output", cache=_env_cache(distribution))


def _part_fetch(manager, part, distribution):
    """The fetch mini task of *part* in ``url`` mode: *part* published (as Work Queue's url mode with parts does),
    fetched and checked by fetch.sh, at the workflow level (:func:`_env_cache`). Without the vine-stub: a failed
    fetch leaves its note (first line :data:`~poncho_wq.deliver.fetch.NOTE_MARK`, then the exit code and the
    message) as the part, which the shim's ``--extract-to`` turns into a stub environment instead of unpacking it
    into its per-worker root (where a stub named ``part-<hex>`` would outlive the workflow)."""
    dist = as_distribution(distribution)
    fetch = fetch_for(part.path, dist.publish_dir, dist, part.name)
    where = "p={};c=$p;t=$p.part;".format(fetch.name)
    return manager.declare_minitask(_vine().Task(fetch_script(fetch, fetch.seconds, where)), fetch.name, cache=True)


def forget_environment(manager, environment, declared=None, message=None):
    """Undeclare the environment declared for *environment* (an Environment or tarball path) on *manager*: the
    workers drop their copies, and the next :func:`declare_environment` of it declares it afresh. With *declared*
    (the File a task was given), only when that is still the current declaration: many tasks that met one failed
    fetch forget it once, not also the declaration made after it.

    Why: in ``url`` mode a fetch that failed on a worker leaves there a stub environment that fails every task
    (TaskVine 7.17.1 hangs the tasks of a mini task that fails, see :data:`_FETCH_STUB`). :attr:`PonchoVineTask.
    shim_error` calls this when it reports such a failure, so that later tasks fetch again instead of meeting the
    stub for the rest of the workflow. With parts (:func:`_assembled`), *message* (the shim error's) names the part
    whose fetch failed: its fetch is undeclared too (the other parts stay), so the next declaration fetches it
    again."""
    path = os.path.abspath(environment.build() if isinstance(environment, Environment) else str(environment))
    failed = re.match(r"could not fetch (part-[0-9a-f]+\.tar\.gz) from ", message or "")
    with _declared_lock:
        current = _declared.get(manager, {}).get(path)
        if current is None or (declared is not None and current is not declared):
            return
        poncho = _declared[manager].pop(path)
        source = _sources.get(manager, {}).pop(path, None)
        part = _declared[manager].pop(("fetch", failed.group(1)), None) if failed else None
    for f in (poncho, source, part):
        if f is not None:
            manager.undeclare_file(f)


# Why seeding: TaskVine 7.17.1 substitutes a peer for the manager only once a worker has *reported* a ready
# replica (cache-update), and it dispatches a batch of tasks long before the first report arrives, so a batch start
# makes the manager send the tarball to every worker (measured: N x tarball, 0 peer transfers). A *temp* file is the
# one kind TaskVine never sends from the manager: a task needing one waits until some worker holds it and then
# gets it from that peer (at most worker-source-max-transfers at once per source, 10 by default). So one seed task
# copies the tarball into a temp on the first worker, and the environment is declared on the temp.
_SEED_TAG = "poncho_wq-seed"


def _seed_seconds(seed):
    if seed is None:
        return settings().vine_seed
    if seed is True:
        return 300.0
    if seed is False:
        return 0.0
    try:
        seconds = float(seed)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 <= seconds < 1e9:
        raise SpecError("declare_environment seed={!r} is not valid: expected seconds to wait for the seed copy "
                        "(0 or False: no seed; True: 300)".format(seed))
    return seconds


def _seeded(manager, source, wait):
    """A temp File holding *source* (a File) on one worker, made by a seed task this call waits for (at most
    *wait* seconds, with no other task of the caller's returned meanwhile); None when no worker made it in time
    (the seed is cancelled and the caller uses *source* directly)."""
    vine = _vine()
    temp = manager.declare_temp()
    task = vine.Task("cat env.tar.gz > seed.tar.gz")
    task.add_input(source, "env.tar.gz")
    task.add_output(temp, "seed.tar.gz")
    task.set_tag(_SEED_TAG)
    task.set_cores(1)
    manager.submit(task)
    end = time.monotonic() + wait
    while time.monotonic() < end:
        done = manager.wait_for_tag(_SEED_TAG, max(1, min(5, int(end - time.monotonic()))))
        if done is None:
            continue
        if done.successful():
            return temp
        break
    else:
        manager.cancel_by_task_id(task.id)
    logging.getLogger(__name__).warning("TaskVine seed of the environment did not complete within %s s (%s): "
                                        "the manager sends it to each worker", wait,
                                        "no worker" if done is None else done.result)
    return None


def _source_file(manager, path, distribution=None):
    """The File the workers get the tarball *path* from: the manager's file (``direct``), or the published copy
    fetched by each worker (``url``; ``shared`` is Work Queue only). URL fetches are a mini task (:data:`_FETCH`)
    that checks the bytes against the published size and sha256, not ``declare_url``: TaskVine 7.17.1's worker
    runs ``curl -sSL`` without ``-f`` and checks nothing, so a 404 page - or any bytes a server sends - would be
    cached as the tarball for the worker's life (poncho_wq.deliver.publish)."""
    dist = as_distribution(distribution)  # checks the settings: a publish URL without a publish dir is an error
    if dist.mode in ("direct", "serve"):
        # serve (Work Queue's cache server) is direct here: TaskVine's workers keep a 'forever' file across
        # managers already (0 bytes sent to a second workflow), so there is no resend to avoid.
        return manager.declare_file(path, cache=_tarball_cache(path))
    if dist.mode != "url" and not dist.publish_url:
        # shared: TaskVine moves every unpacked environment into its own cache, so there is no unpacking in place;
        # with a file:// PONCHO_WQ_PUBLISH_URL it is fetched from the shared file system like a url.
        raise SpecError("distribution mode {!r} is not available with TaskVine without PONCHO_WQ_PUBLISH_URL: "
                        "expected direct or url, or set PONCHO_WQ_PUBLISH_URL (file:// for a shared file "
                        "system)".format(dist.mode))
    fetch = fetch_for(path, dist.publish_dir, dist, os.path.basename(path))
    command = fetch_task_command(fetch, fetch.seconds)
    return manager.declare_minitask(_vine().Task(command), fetch.name, cache=True)


def fetch_task_command(fetch, seconds, stall_seconds=STALL_SECONDS):
    """The command of the fetch mini task for *fetch* (a :class:`poncho_wq.deliver.publish.Fetch`): the checked tarball,
    or a stub environment failing every task with the failure's code and message (:data:`_FETCH_STUB`), as
    ``fetch.name`` in its sandbox."""
    where = "p={};c=$p;t=$p.part;".format(fetch.name)
    return fetch_script(fetch, seconds, where, stall_seconds) + _FETCH_STUB


# The fetch mini task's end (after poncho_wq.deliver.fetch.fetch_script): fetch.sh's "vine-stub" section, which says
# why a failed fetch leaves a stub environment instead of failing the mini task.
_FETCH_STUB = fetch_sections()["vine-stub"]
if _FETCH_STUB.count(NOTE_MARK) != 1:
    raise ImportError("poncho_wq/worker/fetch.sh: the vine-stub section's note mark is not " + NOTE_MARK)


def declare_code_layer(manager, layer):
    """Declare a :class:`~poncho_wq.assemble.layers.CodeLayer` (built for TaskVine: it carries ``bin/run_in_env`` =
    ``run_in_layer``, which stacks it on the active environment) as a poncho package; once per manager and layer.

    Added to a task *before* its base: TaskVine wraps the command once per environment, the last added outermost,
    so the base activates first and the layer's ``run_in_env`` then puts its ``lib/`` and ``bin/`` in front."""
    path = os.path.abspath(layer.build())
    with _declared_lock:
        files = _declared.setdefault(manager, {})
        if path not in files:
            files[path] = _unpacked(manager, manager.declare_file(path, cache=_tarball_cache(path)), ENV_CACHE)
        return files[path]


def _installed_pin(name):
    """``name==<version installed here>``: the worker must unpickle what the manager pickled."""
    try:
        return "{}=={}".format(name, importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        return name


def with_packages(environment, packages, ndcctools=True):
    """*environment* (an :class:`Environment` with a spec) plus the distributions *packages* (pinned to the
    versions installed here, unless the spec already names them) and, with *ndcctools*, the manager's own
    ``ndcctools`` (replacing any ``ndcctools`` the spec names: only the manager's copy speaks its protocol).

    A prebuilt tarball is returned unchanged: it must already contain them (when it does not, a library fails on
    the worker; :func:`create_library`'s ``fail_fast`` and :func:`library_error` show how that surfaces)."""
    if environment.spec is None:
        return environment
    data = environment.spec.to_dict()
    pip = [p for p in data.get("pip", []) if not (ndcctools and canonicalize_name(Requirement(p).name) == "ndcctools")]
    have = {canonicalize_name(Requirement(p).name) for p in pip}
    for pkg in (data.get("conda") or {}).get("packages", []):
        have.add(canonicalize_name(re.split(r"[=<>!~ \[]", pkg.split("::")[-1], 1)[0]))
    for name in packages:
        if canonicalize_name(name) not in have:
            pip.append(_installed_pin(name))
            have.add(canonicalize_name(name))
    if ndcctools:
        wanted = environment.spec.python_version
        here = "{}.{}".format(*sys.version_info[:2])
        if wanted and not (wanted == here or wanted.startswith(here + ".")):
            # Caught here rather than as pip's "not a supported wheel" minutes into a build: _cvine.so and the
            # pickles the manager sends are for this Python.
            raise SpecError("spec field python: {!r} is not valid for TaskVine's worker-side runtime; expected "
                            "Python {} (the manager's: its ndcctools extension modules and pickles are built for "
                            "it)".format(wanted, here))
        pip.append(ndcctools_requirement())
    data["pip"] = pip
    engine = environment.engine
    if environment.source in ("current", "auto") or engine in ("current", "locked"):
        # The current and locked engines copy installed *distributions*; a source-built ndcctools is a bare
        # directory on PYTHONPATH with no metadata to copy, and the wheel is a file, not an installed distribution.
        # An index build installs both the pins (for an analysis: its lock, the manager's versions) and the local
        # wheel with pip/uv.
        engine = None
    env = Environment(spec=parse_spec(data), local_files=environment.local_files, analysis=environment.analysis,
                      engine=engine, python=environment.python, source="index")
    env.files, env.layer_members = environment.files, environment.layer_members  # a project's data and scripts
    return env


def _function_scripts(functions):
    """The files to analyze for *functions*: the submitting script (``__main__``) and each function's source file;
    plus ``(source, arcname)`` of each function's module when it is local code imported by name (cloudpickle
    pickles functions of importable modules by reference, so the worker must import that module too)."""
    scripts, ship = [], []
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    # An installed __main__ (``python -m pytest``, a console script) is not the user's code: analyzing it would
    # ship that tool instead.
    if main and main.endswith(".py") and os.path.isfile(main) and not _installed(os.path.abspath(main)):
        scripts.append(os.path.abspath(main))
    for func in functions:
        try:
            source = inspect.getsourcefile(func)
        except TypeError:
            source = None
        if not source or not os.path.isfile(source):
            continue
        source = os.path.abspath(source)
        if source not in scripts:
            scripts.append(source)
        module = getattr(func, "__module__", None) or "__main__"
        if module != "__main__" and not _installed(source):
            arcname = module.replace(".", "/") + ("/__init__.py" if source.endswith("__init__.py") else ".py")
            ship.append((source, arcname))
    return scripts, ship


def _installed(path):
    dirs = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | set(site.getsitepackages())
    return any(path.startswith(os.path.abspath(d) + os.sep) for d in dirs if d)


def runtime_environment(environment=None, *, functions=(), scripts=(), packages=LIBRARY_RUNTIME, ndcctools=True,
                        who="runtime_environment"):
    """The :class:`Environment` for worker-side TaskVine Python code: *environment* (a spec, tarball or
    Environment), or when None the analysis of ``__main__``, *scripts* and the functions' modules; plus *packages*
    and the manager's ``ndcctools``. Submodule imports that need more than their package (``dask.array`` needs
    numpy, :mod:`poncho_wq.analysis.import_extras`) are added too."""
    check_environment_argument(environment, who)
    ship = []
    if environment is None or environment == "auto":
        found, ship = _function_scripts(functions)
        found += [os.path.abspath(s) for s in scripts if os.path.abspath(s) not in found]
        if not found:
            raise SpecError("{} environment=None: nothing to analyze (no __main__ script, no function source, no "
                            "scripts); pass environment= (a spec, a tarball or an Environment)".format(who))
        extras = tuple(extra_distributions(found)) + tuple(packages)
        env = Environment.from_script(*found, exclude=MANAGER_ONLY, extra_pkgs=extras)
    else:
        env = as_environment(environment)
        packages = tuple(packages) + tuple(extra_distributions(scripts))
    env = with_packages(env, packages, ndcctools=ndcctools)
    if ship:
        merged = dict((arc, src) for src, arc in env.local_files)
        for src, arc in ship:
            merged.setdefault(arc, src)
        env.local_files = tuple(sorted((src, arc) for arc, src in merged.items()))
    return env


# -- tasks ----------------------------------------------------------------------------------------------------
def local_inputs(manager, task, files):
    """Attach local files ``(source, arcname)`` to *task* under their relative names (cached on the workers)."""
    for source, arcname in sorted(set(files), key=lambda sa: sa[1]):
        task.add_input(manager.declare_file(source, cache=True), arcname)


def shim_error_from(exit_code, output) -> Optional[ShimError]:
    """``ShimError(exit_code, message)`` when *output* shows that the environment could not be used (bin/run_in_env
    failed with exit 1-4 and said why), else None (:func:`poncho_wq.shim.shim_error_from` for TaskVine's tools)."""
    return _shim_error_from(exit_code, output, RUN_IN_ENV)


def _make_vine_task(vine):
    class PonchoVineTask(vine.Task):
        """A TaskVine task whose command runs inside a packed Python environment (PonchoTask's TaskVine twin).

        ``PonchoVineTask(manager, command, environment=None, **task_options)``: *environment* as for
        :func:`declare_environment` (None/"auto": analyze ``__main__`` and the ``*.py`` files *command* names).
        Layered (issue 13): the local modules the command's scripts import and the local/editable distributions
        ship in a code layer declared as a second, inner environment (:func:`declare_code_layer`; ``code_layer``
        attribute), and the scripts as content-named copies under the relative paths the command uses, so an
        edit sends and unpacks only the new layer, never the base. Keyword options call the matching ``set_<name>`` method (``cores=1``, ``tag="x"``,
        ``retries=3``). After completion, :attr:`shim_error` tells a broken environment from a failing command.
        ``progress``: of the environment's build, as for PonchoTask (None: ``PONCHO_WQ_PROGRESS``). The manager
        it is submitted to says on the ``poncho_wq`` logger when no worker comes (:mod:`poncho_wq.waiting`).
        """

        def __init__(self, manager, command, environment=None, files=None, *, progress=None, **task_options):
            # Checked before anything is analyzed, built or allocated in C (__del__ copes with that).
            check_command_argument(command, "PonchoVineTask")
            check_environment_argument(environment, "PonchoVineTask")
            explicit = resolve_files(files, "PonchoVineTask")  # files=: poncho_wq/deliver/files.py
            for name in task_options:
                if not callable(getattr(vine.Task, "set_" + name, None)):
                    raise SpecError("PonchoVineTask option {}=: TaskVine's Task has no set_{} method; use one of its "
                                    "set_* names, e.g. cores=1, tag='x', retries=3".format(name, name))
            self.environment = as_environment(environment, command, layered=True)
            self.original_command = command
            layer, scripts = task_layers(self.environment, command)
            self.code_layer = vine_layer(layer)
            self.environment.build(progress=progress)  # declare_environment's build is then the memo's
            super().__init__(command)
            if self.code_layer is not None:
                self.add_environment(declare_code_layer(manager, self.code_layer))  # inner: see declare_code_layer
            self._environment_file = declare_environment(manager, self.environment)
            self.add_environment(self._environment_file)
            local_inputs(manager, self, [(content_copy(source), rel) for source, rel in scripts])
            local_inputs(manager, self, sandbox_inputs(explicit, self.environment, scripts, "PonchoVineTask"))
            for name, value in task_options.items():
                getattr(self, "set_" + name)(value)

        def __del__(self):
            # A bad argument raises before Task.__init__ set _task; the base __del__ would then print
            # "Exception ignored in ... __del__".
            if "_task" in self.__dict__:
                super().__del__()

        def submit_finalize(self):
            super().submit_finalize()
            watch(self.manager, worker_program(vine, "vine_worker"))  # says why it waits: poncho_wq.waiting

        @property
        def shim_error(self) -> Optional[ShimError]:
            """After completion: ``ShimError(exit_code, message)`` when the environment could not be set up on the
            worker (the command never ran), else None. In ``url`` mode that includes a failed fetch (exit 2: an
            HTTP error; 3: the transfer failed or the bytes were not the published ones; 4: the worker lacks
            curl/wget or a sha256 tool); reading it then also undeclares the environment
            (:func:`forget_environment`), so that tasks submitted afterwards fetch it again."""
            err = shim_error_from(self.exit_code, self.std_output)
            if err is not None and err.message.startswith("could not fetch ") and \
                    not self.__dict__.get("_forgotten") and getattr(self, "manager", None) is not None:
                self.__dict__["_forgotten"] = True
                forget_environment(self.manager, self.environment, self.__dict__.get("_environment_file"),
                                   err.message)
            return err

    quiet_at_exit(PonchoVineTask)
    return PonchoVineTask




# -- serverless -----------------------------------------------------------------------------------------------
_LIBRARY_OPTIONS = ("init_command", "hoisting_modules", "exec_mode", "library_context_info")


def create_library(manager, name, *functions, environment=None, fail_fast=True, **options):
    """TaskVine's ``create_library_from_functions(name, *functions)`` with a poncho_wq environment; returns the
    ``LibraryTask`` (then ``manager.install_library(lib)`` and submit ``FunctionCall(name, "func", ...)``).

    *environment*: None (default) analyzes ``__main__`` and the functions' modules; or a spec, a tarball or an
    Environment. Spec-based environments get TaskVine's library runtime (:data:`LIBRARY_RUNTIME`, pinned to the
    versions installed here) and the manager's ``ndcctools``; a prebuilt tarball must contain them already.
    The functions' local modules ship with the library. *options*: ``init_command``, ``hoisting_modules``,
    ``exec_mode``, ``library_context_info`` (passed to TaskVine), or ``set_<name>`` options of the task
    (``cores=2``, ``function_slots=4``).

    *fail_fast* (default): a library that cannot start (an import fails in its environment) is given up after
    its second failure instead of TaskVine's 16 (15 s apart, about 4 minutes); its FunctionCalls then come back
    failed ("missing library"), and :func:`library_error` / :class:`FunctionCall` give the library's own error.
    It sets the manager-wide tunables ``max-library-retries`` (1) and ``watch-library-logfiles`` (1).
    """
    vine = _vine()
    if not isinstance(name, str) or not name.strip():
        raise SpecError("create_library name: {} is not valid; expected the library's name, a non-empty "
                        "string".format(_short_repr(name)))
    if not functions:
        raise SpecError("create_library functions: none given; expected at least one function, e.g. "
                        "create_library(m, 'lib', my_func)")
    for func in functions:
        if not callable(func) or not hasattr(func, "__name__"):
            raise SpecError("create_library functions: {} ({}) is not valid; expected functions defined with "
                            "def".format(_short_repr(func), type(func).__name__))
    setters = {}
    for key in list(options):
        if key in _LIBRARY_OPTIONS:
            continue
        if key in ("poncho_env", "add_env"):
            raise SpecError("create_library option {}=: poncho_wq declares the environment itself; pass "
                            "environment= (a spec, a tarball or an Environment)".format(key))
        if not callable(getattr(vine.LibraryTask, "set_" + key, None)):
            raise SpecError("create_library option {}=: expected one of {} or a LibraryTask set_* name such as "
                            "cores=2, function_slots=4".format(key, ", ".join(_LIBRARY_OPTIONS)))
        setters[key] = options.pop(key)
    try:
        importlib.import_module("ndcctools.poncho.package_serverize")  # what create_library_from_functions imports
    except ImportError as e:
        raise PonchoError("TaskVine's create_library_from_functions needs, on the manager, {}: pip install {} "
                          "(cloudpickle, threadpoolctl, packaging and conda-pack are imported by ndcctools.poncho)"
                          .format(e, getattr(e, "name", None) or "the missing module"))
    env = runtime_environment(environment, functions=functions, who="create_library")
    path = env.build()
    # add_env=False: the environment is declared here once per manager (the same File for every library and
    # task using it), instead of TaskVine declaring the tarball again for each library. poncho_env still names
    # it, so that TaskVine's library cache key changes with the environment.
    lib = manager.create_library_from_functions(name, *functions, poncho_env=path, add_env=False, **options)
    lib.add_environment(declare_environment(manager, env))
    local_inputs(manager, lib, env.local_files)
    for key, value in setters.items():
        getattr(lib, "set_" + key)(value)
    if fail_fast:
        # TaskVine 7.17 clamps this tunable with MIN(1, value): 1 is the most it allows, and it is what we want.
        manager.tune("max-library-retries", 1)
        # The library's output (its traceback when an import fails) reaches the manager only through TaskVine's
        # library log files. A failure-only output of .taskvine.stdout instead (no streaming while the library
        # runs) made TaskVine 7.17 stop rescheduling the failed library: its FunctionCalls hung.
        manager.tune("watch-library-logfiles", 1)
    lib.environment = env
    return lib


def library_error(manager):
    """The end of the most recent failed library's output (its traceback), from the library logs TaskVine writes
    when ``watch-library-logfiles`` is set (:func:`create_library` sets it), or None. TaskVine does not tell which
    library a log belongs to before the library announces itself, so with several libraries this is the last
    failure of any of them."""
    directory = getattr(manager, "library_logging_directory", None)
    if not directory or not os.path.isdir(directory):
        return None
    logs = []
    for entry in os.scandir(directory):
        if entry.name.endswith(".log") and entry.is_file():
            logs.append((entry.stat().st_mtime, entry.path))
    for _, path in sorted(logs, reverse=True):
        with open(path, errors="replace") as f:
            text = f.read()
        if "Traceback" in text or "Error" in text:
            start = text.rfind("Traceback")
            return text[start if start >= 0 else 0:].strip()[-4000:]
    return None


def _make_function_call(vine):
    class FunctionCall(vine.FunctionCall):
        """TaskVine's ``FunctionCall`` that, when its library could not start, says why: :attr:`library_error` is
        the library's own error (e.g. ``ModuleNotFoundError: No module named 'humanize'``) and :attr:`output` is
        an :class:`~poncho_wq.errors.ActivationError` carrying it, instead of a bare ``FunctionCallNoResult``.

        ``files=``: data the function reads by path, in the call's own sandbox (its working directory; a library's
        inputs are not there), as for PonchoTask (:mod:`poncho_wq.deliver.files`); declared when the call is submitted."""

        def __init__(self, library, fn, *args, files=None, **kwargs):
            self._poncho_files = resolve_files(files, "FunctionCall")  # before anything is declared
            super().__init__(library, fn, *args, **kwargs)

        def submit_finalize(self):
            super().submit_finalize()
            local_inputs(self.manager, self, sandbox_inputs(self._poncho_files, who="FunctionCall"))
            watch(self.manager, worker_program(vine, "vine_worker"))  # says why it waits: poncho_wq.waiting

        def __del__(self):
            # A bad files= raises before the base __init__ made the C task (see PonchoVineTask.__del__).
            if "_task" in self.__dict__:
                super().__del__()

        @property
        def library_error(self):
            if self.successful():
                return None
            return library_error(self.manager) if self.manager is not None else None

        @property
        def output(self):
            out = super().output
            if not self.successful():
                why = self.library_error
                if why:
                    return ActivationError("library {} could not run {} ({}): {}".format(
                        self.get_library_required(), self.command, self.result, why.splitlines()[-1]))
            return out

    quiet_at_exit(FunctionCall)
    return FunctionCall




# -- DaskVine -------------------------------------------------------------------------------------------------
def dask_environment(manager, environment=None, scripts=()):
    """Declare, once per manager, the environment DaskVine's tasks need; pass the File as ``environment=`` to
    ``DaskVine.get`` / ``.compute(scheduler=m.get, ...)`` (a path there would be declared again on every call, and
    every worker would unpack it again).

    *environment*: None analyzes ``__main__`` and *scripts* (``dask.array`` adds numpy, ``dask.dataframe``
    pandas, ...); or a spec, tarball or Environment. Spec-based environments get :data:`DASK_RUNTIME` (dask
    pinned to the version installed here: the graph is pickled by the manager's dask) and the manager's
    ``ndcctools``."""
    env = runtime_environment(environment, scripts=scripts, packages=DASK_RUNTIME, who="dask_environment")
    return declare_environment(manager, env)


# The classes derive from ndcctools.taskvine's, which is imported only when one is first asked for (PEP 562):
# importing poncho_wq.taskvine for declare_environment or the helpers does not load _cvine.so.
_CLASSES = {"PonchoVineTask": _make_vine_task, "FunctionCall": _make_function_call}
_classes_lock = threading.Lock()


def __getattr__(name):
    if name in _CLASSES:
        with _classes_lock:
            if name not in globals():
                globals()[name] = _CLASSES[name](_vine())
            return globals()[name]
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
