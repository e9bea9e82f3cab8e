"""The code blocks of README.md and docs/*.md run as written (issue 25: snippets failed as written).

Each file's runnable blocks (tests/helpers/docblocks.py: ```python and ```sh blocks not marked as fragments) run in
order in one scratch directory, as a reader would paste them: ``sh`` blocks with bash, ``python`` blocks as
scripts, each in its own process with a time limit. The directory holds a copy of ``examples/`` (blocks name
``examples/project_job`` as in a checkout) and nothing else: what a block uses, an earlier block made. When a
block prints a worker command (``work_queue_worker localhost PORT`` / ``vine_worker localhost PORT``), the test
runs it as the reader would in a second terminal: a real worker from the source-built CCTools (the binding
``wq.load()`` picks first here) with the workers' scrubbed environment, so the job's imports come from the shipped
environment only. Blocks that start their own workers (the first quickstart, Parsl's LocalProvider) do so
themselves. One build cache serves all blocks.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from helpers.docblocks import ROOT, blocks, doc_files, runnable
from helpers.wqutil import cctools_bin, fixed_disk_args, start_worker_process, stop_worker_process

WORKER_LINE = re.compile(r"\b(work_queue_worker|vine_worker) localhost (\d+)\b")
BLOCK_TIMEOUT = 900
#: What the blocks of a file print when their tasks really ran (outputs of job.py, the functions and the graphs).
EXPECTED = {
    "README.md": ["0 7.0 billion", "success 7.0 billion", "success 1.0 billion", "499500", "'1,000,003'"],
    "docs/usage.md": ["0 7.0 billion", "0 8.0 billion", "0 1.0 billion"],
}
FILES = [p for p in doc_files() if any(runnable(b) for b in blocks(p))]


def test_every_file_with_runnable_blocks_says_what_they_print():
    assert sorted(FILES) == sorted(EXPECTED), "add the new file's expected output to EXPECTED"


def _run_block(block, sandbox, env, index, log):
    if block.language == "sh":
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        script = os.path.join(sandbox, "block{:02d}.py".format(index))
        with open(script, "w") as f:
            f.write(block.code)
        cmd = [sys.executable, script]
    workers = []
    out_lines = []
    with open(os.path.join(sandbox, "block{:02d}.stderr".format(index)), "w+") as err:
        p = subprocess.Popen(cmd, cwd=sandbox, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=err, text=True, start_new_session=True)

        def read():
            for line in p.stdout:
                out_lines.append(line)
                m = WORKER_LINE.search(line)
                if m:  # the reader's second terminal
                    workdir = os.path.join(sandbox, "..", "worker{}-{}".format(index, len(workers)))
                    # a fixed disk, as Cluster.start_worker's (see wqutil.fixed_disk_args)
                    workers.append(start_worker_process(cctools_bin(m.group(1)), int(m.group(2)), workdir,
                                                        extra=fixed_disk_args(sandbox)))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            p.wait(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        finally:
            reader.join(timeout=30)
            for w in workers:
                stop_worker_process(w)
            try:
                os.killpg(p.pid, signal.SIGKILL)  # what the block left running (its own workers)
            except ProcessLookupError:
                pass
        err.seek(0)
        stderr = err.read()
    out = "".join(out_lines)
    log.append("--- {} (exit {})\n{}{}".format(block.where, p.returncode, out, stderr[-3000:]))
    assert p.returncode == 0, "\n".join(log)
    assert "Traceback" not in stderr, "\n".join(log)
    return out


@pytest.mark.parametrize("path", FILES)
def test_blocks_run_as_written(path, tmp_path, e2e_cache):
    sandbox = tmp_path / "doc"
    shutil.copytree(os.path.join(ROOT, "examples"), sandbox / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PONCHO_WQ_CACHE=e2e_cache, PYTHONUNBUFFERED="1")
    env.pop("PONCHO_WQ_BINDING", None)  # what a reader gets: the first binding that imports
    log, output = [], ""
    for index, block in enumerate(b for b in blocks(path) if runnable(b)):
        output += _run_block(block, str(sandbox), env, index, log)
    for needle in EXPECTED[path]:
        assert needle in output, "{!r} not printed:\n{}".format(needle, "\n".join(log))
