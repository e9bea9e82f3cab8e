"""The package's shape, checked from its AST: the folders are stages of one forward pipeline (issue 26).

A module may import from its own stage and from earlier ones, never from a later one; the import graph has no
circles; imports sit at the top of the file, where a reader sees the module's real dependencies, except for the
named optional or heavy third-party packages below and the two named lazy entry points; and every failure is
raised by kind (``SpecError``, ``InputMissing``, ``BuildError``, ``ActivationError``), never as a bare
``PonchoError(..., exit_code=...)``. Nothing is imported or run: the check reads the source, so it also holds for
modules whose optional dependencies are missing here.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "poncho_wq")

# The stages in data-flow order. A module belongs to the first stage whose entry matches it: a dotted prefix
# ending in "." names a folder, anything else one module.
STAGES = (
    # What runs on a worker: the relocator and the generator of the worker scripts, standard library only.
    ("worker", ("poncho_wq.worker", "poncho_wq.worker.")),
    ("core", ("poncho_wq.version", "poncho_wq.errors", "poncho_wq.config", "poncho_wq.memo", "poncho_wq.progress", "poncho_wq.tools",
              "poncho_wq.fsutil", "poncho_wq.identity", "poncho_wq.credentials", "poncho_wq.target",
              "poncho_wq.shim", "poncho_wq.spec", "poncho_wq.requirements", "poncho_wq.request")),
    ("analysis", ("poncho_wq.analysis", "poncho_wq.analysis.")),
    ("archive", ("poncho_wq.archive", "poncho_wq.archive.")),
    ("engines", ("poncho_wq.engines", "poncho_wq.engines.")),
    ("assemble", ("poncho_wq.assemble", "poncho_wq.assemble.")),
    ("deliver", ("poncho_wq.deliver", "poncho_wq.deliver.")),
    ("bindings", ("poncho_wq.wq", "poncho_wq.waiting", "poncho_wq.task", "poncho_wq.taskvine", "poncho_wq.upstream")),
    ("cli", ("poncho_wq.cli", "poncho_wq.cli.")),
    ("package", ("poncho_wq", "poncho_wq.__main__")),
)

# Third-party packages a function may import where it needs them, and why not at the top.
LAZY_EXTERNAL = {
    "ndcctools": "optional: CCTools' bindings, present only where the manager uses them",
    "work_queue": "optional: Debian's Work Queue binding",
    "tomllib": "Python 3.11 and later only",
    "tomli": "optional fallback for tomllib",
    "pip": "optional fallback for tomllib (pip._vendor.tomli)",
    "rattler": "0.2 s to import, only the conda engine and conda closures use it",
    "conda_pack": "0.2 s to import, only packing uses it",
    "requests": "0.4 s to import, only http downloads use it",
    "yaml": "only YAML spec files need it",
    "filelock": "only the cache and the interpreter bases take locks",
    "multiprocessing": "only a large scan starts processes",
    "http": "only the server processes (publishing, the serve mode's cache server) use http.server",
    "urllib": "urllib.request (http.client, email, ssl: 30 modules) only for url mode's HEAD probe of a failed "
              "fetch; a task submission does not load it (issue 27)",
    "argparse": "only the server processes' command lines; the manager that starts them does not load it",
    "ctypes": "only die_with_parent's prctl call needs it",
    "stdlib_list": "only an analysis for another Python version than the running one needs its lists",
}

# Modules whose functions may import poncho_wq modules, the modules they may import that way, and why.
# 1. The lazy public API (PEP 562: the command-line tools import the package on every call). The command line
#    answers --help and bad arguments without loading the library by parsing first (poncho_wq/cli/parsers.py) and
#    importing the command's module afterwards by its name in poncho_wq.cli.main.COMMANDS;
#    tests/cli/test_startup.py counts what --help loads.
# 2. A task submission's light path (issue 27): a manager process that submits tasks of a prebuilt tarball, or of
#    a build it finds, needs neither the analysis nor the builders, the code layers or the parts cutter, and
#    loading them cost its first task 0.15 s (290 modules) before the first submit: a second workflow on warm
#    workers took 5-7x a warm rerun. Each is imported by the one function that needs it (analyze, build, give
#    code, cut parts, list parts); tests/bindings/test_task_import.py counts what ``import poncho_wq.task`` loads.
#    Anything else stays at the top.
_LIGHT_TASK = "issue 27: a task submission loads the analysis and the builders only when it analyzes or builds"
LAZY_INTERNAL = {
    "poncho_wq": (None, "the public API is imported on first use (PEP 562)"),
    "poncho_wq.assemble.environment": (("poncho_wq.analysis.analyzer", "poncho_wq.analysis.installation",
                                        "poncho_wq.engines", "poncho_wq.assemble.layers",
                                        "poncho_wq.assemble.project"), _LIGHT_TASK),
    "poncho_wq.task": (("poncho_wq.analysis.installation", "poncho_wq.archive.parts", "poncho_wq.assemble.layers"),
                       _LIGHT_TASK),
    "poncho_wq.archive.cache": (("poncho_wq.archive.parts",), _LIGHT_TASK + " (parts load the packer)"),
    # 3. A build loads the engine it uses (issue 27): the conda engine (asyncio, py-rattler's glue), the current and
    #    locked engines and the data fetcher were a fifth of a small build's imports, on every poncho_package_create.
    "poncho_wq.engines": (("poncho_wq.engines.conda", "poncho_wq.engines.current", "poncho_wq.engines.locked",
                           "poncho_wq.engines.data"), "issue 27: a build imports only the engine it runs"),
}


# Where settings (poncho_wq/config.py) are read: (module, setting) -> why there. "*": a Settings object is kept.
# A new read is a new hidden input: pass the value down from the entry, or add it here with its reason.
SETTINGS_READERS = {
    # 1. The entries. What a build's cache key, an analyzed environment or a delivery depends on is read once, here,
    #    and handed down as a value (poncho_wq.request.BuildRequest / PackageData, deliver.publish.Delivery).
    ("poncho_wq.engines", "*"): "build_request(): a build's target, keep_tests, conda_exe",
    ("poncho_wq.assemble.environment", "target"): "Environment(spec=...) called directly: the spec's default target",
    ("poncho_wq.assemble.environment", "*"): "from_script, ship_list, task_code: target, source, package data, "
                                             "all in their memo keys",
    ("poncho_wq", "*"): "poncho_wq.analyze(): the package data settings",
    ("poncho_wq.cli.analyze", "*"): "the command line: the package data settings",
    ("poncho_wq.deliver.publish", "*"): "distribution(): the delivery mode, publish dir and URL, fetch timeout",
    ("poncho_wq.taskvine", "vine_seed"): "declare_environment(): the TaskVine binding's entry",
    ("poncho_wq.taskvine", "parts"): "declare_environment(): the TaskVine binding's entry (PONCHO_WQ_PARTS)",
    ("poncho_wq.wq", "binding"): "which Work Queue binding to import: the bindings' entry",
    # 2. Public helpers called without a request: a build passes its request's value instead.
    ("poncho_wq.archive.pack", "keep_tests"): "pack_prefix() called directly",
    ("poncho_wq.engines.conda", "conda_exe"): "conda_tool() called directly",
    # 3. Where caches live: not what is in them.
    ("poncho_wq.archive.cache", "cache_dir"): "the build cache",
    ("poncho_wq.analysis.installation", "cache_dir"): "the installation memo",
    ("poncho_wq.analysis.scan", "cache_dir"): "the scan cache",
    ("poncho_wq.engines.conda", "conda_pkgs_dir"): "conda's package download cache",
    # 4. Runtime knobs: how a step runs or talks, never what it produces.
    ("poncho_wq.archive.pack", "source_date_epoch"): "the archive members' mtime (reproducible-builds convention)",
    ("poncho_wq.analysis.scan", "analyze_serial"): "how a scan runs (processes or not), not what it finds",
    ("poncho_wq.engines.data", "git_timeout"): "a timeout",
    ("poncho_wq.engines.data", "http_timeout"): "a timeout",
    ("poncho_wq.engines.pip", "http_timeout"): "a timeout",
    ("poncho_wq.deliver.serve", "*"): "cache_server(): the serve mode's server (address, access log)",
    ("poncho_wq.task", "parts"): "PonchoTask's delivery plan: how the environment travels, not what it is",
    ("poncho_wq.task", "part_mb"): "PonchoTask's delivery plan: how the environment is cut into parts",
    ("poncho_wq.waiting", "no_worker_notice"): "when the waiting manager prints its notice",
    ("poncho_wq.progress", "progress"): "how progress is shown",
    ("poncho_wq.cli.common", "debug"): "tracebacks on the command line",
    ("poncho_wq.cli.create", "debug"): "the command line's progress rendering",
}


def _settings_reads(module):
    """(setting or "*", line) for every ``settings(...)`` / ``Settings(...)`` call in *module*."""
    tree = ast.parse(open(MODULES[module]).read(), MODULES[module])
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("settings", "Settings"):
            parent = parents[node]
            reads.append((parent.attr if isinstance(parent, ast.Attribute) else "*", node.lineno))
    return reads


def _modules():
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


MODULES = _modules()


def stage_of(module):
    for index, (_, entries) in enumerate(STAGES):
        for entry in entries:
            if module == entry or (entry.endswith(".") and module.startswith(entry)):
                return index
    raise AssertionError("{} is in no stage of tests/test_structure.py's STAGES: add it".format(module))


def _targets(module, node):
    """The poncho_wq modules an import statement loads (by name), and its external top-level names."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            if not MODULES[module].endswith("__init__.py"):
                base = base[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        names = [prefix] + [prefix + "." + a.name for a in node.names if prefix + "." + a.name in MODULES]
    internal, external = set(), set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "poncho_wq":
            external.add(parts[0])
            continue
        while parts and ".".join(parts) not in MODULES:
            parts.pop()
        internal.add(".".join(parts))
    return internal, external


def _imports(module):
    """(internal targets, external names, line, inside a function) for every import statement of *module*."""
    tree = ast.parse(open(MODULES[module]).read(), MODULES[module])
    out = []

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                internal, external = _targets(module, child)
                out.append((internal - {module}, external, child.lineno, in_function))
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(tree, False)
    return out


def _graph():
    return {m: {t for internal, _, _, _ in _imports(m) for t in internal} for m in MODULES}


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_every_module_has_a_stage():
    for module in MODULES:
        stage_of(module)


def test_no_import_cycles():
    assert find_cycles(_graph()) == []


def test_no_module_imports_from_a_later_stage():
    late = []
    for module in sorted(MODULES):
        for internal, _, line, _ in _imports(module):
            for target in internal:
                if stage_of(target) > stage_of(module):
                    late.append("{}:{} imports {} ({} after {})".format(
                        module, line, target, STAGES[stage_of(target)][0], STAGES[stage_of(module)][0]))
    assert late == []


def test_imports_are_at_the_top_except_named_lazy_ones():
    inner = []
    for module in sorted(MODULES):
        for internal, external, line, in_function in _imports(module):
            if not in_function:
                continue
            allowed = LAZY_INTERNAL.get(module, ((),))[0]
            unnamed = set() if allowed is None else set(internal) - set(allowed)
            if unnamed:
                inner.append("{}:{} imports {} inside a function".format(module, line, ", ".join(sorted(unnamed))))
            for name in sorted(external - set(LAZY_EXTERNAL)):
                inner.append("{}:{} imports {} inside a function".format(module, line, name))
    assert inner == []


def test_errors_are_raised_by_kind_not_with_an_exit_code():
    bare = []
    for module, path in sorted(MODULES.items()):
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "PonchoError" \
                    and any(k.arg == "exit_code" for k in node.keywords):
                bare.append("{}:{}".format(module, node.lineno))
    assert bare == [], "raise SpecError/InputMissing/BuildError/ActivationError (poncho_wq/errors.py) instead"


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert find_cycles(graph) == expected


def test_settings_are_read_only_where_named():
    found, unnamed = set(), []
    for module in sorted(MODULES):
        if module == "poncho_wq.config":
            continue
        for setting, line in _settings_reads(module):
            found.add((module, setting))
            if (module, setting) not in SETTINGS_READERS:
                unnamed.append("{}:{} reads settings().{}".format(module, line, setting))
    assert unnamed == [], "pass the value down from the entry (a BuildRequest), or name the read in SETTINGS_READERS"
    assert sorted(set(SETTINGS_READERS) - found) == [], "SETTINGS_READERS names reads that are gone: remove them"


def test_the_key_settings_are_read_only_at_the_entries():
    key_settings = {"target", "keep_tests", "source", "conda_exe"}
    entries = {"poncho_wq.engines", "poncho_wq.assemble.environment", "poncho_wq.archive.pack",
               "poncho_wq.engines.conda"}
    readers = {m for (m, setting) in SETTINGS_READERS if setting in key_settings}
    assert readers <= entries
