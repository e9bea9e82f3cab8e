"""Environment resolution across processes: the build source chosen for source="auto", and reuse of the cache."""

import json
import os
import subprocess
import sys

DRIVER = r"""
import json, sys
from poncho_wq import Environment
env = Environment.from_script(sys.argv[1])
env.build()
print(json.dumps({"source": env.source, "hit": env.build_result.cache_hit, "name": env.remote_name}))
"""
OFFLINE = {"PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}


def resolve(script, cache, **env):
    full = dict(os.environ, PONCHO_WQ_CACHE=str(cache), **env)
    full.pop("PONCHO_WQ_SOURCE", None)
    full.update(env)
    r = subprocess.run([sys.executable, "-c", DRIVER, str(script)], env=full, capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_auto_source_reuses_a_cached_index_build_without_the_network(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import humanize\n")
    first, _ = resolve(script, tmp_path / "cache", PONCHO_WQ_SOURCE="index")
    assert first["source"] == "index" and not first["hit"]
    # No index reachable now, but the index build of the same spec is in the cache: reused, not rebuilt.
    again, err = resolve(script, tmp_path / "cache", **OFFLINE)
    assert again == {"source": "index", "hit": True, "name": first["name"]}
    assert "no package index" not in err
    # An empty cache and no index: built from the running environment, and said so.
    fresh, err = resolve(script, tmp_path / "other-cache", **OFFLINE)
    assert fresh["source"] == "current" and not fresh["hit"]
    assert "running environment" in err
