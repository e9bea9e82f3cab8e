"""The serve mode's cache server (poncho_wq.deliver.serve): only content-addressed env-*.tar.gz names it was given,
read-only, no listing, no traversal, gone with the manager's process."""

import hashlib
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest

from poncho_wq.deliver import serve
from poncho_wq.errors import SpecError

NAME = "env-" + "5e" * 16 + ".tar.gz"


@pytest.fixture
def served(tmp_path):
    data = os.urandom(300000)
    path = tmp_path / "entry.tar.gz"
    path.write_bytes(data)
    (tmp_path / "secret.txt").write_text("not served")
    fetch = serve.serve_file(str(path), NAME, 300)
    yield fetch, data
    serve.stop()


def _request(url, path, method="GET"):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_serves_the_given_name_with_its_size_and_sha256(served):
    fetch, data = served
    assert (fetch.name, fetch.size, fetch.sha256) == (NAME, len(data), hashlib.sha256(data).hexdigest())
    assert fetch.url.startswith("http://127.0.0.1:") and fetch.url.endswith("/" + NAME)
    assert _request(fetch.url, "/" + NAME) == (200, data)
    assert _request(fetch.url, "/" + NAME, "HEAD") == (200, b"")


@pytest.mark.parametrize("path", ["/", "/entry.tar.gz", "/secret.txt", "/../secret.txt", "/%2e%2e/secret.txt",
                                  "/" + NAME + "/..", "/x/" + NAME, "/" + NAME + "?x=1", "/" + NAME.upper(),
                                  "/env-" + "0" * 32 + ".tar.gz", "/.tmp-1-" + NAME])
def test_anything_else_is_not_found(served, path):
    fetch, _ = served
    status, body = _request(fetch.url, path)
    assert status == 404 and b"not served" not in body


def test_no_write_methods(served):
    fetch, data = served
    for method in ("PUT", "POST", "DELETE"):
        assert _request(fetch.url, "/" + NAME, method)[0] == 501
    assert _request(fetch.url, "/" + NAME) == (200, data)


def test_only_content_addressed_names_are_accepted(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError):
        serve.cache_server().add(str(path), "../x.tar.gz")
    serve.stop()


def test_the_server_ends_with_its_manager_even_killed(tmp_path):
    code = ("import sys, os; from poncho_wq.deliver import serve; p = sys.argv[1]; open(p, 'wb').write(b'x');"
            "s = serve.cache_server(); print(s.process.pid, s.links, flush=True); import time; time.sleep(60)")
    manager = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "f")], stdout=subprocess.PIPE, text=True)
    pid, links = manager.stdout.readline().split()
    os.kill(manager.pid, signal.SIGKILL)
    manager.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the cache server outlived its killed manager")


def test_serve_address_setting(monkeypatch):
    from poncho_wq.config import settings

    assert settings({}).serve_address == "127.0.0.1"
    assert settings({"PONCHO_WQ_SERVE_ADDRESS": " 0.0.0.0 "}).serve_address == "0.0.0.0"
    with pytest.raises(SpecError, match="PONCHO_WQ_SERVE_ADDRESS"):
        settings({"PONCHO_WQ_SERVE_ADDRESS": "http://h/"}).serve_address
