"""A prebuilt environment tarball: build it once (here with the API; `poncho_package_create` does the same),
then hand the file to every task.

    python3 examples/prebuilt_tarball.py
"""

import os
import shutil
import sys
import tempfile

import poncho_wq
from localworkers import local_workers
from poncho_wq import PonchoTask, wq


def main():
    out = os.path.join(tempfile.mkdtemp(prefix="poncho-example-"), "humanize-env.tar.gz")
    spec = {"python": "{}.{}".format(*sys.version_info[:2]), "pip": ["humanize"]}
    built = poncho_wq.create(spec, output=out, progress=True)
    print("tarball", out, "({:.1f} MB, {})".format(built.size / 1e6, "cache hit" if built.cache_hit else "built"))

    binding = wq.load()
    q = binding.WorkQueue(port=0)
    try:
        with local_workers(binding, q.port, 1):
            q.submit(PonchoTask("python3 -c 'import humanize; print(humanize.naturaldelta(3600))'", environment=out))
            t = None
            while t is None:
                t = q.wait(5)
            print(t.std_output.strip())
            return t.return_status
    finally:
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
