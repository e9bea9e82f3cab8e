"""poncho_wq.analysis.scan: the static conditions of import guards and the static sys.path entries (issue 24), on source
text as real projects write it (SWIG-4's generated guard verbatim)."""

import textwrap

import pytest

from poncho_wq.analysis.scan import Context, PathEntry, evaluate, scan_source

#: The first lines of every SWIG-4 generated module (CCTools' ndcctools/cwork_queue.py, verbatim).
SWIG = '''\
from sys import version_info as _swig_python_version_info
# Import the low-level C/C++ module
if __package__ or "." in __name__:
    from . import _cwork_queue
else:
    import _cwork_queue

try:
    import builtins as __builtin__
except ImportError:
    import __builtin__
'''

IN_PACKAGE = Context(True, True, (3, 11, 7))
TOP_LEVEL = Context(False, False, (3, 11, 7))
SCRIPT = Context(None, None, (3, 11, 7))


def _live(source, ctx, filename="/abs/pkg/mod.py"):
    """The import names live in *ctx* (no guard false there)."""
    out = []
    for ref in scan_source(textwrap.dedent(source), filename).imports:
        if not any(evaluate(cond, ctx) is (not taken) for cond, taken in ref.guards):
            out.append(("." * ref.level) + (ref.module or ",".join(ref.names)))
    return out


def test_the_swig_guard_keeps_one_branch_per_context():
    assert _live(SWIG, IN_PACKAGE) == ["sys", "._cwork_queue", "builtins", "__builtin__"]
    assert _live(SWIG, TOP_LEVEL) == ["sys", "_cwork_queue", "builtins", "__builtin__"]
    # a script may run as a file or with -m: both branches stay
    assert _live(SWIG, SCRIPT) == ["sys", "._cwork_queue", "_cwork_queue", "builtins", "__builtin__"]
    # an __init__ of a top-level package: __package__ is set, "." is not in __name__: still the relative branch
    assert _live(SWIG, Context(True, False, (3, 11, 7))) == ["sys", "._cwork_queue", "builtins", "__builtin__"]


def test_a_relative_import_fallback_is_dead_in_a_package():
    src = """
        try:
            from . import _speedups
            from .compat import thing
        except ImportError:
            import _speedups
            from compat import thing
            import unrelated_fallback
    """
    assert _live(src, IN_PACKAGE) == ["._speedups", ".compat", "unrelated_fallback"]
    assert _live(src, TOP_LEVEL) == ["._speedups", ".compat", "_speedups", "compat", "unrelated_fallback"]


@pytest.mark.parametrize("test,live_on_311", [
    ("sys.version_info < (3,)", False),
    ("sys.version_info[0] == 2", False),
    ("sys.version_info.major >= 3", True),
    ("sys.version_info >= (3, 8)", True),
    ("sys.version_info[:2] < (3, 11)", False),
    ("(3, 12) <= sys.version_info", False),
    ("six.PY2", False),
    ("not six.PY3", False),
    ("sys.platform == 'win32'", False),
    ("sys.platform.startswith('win')", False),
    ("sys.platform in ('darwin', 'win32')", False),
    ("sys.platform.startswith('linux')", True),
    ("os.name == 'nt'", False),
    ("platform.system() == 'Windows'", False),
    ("sys.platform == 'win32' or os.name == 'posix'", True),
    ("sys.platform == 'win32' and some_flag", False),
    ("some_flag", True),  # not understood: live
    ("sys.version_info >= (3, 11, 2)", True),
])
def test_version_and_platform_guards(test, live_on_311):
    src = "if {}:\n    import body_mod\nelse:\n    import else_mod\n".format(test)
    live = _live(src, SCRIPT)
    if test == "some_flag":
        assert live == ["body_mod", "else_mod"]
    else:
        assert live == (["body_mod"] if live_on_311 else ["else_mod"])


def test_unknown_micro_version_keeps_both_branches():
    src = "if sys.version_info >= (3, 11, 2):\n    import a\nelse:\n    import b\n"
    assert _live(src, Context(None, None, (3, 11))) == ["a", "b"]


def test_static_sys_path_entries():
    src = textwrap.dedent('''
        import os, site, sys
        from os.path import dirname, join
        from pathlib import Path
        HERE = os.path.dirname(os.path.abspath(__file__))
        ROOT = Path(__file__).resolve().parent
        sys.path.insert(0, os.path.join(HERE, "lib"))
        sys.path.insert(1, str(ROOT / "vendor" / "x"))
        sys.path.append(join(dirname(__file__), "..", "shared"))
        sys.path.extend([str(Path(__file__).parents[1] / "up"), "relative/dir"])
        site.addsitedir(os.fspath(Path(__file__).parent.joinpath("site")))
        sys.path.insert(0, os.getcwd())
        sys.path.insert(0, os.environ["SOMEWHERE"])  # not static: no entry
        sys.path.insert(0, HERE + "/plus")
        def later():
            sys.path.append(os.path.join(HERE, "in_function"))
    ''')
    paths = scan_source(src, "/proj/jobs/job.py").paths
    assert paths == (
        PathEntry("front", "/proj/jobs/lib", 7),
        PathEntry("front", "/proj/jobs/vendor/x", 8),
        PathEntry("back", "/proj/shared", 9),
        PathEntry("back", "/proj/up", 10),
        PathEntry("back", "relative/dir", 10),
        PathEntry("back", "/proj/jobs/site", 11),
        PathEntry("front", ".", 12),
        PathEntry("front", "/proj/jobs/plus", 14),
        PathEntry("back", "/proj/jobs/in_function", 16),
    )


def test_no_file_no_file_relative_entries():
    """Source from stdin has no __file__: what depends on it is not static."""
    src = "import os, sys\nsys.path.insert(0, os.path.dirname(__file__))\nsys.path.insert(0, 'lib')\n"
    assert scan_source(src, "<stdin>").paths == (PathEntry("front", "lib", 3),)


def test_non_identifier_dynamic_import_names_are_skipped():
    """Issue 29 (low list): `__import__("os;rm -rf /")` failed the whole analysis."""
    src = '__import__("os;rm -rf /")\nimportlib.import_module("a b")\n__import__("json")\nimport_module("x.y")\n'
    assert [r.module for r in scan_source(src, "t.py").imports] == ["json", "x.y"]
