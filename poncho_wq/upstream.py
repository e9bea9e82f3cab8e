"""Drop-ins for upstream poncho's Python entry points, so code written for ``ndcctools.poncho`` runs unchanged.

Why: TaskVine's own example (``vine_example_poncho_in_python.py``) and user scripts call
``ndcctools.poncho.package_create.dict_to_env(spec)`` and hand the returned tarball to ``declare_poncho``. Upstream
needs a ``conda`` executable (or downloads micromamba) for that. Here the same call builds with poncho_wq's engines
(py-rattler for conda sections, a relocatable interpreter + pip otherwise) and its content-addressed cache:

    from poncho_wq.upstream import dict_to_env        # instead of: from ndcctools.poncho.package_create import ...
    path = dict_to_env({"conda": ["conda-forge::python=3.11", "conda-forge::numpy"], "pip": ["dill"]})
    m.declare_poncho(path, cache=True)

Differences, on purpose: with ``cache=True`` the returned path is the entry in poncho_wq's build cache (read-only;
``cache_path`` chooses that cache's directory), never a file written into the current directory; with
``cache=False`` or ``force=True`` the environment is built anew (the cache is neither read nor written) into a new
temporary directory whose path is returned. The spec is validated first: a bad spec raises
:class:`~poncho_wq.errors.SpecError` naming the field. ``download_micromamba`` and ``ignore_editable_packages`` are
accepted for compatibility and have no effect (no conda executable is needed; local packages are not part of a
spec).
"""

import os
import tempfile

from .engines import build_request, create_request
from .errors import InputMissing, SpecError
from .spec import as_spec, loads


def _conda_exe(conda_executable, who):
    """Upstream's ``conda_executable=``, checked; the build request carries it to the conda engine (it used to
    travel through ``$PONCHO_CONDA_EXE``, set and restored around the build: visible to every thread)."""
    if conda_executable is None:
        return None
    if not (isinstance(conda_executable, str) and os.path.isfile(conda_executable)
            and os.access(conda_executable, os.X_OK)):
        raise InputMissing("{} conda_executable: {!r} is not an executable file; pass the path of conda, mamba or "
                           "micromamba, or leave it out (py-rattler is used)".format(who, conda_executable))
    return conda_executable


def dict_to_env(spec, conda_executable=None, download_micromamba=False, ignore_editable_packages=False, cache=True,
                cache_path=None, force=False):
    """Build the environment *spec* (a dict, a JSON string as upstream accepts, a Spec or a spec file path) and
    return the path of its tarball. See the module docstring for how ``cache``/``cache_path``/``force`` map."""
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        spec = loads(spec, "<dict_to_env spec>")
    elif isinstance(spec, bytes):
        raise SpecError("dict_to_env spec: bytes are not valid; expected a dict, a JSON string or a spec file path")
    spec = as_spec(spec)
    request = build_request(spec, conda_exe=_conda_exe(conda_executable, "dict_to_env"))
    if cache and not force:
        return create_request(request, cache_dir=cache_path).path
    out_dir = tempfile.mkdtemp(prefix="poncho-env-")
    output = os.path.join(out_dir, "env-{}.tar.gz".format(spec.digest()[:32]))
    return create_request(request, output, use_cache=False).path


def pack_env_from_dict(spec, output, conda_executable=None, download_micromamba=False,
                       ignore_editable_packages=False):
    """Upstream's ``pack_env_from_dict(spec, output)``: build *spec* into the tarball *output* (through the build
    cache; the file at *output* is a copy, so changing it never touches the cache); returns *output*'s absolute
    path."""
    create_request(build_request(as_spec(spec), conda_exe=_conda_exe(conda_executable, "pack_env_from_dict")), output)
    return os.path.abspath(output)
