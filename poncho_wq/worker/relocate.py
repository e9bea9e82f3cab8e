"""The relocator: rewrite an unpacked conda-pack environment's prefix records for the directory it now lives in.

Runs on the worker, with the environment's own ``bin/python`` (or the worker's python3), started by the run
shim and by ``bin/run_in_env`` as ``python -E -s -c <this file's code> FILES PREFIX [WAIT]``: the build step
(:mod:`poncho_wq.worker`) embeds this file's code, without its docstring and comment lines, in both scripts,
because the shim must stay one self-contained sh file and it also relocates tarballs poncho_wq did not make.
Hence the rules for this file: the standard library only (no poncho_wq on the worker), syntax of Python 3.8
(the oldest interpreter an environment may hold), no single quote in the code (it sits inside a sh
single-quoted string; the docstring and whole comment lines are left out) and no comment after code on a line.

Why not conda-unpack itself: it computes the new prefix from its own location and only replaces the pristine
placeholder, so it can neither relocate a temp dir for its final name nor fix an environment that was moved
after a first relocation (TaskVine moves it into its cache). This reads conda-unpack's ``_prefix_records``
(without running it) and rewrites them (text: replace; binary: replace and keep the length, NUL-padded), from
the prefix recorded in ``.poncho_ready`` (or the placeholder), then records the new prefix there and appends
``<epoch> <pid> <from> <to>`` to ``.poncho_relocations``. With WAIT (seconds), it first takes an exclusive
flock on FILES (in-place callers with no lock of their own: concurrent first tasks wait, then find it done).
Every failure is one line ``poncho_wq relocate: FILES: why`` and exit status 1.
"""

import ast
import fcntl
import os
import re
import sys
import time


def main(argv):
    files, prefix = argv[0], argv[1]
    wait = argv[2] if len(argv) > 2 else ""
    mark = os.path.join(files, ".poncho_ready")

    def recorded():
        try:
            with open(mark) as f:
                return f.readline().rstrip("\n")
        except OSError:
            return None

    def fail(msg):
        sys.exit("poncho_wq relocate: %s: %s" % (files, msg))

    if wait:
        fd = os.open(files, os.O_RDONLY)
        end = time.time() + int(wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > end:
                    fail("timed out after %s s waiting for the lock" % wait)
                time.sleep(0.05)
    old = recorded()
    if old == prefix:
        sys.exit(0)
    with open(os.path.join(files, "bin", "conda-unpack"), "rb") as f:
        tree = ast.parse(f.read())
    recs = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "_prefix_records" for t in n.targets)]
    if not recs:
        fail("bin/conda-unpack has no _prefix_records (not made by conda-pack?)")
    new = prefix.encode()
    for path, placeholder, mode in recs[-1]:
        o = (old or placeholder).encode()
        p = os.path.join(files, path)
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError as e:
            fail(e)
        if mode == "text":
            out = data.replace(o, new)
        elif mode == "binary":
            def sub(m):
                s = new + m.group(1)
                n = len(m.group(0)) - len(s)
                if n < 1:
                    fail("%s: no room for prefix %s in this binary file" % (path, prefix))
                return s + b"\0" * n
            out = re.sub(re.escape(o) + b"([^\0]*)\0+", sub, data)
        else:
            fail("%s: unknown mode %r" % (path, mode))
        if out != data:
            t = p + ".poncho-tmp"
            with open(t, "wb") as f:
                f.write(out)
            os.chmod(t, os.stat(p).st_mode & 0o7777)
            os.replace(t, p)
    with open(mark + ".tmp", "w") as f:
        f.write(prefix + "\n")
    os.replace(mark + ".tmp", mark)
    try:
        with open(os.path.join(files, ".poncho_relocations"), "a") as f:
            f.write("%d %d %s %s\n" % (time.time(), os.getpid(), old or "(placeholder)", prefix))
    except OSError:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
