"""Distributions a submodule import needs beyond its own distribution (``dask.array`` -> numpy).

Why this exists: the analyzer maps each import to the distribution that provides its top-level name, so
``import dask.array as da`` becomes ``dask`` alone. But dask's array, dataframe and distributed parts import
packages that ``dask`` itself does not require (they are its ``[array]``/``[dataframe]``/``[distributed]`` extras),
so a DaskVine graph built with ``dask.array`` failed on the worker with "No module named 'numpy'". This module
finds the dotted imports of the given files (AST only, like the analyzer) and names the extra distributions,
which callers add with ``extra_pkgs`` (pinned to the installed versions by the analyzer).

Kept apart from :mod:`poncho_wq.analyze` on purpose (another change is under way there): the analyzer can call
:func:`extra_distributions` on the files it already parsed and add the result, and this module then becomes its
mapping table.
"""

import ast

#: dotted import prefix -> distributions the submodule imports that its package does not require. Taken from the
#: extras of dask 2024.12 (``dask[array]`` = numpy; ``dask[dataframe]`` = pandas, numpy, dask-expr, pyarrow;
#: ``dask[distributed]`` = distributed).
SUBMODULE_NEEDS = {
    "dask.array": ("numpy",),
    "dask.dataframe": ("numpy", "pandas", "dask-expr", "pyarrow"),
    "dask.distributed": ("distributed",),
}


def dotted_imports(source, filename="<source>"):
    """Every dotted module name *source* imports (``import a.b``, ``from a.b import c``, ``from a import b`` gives
    both ``a`` and ``a.b``)."""
    try:
        tree = ast.parse(source, filename)
    except (SyntaxError, ValueError, RecursionError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update("{}.{}".format(node.module, alias.name) for alias in node.names if alias.name != "*")
    return names


def extra_distributions(paths=(), sources=()):
    """The extra distributions (sorted) that the files *paths* and source texts *sources* need through
    :data:`SUBMODULE_NEEDS`."""
    names = set()
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                names |= dotted_imports(f.read(), path)
        except OSError:
            continue
    for text in sources:
        names |= dotted_imports(text)
    out = set()
    for name in names:
        for prefix, needs in SUBMODULE_NEEDS.items():
            if name == prefix or name.startswith(prefix + "."):
                out.update(needs)
    return sorted(out)
