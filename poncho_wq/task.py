"""``PonchoTask`` and ``PonchoPythonTask``: Work Queue tasks that carry their Python environment.

A PonchoTask is a real ``Task`` of the Work Queue binding in use (see :mod:`poncho_wq.wq`). At creation it
resolves its environment (memoized per process, cached on disk) and attaches cached inputs, each under a path
that changes when its content does (Work Queue caches inputs by *local path*: an input attached under the same
path after an edit runs with the old bytes):

* the base environment tarball, under the remote name ``env-<hash>.tar.gz`` (the hash keeps different
  environments apart in a worker's cache and lets the shim find the unpacked copy without reading the file);
* the code layer ``code-<hash>.tar.gz`` (:mod:`poncho_wq.assemble.layers`): the local modules the command's scripts import
  and the local/editable distributions, one tarball however many files, keyed by content;
* the scripts the command names, as content-named copies from the cache, under the paths the command uses;
* the run shim ``poncho_package_run`` (a POSIX sh script; the worker needs no Python of its own),

and wraps the command as ``./poncho_package_run -e env-<hash>.tar.gz --code code-<hash>.tar.gz -- /bin/sh -c
'<command>'``: the shim unpacks each layer once per worker, activates the base, stacks the code layer on it, and
the user's command keeps its full shell meaning (pipes, redirections, ``&&``, variables expanded inside the
environment). After an edit only the new code layer travels: the base is not re-sent nor re-unpacked.

The shim's own failures use exit codes 1-4 and lines starting with ``poncho_package_run:``;
:attr:`shim_error` tells them apart from the command's own failure after ``q.wait()``.
"""

import collections
import inspect
import os
import posixpath
import shlex
import sys
import threading

from .archive.cache import content_copy, default_cache_dir
from .assemble.environment import Environment, as_environment, command_scripts, task_code
from .config import settings
from .errors import SpecError
from .identity import file_identity
from .memo import register
from .deliver.files import resolve_files, sandbox_inputs
from .deliver.fetch import fetch_failure, note_check, specify_fetch
from .deliver.publish import as_distribution, fetch_for, publish
from .deliver.serve import serve_file
from .shim import ShimError, shim_error_from, shim_path
from .spec import Spec
from .waiting import install_submit, worker_program
from .wq import quiet_at_exit, serializer_for

SHIM_NAME = "poncho_package_run"

# What a task of a prebuilt or already built environment needs is imported above; the analysis, the builders, the
# code layers and the parts cutter are imported where a task first needs them (here and in
# poncho_wq.assemble.environment; tests/test_structure.py, LAZY_INTERNAL). A second manager process' first task
# loaded 291 modules (0.15 s) before it could be submitted (issue 27); tests/bindings/test_task_import.py counts them.

_classes: dict = {}
_classes_lock = threading.Lock()


ACCEPTED_ENVIRONMENTS = ('a tarball path (.tar.gz, .tgz, .tar), a spec (a path to a JSON/YAML file, a dict or a Spec), '
                         'an Environment, "auto" or None')


def check_environment_argument(environment, who="PonchoTask"):
    """Refuse what ``environment=`` cannot be, before anything is built, with a message naming the argument, the
    value and what is accepted. Without it, 42, ["six"] or b"x" ended in raw TypeErrors deep in os.fspath, and ""
    in "spec file  does not exist"."""
    if environment is None or isinstance(environment, (Environment, Spec, dict)):
        return
    if isinstance(environment, os.PathLike) and not isinstance(environment, (bytes, bytearray)):
        path = os.fspath(environment)
        if isinstance(path, str) and path.strip():
            return
    elif isinstance(environment, str) and environment.strip():
        return
    raise SpecError("{} environment: {} ({}) is not valid; expected {}".format(
        who, _short_repr(environment), type(environment).__name__, ACCEPTED_ENVIRONMENTS))


def check_distribution_argument(distribution, environment=None):
    """Refuse a bad ``distribution=`` or bad distribution settings (PONCHO_WQ_DISTRIBUTION, PONCHO_WQ_PUBLISH_DIR,
    PONCHO_WQ_PUBLISH_URL) before the script is analyzed and the environment built, not after."""
    if distribution is None and isinstance(environment, Environment):
        distribution = getattr(environment, "distribution", None)
    as_distribution(distribution)


def check_command_argument(command, who="PonchoTask"):
    """A task command is a non-empty shell command string (it runs as ``/bin/sh -c <command>``)."""
    if not isinstance(command, str) or not command.strip():
        raise SpecError("{} command: {} ({}) is not valid; expected a shell command string such as "
                        "'python3 job.py 7'".format(who, _short_repr(command), type(command).__name__))


def _short_repr(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def wrap_command(command, env_remote_name, code_remote_name=None, env_dir=None, fetched=(), served=None,
                 parts=()):
    """The worker-side command line that runs *command* inside the environment (and its code layer). *env_dir*
    (``shared`` distribution) is the shim's ``PONCHO_ENV_DIR``; the names are then absolute shared paths, and a
    worker's own cache limits (PONCHO_ENV_KEEP, PONCHO_ENV_BUDGET_MB) are cleared: they must not evict what other
    machines use from the shared root. *fetched* (``url`` distribution) are the inputs the worker fetched: one
    that holds a failure note instead of a tarball ends the task first with the note's exit code and message
    (:func:`poncho_wq.deliver.fetch.note_check`). *served* (``serve`` distribution, a
    :class:`~poncho_wq.deliver.fetch.Fetch`): the base is no input; the shim fetches it from the manager's cache
    server only when the worker's root does not hold it ready (``--fetch``, :mod:`poncho_wq.deliver.serve`).
    *parts*: the environment's parts (``PONCHO_WQ_PARTS=1``), which the shim assembles into the environment
    *env_remote_name* names (docs/parts.md)."""
    code = "".join(" --part {}".format(shlex.quote(p)) for p in parts)
    code += " --code {}".format(shlex.quote(code_remote_name)) if code_remote_name else ""
    if served is not None:
        code = " --fetch {} --sha256 {} --size {} --fetch-timeout {}{}".format(
            shlex.quote(served.url), served.sha256, int(served.size), int(served.seconds), code)
    root = "PONCHO_ENV_DIR={} PONCHO_ENV_KEEP= PONCHO_ENV_BUDGET_MB= ".format(shlex.quote(env_dir)) if env_dir else ""
    return "{}{}./{} -e {}{} -- /bin/sh -c {}".format(note_check(fetched), root, SHIM_NAME,
                                                     shlex.quote(env_remote_name), code, shlex.quote(command))


def task_layers(environment, command=None):
    """``(code layer or None, command scripts)`` for a task of *environment* running *command*: the layer holds
    the environment's code and the local code of the scripts the command names (see :func:`task_code`)."""
    scripts, members, dists = task_code(command_scripts(command)) if command else ((), (), {})
    if dists:
        from .assemble.layers import distribution_members

        members = tuple(members) + tuple(distribution_members(dists, environment.python))
    return environment.code_layer(members), scripts


#: How a task's base and code layer travel (see :mod:`poncho_wq.deliver.publish`): ``env``/``code`` are the names the
#: shim is given (absolute shared paths in ``shared`` mode), ``env_dir`` its PONCHO_ENV_DIR (``shared``), ``urls``
#: remote name -> URL and ``fetches`` remote name -> :class:`~poncho_wq.deliver.publish.Fetch` (``url``), ``files`` remote
#: name -> local path (``direct``; ``serve``: the code layer), ``served`` the base's Fetch from the manager's cache
#: server (``serve``), ``parts`` the remote names of the environment's parts (``PONCHO_WQ_PARTS=1``, ``direct``
#: and ``url``; ``shared``: their absolute shared paths, and ``env`` the environment's name), in order.
DeliveryPlan = collections.namedtuple("DeliveryPlan", "mode env code env_dir urls files fetches served parts",
                                      defaults=({}, None, ()))


def plan_distribution(environment, layer=None, distribution=None, progress=None):
    """Publish what *distribution* needs (``None``: ``environment.distribution`` if set, else the settings) and
    say how the task refers to it; *progress*: of the environment's build (:meth:`Environment.build`)."""
    if distribution is None:
        distribution = getattr(environment, "distribution", None)
    dist = as_distribution(distribution)
    tarball = environment.build(progress=progress)
    # With PONCHO_WQ_PARTS=1 the base travels as its parts in direct, url and shared mode (docs/parts.md); the
    # shim is still given the environment's name (-e), and the parts' names in order (--part: in shared mode their
    # absolute shared paths, assembled in the shared root).
    parts = _parts_of(environment, tarball) if dist.mode in ("direct", "url", "shared") and settings().parts else ()
    files = {p.name: p.path for p in parts} if parts else {environment.remote_name: tarball}
    names = tuple(p.name for p in parts)
    if layer is not None:
        files[layer.remote_name] = layer.build()
    code = layer.remote_name if layer is not None else None
    if dist.mode == "direct":
        return DeliveryPlan("direct", environment.remote_name, code, None, {}, files, parts=names)
    if dist.mode == "serve":
        served = serve_file(files.pop(environment.remote_name), environment.remote_name, dist.fetch_timeout)
        return DeliveryPlan("serve", environment.remote_name, code, None, {}, files, {}, served)
    if dist.mode == "url":
        fetches = {name: fetch_for(path, dist.publish_dir, dist, name) for name, path in files.items()}
        return DeliveryPlan("url", environment.remote_name, code, None,
                                {name: f.url for name, f in fetches.items()}, {}, fetches, parts=names)
    for name, path in files.items():
        publish(path, dist.publish_dir, name)
    shared = {name: posixpath.join(dist.worker_dir, name) for name in files}
    if parts:
        return DeliveryPlan("shared", environment.remote_name, shared.get(code), dist.shared_env_dir, {}, {},
                            parts=tuple(shared[name] for name in names))
    return DeliveryPlan("shared", shared[environment.remote_name], shared.get(code), dist.shared_env_dir, {}, {})


#: Parts by (tarball path, its identity): cut once per process, read from the index in the cache afterwards.
_parts_memo: dict = {}
register(_parts_memo.clear)


def _parts_of(environment, tarball):
    """The parts of *environment*'s packed *tarball* (cut into the build cache once, see
    :mod:`poncho_wq.archive.parts`). ``serve`` distribution still uses the whole tarball."""
    key = (tarball, file_identity(tarball))
    with _classes_lock:
        hit = _parts_memo.get(key)
    if hit is None:
        from .archive.parts import cut_parts

        hit = cut_parts(tarball, default_cache_dir(), settings().part_mb, environment.remote_name[:-len(".tar.gz")])
        with _classes_lock:
            _parts_memo[key] = hit
    return hit


def _attach_environment(task, environment, layer=None, scripts=(), plan=None):
    """Attach the base tarball and the code layer as *plan* says (default: the settings' distribution), the
    command scripts (content-named copies) and the shim."""
    plan = plan or plan_distribution(environment, layer)
    for name, path in plan.files.items():
        task.specify_input_file(path, name, cache=True)
    for fetch in plan.fetches.values():
        specify_fetch(task, fetch)
    for source, rel in scripts:
        task.specify_input_file(content_copy(source), rel, cache=True)
    task.specify_input_file(shim_path(), SHIM_NAME, cache=True)


def classes_for(binding):
    """Return ``(PonchoTask, PonchoPythonTask)`` deriving from *binding*'s ``Task`` and ``PythonTask``."""
    with _classes_lock:
        if binding.__name__ in _classes:
            return _classes[binding.__name__]

        class PonchoTask(binding.Task):
            """A Work Queue task whose command runs inside a packed Python environment.

            ``environment`` may be a tarball path, a spec (path, dict or Spec), an :class:`Environment`, or
            ``None``/``"auto"``: analyze the submitting script and the ``*.py`` files the command names.
            ``progress``: of the environment's build, as for ``poncho_package_create`` (True: on stderr, a live
            line per phase on a terminal; False: silent; a callable or a :class:`~poncho_wq.progress.Progress`);
            None: ``PONCHO_WQ_PROGRESS`` (default: on when stderr is a terminal).
            Other keyword arguments call the matching ``specify_<name>`` method (e.g. ``cores=1``, ``tag="x"``).
            The queue it is submitted to says on the ``poncho_wq`` logger when no worker comes
            (:mod:`poncho_wq.waiting`).
            """

            def __init__(self, command, environment=None, files=None, *, distribution=None, progress=None,
                         **task_options):
                # Arguments are checked before anything is analyzed or built; __del__ below copes with the base
                # Task.__init__ never having run.
                check_command_argument(command)
                check_environment_argument(environment)
                check_distribution_argument(distribution, environment)
                explicit = resolve_files(files)  # files=: poncho_wq/deliver/files.py
                for name in task_options:
                    if not callable(getattr(binding.Task, "specify_" + name, None)):
                        raise SpecError("PonchoTask option {}=: this Work Queue binding's Task has no specify_{} "
                                        "method; use one of its specify_* names, e.g. cores=1, tag='x'".format(
                                            name, name))
                self.environment = as_environment(environment, command, layered=True)
                self.original_command = command
                self.code_layer, scripts = task_layers(self.environment, command)
                plan = self.distribution_plan = plan_distribution(self.environment, self.code_layer, distribution,
                                                                  progress)
                super().__init__(wrap_command(command, plan.env, plan.code, plan.env_dir, tuple(plan.fetches),
                                              plan.served, plan.parts))
                _attach_environment(self, self.environment, self.code_layer, scripts, plan)
                for copy, name in sandbox_inputs(explicit, self.environment, scripts):
                    self.specify_input_file(copy, name, cache=True)
                for name, value in task_options.items():
                    getattr(self, "specify_" + name)(value)

            def __del__(self):
                # A bad argument raises before the base Task.__init__ creates the C task; the binding's __del__
                # would then fail on the missing attribute and print "Exception ignored in ... Task.__del__".
                if "_task" in self.__dict__:
                    super().__del__()

            @property
            def shim_error(self):
                """After completion: ``ShimError(exit_code, message)`` when the environment could not be set up
                on the worker (the command never ran), else None. In ``url`` distribution this includes a failed
                fetch of the environment or code layer (exit 2: an HTTP error; 3: the transfer failed or the bytes
                were not the published ones; 4: the worker lacks curl/wget or a sha256 tool; the message names the
                URL), and an input that could not be put in place at all (exit 2, see
                :func:`poncho_wq.deliver.fetch.fetch_failure`)."""
                return shim_error_from(self.return_status, self.std_output) or _fetch_error(self, binding)

        class PonchoPythonTask(binding.PythonTask):
            """Work Queue's ``PythonTask`` (a function call) run inside a packed environment.

            With ``environment=None`` the environment is analyzed from the function's module and the
            submitting script; the serializer the binding's wrapper needs (dill or cloudpickle) is added.
            """

            def __init__(self, func, *args, environment=None, files=None, distribution=None, **kwargs):
                if not callable(func):
                    raise SpecError("PonchoPythonTask function: {} ({}) is not valid; expected a function to call "
                                    "on the worker".format(_short_repr(func), type(func).__name__))
                check_environment_argument(environment, "PonchoPythonTask")
                check_distribution_argument(distribution, environment)
                explicit = resolve_files(files, "PonchoPythonTask")
                self.environment = _python_task_environment(func, environment, binding)
                self.code_layer = self.environment.code_layer(_function_module_members(func))
                plan = self.distribution_plan = plan_distribution(self.environment, self.code_layer, distribution)
                super().__init__(func, *args, **kwargs)
                _attach_environment(self, self.environment, self.code_layer, plan=plan)
                for copy, name in sandbox_inputs(explicit, self.environment, who="PonchoPythonTask"):
                    self.specify_input_file(copy, name, cache=True)

            def _python_function_command(self):
                # Work Queue's own command runs "python wrapper func args out" in the sandbox; run it in the env.
                self._env_file = None
                command = super()._python_function_command()
                plan = self.distribution_plan
                return wrap_command(command, plan.env, plan.code, plan.env_dir, tuple(plan.fetches),
                                    plan.served, plan.parts)

            @property
            def shim_error(self):
                return shim_error_from(self.return_status, self.std_output) or _fetch_error(self, binding)

            def __del__(self):
                # As PonchoTask.__del__: PythonTask.__del__ reads _tmpdir (set first thing in its __init__) and then
                # the base Task's _task (set only if its __init__ got that far).
                if "_tmpdir" in self.__dict__:
                    self.__dict__.setdefault("_task", None)
                    super().__del__()

        quiet_at_exit(PonchoTask, PonchoPythonTask)
        if isinstance(getattr(binding, "WorkQueue", None), type):
            # A queue given one of these tasks says why it waits (no worker, a failed fetch): poncho_wq.waiting.
            install_submit(binding.WorkQueue, (PonchoTask, PonchoPythonTask),
                           worker_program(binding, "work_queue_worker"))
        _classes[binding.__name__] = (PonchoTask, PonchoPythonTask)
        return _classes[binding.__name__]


def _fetch_error(task, binding):
    """ShimError(2, ...) when the task's url inputs could not be fetched (computed once: it asks the server)."""
    plan = task.__dict__.get("distribution_plan")
    if plan is None or not plan.urls:
        return None
    if "_fetch_error" not in task.__dict__:
        failed = {getattr(binding, "WORK_QUEUE_RESULT_" + n, None) for n in ("INPUT_MISSING", "MAX_RETRIES")}
        message = fetch_failure(task, plan.urls, failed - {None})
        if not message:
            return None  # not failed (or not finished yet): ask again later
        task.__dict__["_fetch_error"] = ShimError(2, message)
    return task.__dict__["_fetch_error"]


def _function_module_members(func):
    """``lib/<module path>`` for the module of *func* when it is local code imported by name: cloudpickle and
    dill pickle such a function by reference, so the worker imports its module (which no analysis of the scripts
    needs to have reached: a function defined in a local module that ``__main__`` never imports)."""
    module = getattr(func, "__module__", None) or "__main__"
    try:
        source = inspect.getsourcefile(func)
    except TypeError:
        return ()
    if module == "__main__" or not source or not os.path.isfile(source):
        return ()
    from .analysis.installation import installation

    if installation().is_installed_file(os.path.abspath(source)) or \
            os.path.abspath(source).startswith(os.path.abspath(sys.base_prefix) + os.sep):
        return ()  # installed or standard library: the base has it
    arc = module.replace(".", "/") + ("/__init__.py" if source.endswith("__init__.py") else ".py")
    return (("lib/" + arc, os.path.abspath(source)),)


def _python_task_environment(func, environment, binding):
    if environment is not None and environment != "auto":
        return as_environment(environment)
    scripts = []
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main and main.endswith(".py") and os.path.isfile(main):
        scripts.append(main)
    try:
        source = inspect.getsourcefile(func)
    except TypeError:
        source = None
    if source and os.path.isfile(source) and source not in scripts:
        scripts.append(source)
    return Environment.from_script(*scripts, extra_pkgs=(serializer_for(binding),), layered=True)
