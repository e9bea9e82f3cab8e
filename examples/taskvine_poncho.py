"""TaskVine with a poncho_wq environment: directly (declare_environment / PonchoVineTask) and from Parsl.

    python3 taskvine_poncho.py          # starts one local vine_worker itself

poncho_wq.taskvine unpacks the tarball once per worker with a mini task (the run shim's --extract-to: pigz when
the worker has it; in place of declare_poncho's tar xf) and TaskVine runs each task through the tarball's
bin/run_in_env, which every poncho_wq tarball carries (it relocates the environment lazily where TaskVine moved
it, then activates it).
"""

import json
import os
import subprocess
import sys
import tempfile

from ndcctools import taskvine as vine

from poncho_wq.taskvine import PonchoVineTask, declare_environment


def main():
    m = vine.Manager(port=0, run_info_path=tempfile.mkdtemp(prefix="vine-run-info-"))  # logs, not the cwd
    worker = subprocess.Popen(["vine_worker", "localhost", str(m.port), "--single-shot"])
    try:
        # A spec (or a prebuilt poncho_wq tarball, or None = analyze the commands' scripts).
        spec = os.path.join(tempfile.mkdtemp(), "spec.json")
        with open(spec, "w") as f:
            json.dump({"python": "{}.{}".format(*sys.version_info[:2]), "pip": ["humanize"]}, f)
        env = declare_environment(m, spec)               # built once, declared once per manager
        probe = "python3 -c 'import humanize; print(humanize.intcomma(1234567))'"
        t = vine.Task(probe)
        t.add_environment(env)                           # plain TaskVine task + the environment
        m.submit(t)
        m.submit(PonchoVineTask(m, probe, environment=spec))  # the same, in one call
        while not m.empty():
            t = m.wait(5)
            if t:
                print(t.result, t.exit_code, t.output.strip())
    finally:
        worker.terminate()
        worker.wait()


if __name__ == "__main__":
    main()
