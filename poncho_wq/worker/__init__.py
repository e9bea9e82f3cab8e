"""What runs on a worker, kept in one place and assembled into the scripts that travel there.

The run shim (``poncho_package_run``, also installed as ``python_package_run``) and ``bin/run_in_env`` (inside
every tarball) share their activation, relocation and floor-check code. Each must stay one self-contained POSIX
sh file: Parsl and Work Queue's PythonTask copy the shim they find on PATH to workers that have nothing else,
and a tarball may travel without the shim. So the shared code lives once here (``shared.sh``, with the
relocator :mod:`poncho_wq.worker.relocate` embedded as a Python string) and the scripts are generated from
``<name>.sh`` templates into ``poncho_wq/data/``, where setup.cfg's ``scripts=`` installs them verbatim (``pip
install -e .`` included) and :mod:`poncho_wq.shim` finds them. The generated files are committed;
``python -m poncho_wq.worker`` rewrites them after an edit here, and a test fails while one is stale.
The design of the shim (cache layout, trust, locking, relocation, activation) is described in docs/worker.md.
"""

import ast
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_DATA = os.path.join(os.path.dirname(_HERE), "data")

#: Generated file (in poncho_wq/data/) -> its template (in poncho_wq/worker/). data/python_package_run is a
#: symbolic link to poncho_package_run (setup.cfg installs both names).
SCRIPTS = {
    "poncho_package_run": "poncho_package_run.sh",
    "run_in_env": "run_in_env.sh",
}

_GENERATED = ("# Generated from poncho_wq/worker/{} and shared.sh by `python -m poncho_wq.worker`: edit those, "
              "not this file.\n")


def _read(name):
    with open(os.path.join(_HERE, name)) as f:
        return f.read()


def relocator_code():
    """The code of :mod:`poncho_wq.worker.relocate` as the scripts embed it: without its docstring and whole
    comment lines (the shim travels with every task), checked to fit in a sh single-quoted string."""
    source = _read("relocate.py")
    lines = source.splitlines()
    docstring = ast.parse(source).body[0]
    body = lines[docstring.end_lineno:]
    code = "\n".join(line for line in body if line.strip() and not line.lstrip().startswith("#"))
    if "'" in code:
        raise ValueError("poncho_wq/worker/relocate.py: its code holds a single quote, which would end the sh "
                         "string the scripts embed it in: use double quotes")
    return code


def shared_code():
    """The code both scripts hold (shared.sh with the relocator embedded): sh functions, nothing run."""
    return _read("shared.sh").replace("@RELOCATE_PY@", relocator_code())


def render(name):
    """The text of the generated script *name* (a key of :data:`SCRIPTS`)."""
    template = SCRIPTS[name]
    text = _read(template)
    if text.count("@SHARED@\n") != 1:
        raise ValueError("poncho_wq/worker/{}: needs exactly one @SHARED@ line".format(template))
    shebang, rest = text.split("\n", 1)
    rest = rest.replace("@SHARED@\n", shared_code())
    if "@FETCH@" in rest:
        rest = rest.replace("@FETCH@", shim_fetch_code())
    return shebang + "\n" + _GENERATED.format(template) + rest


def conda_unpack_header():
    """The first lines that replace conda-unpack's ``#!/usr/bin/env python`` in every tarball (bytes, verbatim
    from conda_unpack_header.sh, no comment possible: it is both sh and Python, pip's trick for long shebangs).
    sh runs the environment's own bin/python on the script, falling back to python3; Python sees a harmless
    string expression. Upstream's and Debian's python_package_run execute bin/conda-unpack directly, which fails
    on a worker without a ``python`` on PATH (Debian has only python3)."""
    with open(os.path.join(_HERE, "conda_unpack_header.sh"), "rb") as f:
        return f.read()


def fetch_sections():
    """The sections of fetch.sh (``#@ name`` lines) as the one-line sh texts the fetch commands embed: whole comment
    lines and blank lines dropped, the other lines joined without a separator (each ends where sh allows a
    newline). One source for Work Queue's fetch command, TaskVine's fetch mini task and the shim's ``--fetch``."""
    sections, name = {}, None
    for line in _read("fetch.sh").splitlines():
        if line.startswith("#@ "):
            name = line[3:].strip()
            sections[name] = []
        elif name is not None and line.strip() and not line.lstrip().startswith("#"):
            sections[name].append(line)
    return {key: "".join(lines) for key, lines in sections.items()}


#: A transfer under 1 KB/s for this many seconds fails (fetch.sh's @STALL@). Work Queue's workers run a fetch command
#: synchronously: while it runs they answer no keepalive, and a manager drops a worker that leaves its keepalive check
#: unanswered for 30 s (CCTools' default), then sends the task again (measured: 561 s, 5 GETs, no result with a hung
#: server).
STALL_SECONDS = 20


def shim_fetch_code():
    """The fetch the shim's ``--fetch`` runs (its ``@FETCH@``): fetch.sh's sections with the downloader chosen on
    the worker by the URL's scheme (the manager-side commands choose it in Python)."""
    s = fetch_sections()
    return (s["shown"] + s["tools"] + 'if [ "${u#file://}" != "$u" ];then l=${u#file://};' + s["file"] + "else " +
            s["http"].replace("@STALL@", str(STALL_SECONDS)) + "fi;" + s["check"])


def generated_path(name):
    """Where the generated script *name* lives (poncho_wq/data/)."""
    return os.path.join(_DATA, name)


def write_scripts():
    """Regenerate every script in poncho_wq/data/ (atomically: temp + rename, mode 0755); returns the names of
    those that changed."""
    changed = []
    for name in SCRIPTS:
        path = generated_path(name)
        text = render(name)
        try:
            with open(path) as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        changed.append(name)
    return changed


def main():
    for name in write_scripts():
        print("wrote " + generated_path(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
