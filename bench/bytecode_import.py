"""Import time inside a poncho_wq environment vs a venv with compiled bytecode, measured in one run (issue 14).

    python3 bench/bytecode_import.py [--package sympy] [--runs 5]

Builds the environment of ``{"pip": [PACKAGE]}`` (portable engine, from the index) and a venv with the same
package installed by ``uv pip install --compile-bytecode``. Then, per side, the wall time of
``python3 -c "import PACKAGE"`` (for sympy also ``sympy.integrate(x**2)``):
* first task: right after the shim unpacked the environment into a fresh root (unpack not counted: the shim runs
  ``true`` first), the venv's first run after a ``sync``;
* later tasks: the median of ``--runs`` more runs.
The environment side runs through ``poncho_package_run`` (warm path, about 1 ms). Goals: first <= 1.5x, later
<= 1.2x the venv. Printed, never asserted.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from poncho_wq.shim import shim_path  # noqa: E402
from poncho_wq.tools import find_tool  # noqa: E402


def timed(argv, env=None):
    t = time.perf_counter()
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="sympy")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    code = "import {0}".format(args.package)
    if args.package == "sympy":
        code += "; sympy.integrate(sympy.Symbol('x') ** 2)"
    work = tempfile.mkdtemp(prefix="bytecode-bench-")
    try:
        spec = os.path.join(work, "spec.json")
        with open(spec, "w") as f:
            json.dump({"python": "{}.{}".format(*sys.version_info[:2]), "pip": [args.package]}, f)
        tarball = os.path.join(work, "env.tar.gz")
        env = dict(os.environ, PONCHO_WQ_CACHE=os.path.join(work, "cache"))
        subprocess.run([sys.executable, "-m", "poncho_wq", "create", "-q", spec, tarball], env=env, check=True)
        venv = os.path.join(work, "venv")
        uv = find_tool("uv")
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, venv], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python",
                        os.path.join(venv, "bin", "python"), args.package], check=True)

        root = os.path.join(work, "root")
        shim = ["sh", shim_path(), "-e", tarball, "--"]
        run_env = dict(os.environ, PONCHO_ENV_DIR=root, PATH="/usr/bin:/bin")
        subprocess.run(shim + ["true"], env=run_env, check=True)  # unpack, not counted
        subprocess.run(["sync"])
        ours = [timed(shim + ["python3", "-c", code], run_env) for _ in range(args.runs + 1)]
        venv_py = [os.path.join(venv, "bin", "python"), "-c", code]
        subprocess.run(["sync"])
        base = [timed(venv_py) for _ in range(args.runs + 1)]
        first, later = ours[0] / base[0], statistics.median(ours[1:]) / statistics.median(base[1:])
        print("import {} ({}), {} later runs".format(args.package, code, args.runs))
        print("  venv with bytecode   first {:6.3f} s  later {:6.3f} s".format(base[0], statistics.median(base[1:])))
        print("  poncho_wq env        first {:6.3f} s  later {:6.3f} s".format(ours[0], statistics.median(ours[1:])))
        print("  ratio                first {:6.2f}x  later {:6.2f}x   (goals <= 1.5x, <= 1.2x)".format(first, later))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
