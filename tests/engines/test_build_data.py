"""Data sections against real sources: a git repository made with `git init` in tmp, and files served by a real
HTTP server on 127.0.0.1 (never the internet)."""

import bz2
import collections
import gzip
import hashlib
import http.server
import io
import json
import lzma
import os
import socket
import subprocess
import tarfile
import threading
import time

import pytest

from helpers.cli import closed_port
from poncho_wq.engines.data import fetch_data
from poncho_wq.errors import BuildError, PonchoError, SpecError
from poncho_wq.spec import parse_spec


def git(*args, cwd):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org", GIT_CONFIG_NOSYSTEM="1", HOME=str(cwd))
    return subprocess.run(["git"] + list(args), cwd=str(cwd), env=env, check=True, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository with two commits: v1 (tagged) has data/v.txt = "one"; main's HEAD has "two" and extra.txt."""
    path = tmp_path_factory.mktemp("gitrepo") / "repo"
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    (path / "data").mkdir()
    (path / "data" / "v.txt").write_text("one\n")
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "one", cwd=path)
    git("tag", "v1", cwd=path)
    first = git("rev-parse", "HEAD", cwd=path)
    (path / "data" / "v.txt").write_text("two\n")
    (path / "extra.txt").write_text("extra\n")
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "two", cwd=path)
    second = git("rev-parse", "HEAD", cwd=path)
    return {"path": str(path), "first": first, "second": second}


def build(tmp_path, spec_dict):
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    fetch_data(parse_spec(spec_dict), str(prefix), None)
    return prefix


def source_set_env(prefix, *variables):
    """Source poncho/set_env exactly like the run shim ($1 = the env dir) and print the variables."""
    script = 'set -- "$1"; . "$1/poncho/set_env"; ' + "; ".join('printf "%s\\n" "${}"'.format(v) for v in variables)
    return subprocess.run(["sh", "-c", script, "sh", str(prefix)], capture_output=True, text=True, check=True,
                          stdin=subprocess.DEVNULL).stdout.splitlines()


@pytest.mark.parametrize("how", ["file-url", "path"])
def test_git_tag_is_checked_out_without_dot_git(tmp_path, repo, how):
    remote = "file://" + repo["path"] if how == "file-url" else repo["path"]
    prefix = build(tmp_path, {"git": {"DATA_DIR": {"remote": remote, "tag": "v1"}}})
    assert (prefix / "DATA_DIR" / "data" / "v.txt").read_text() == "one\n"
    assert not (prefix / "DATA_DIR" / "extra.txt").exists()
    assert not (prefix / "DATA_DIR" / ".git").exists()
    record = json.loads((prefix / "poncho" / "data.json").read_text())["DATA_DIR"]
    assert record == {"source": "git", "remote": remote, "tag": "v1", "commit": repo["first"]}
    assert source_set_env(prefix, "DATA_DIR") == [str(prefix / "DATA_DIR")]
    assert sorted(os.listdir(str(prefix))) == ["DATA_DIR", "poncho"]  # no scratch left behind


def test_git_commit_id_and_default_branch(tmp_path, repo):
    prefix = build(tmp_path, {"git": {"OLD": {"remote": "file://" + repo["path"], "tag": repo["first"]},
                                      "NEW": {"remote": "file://" + repo["path"]}}})
    assert (prefix / "OLD" / "data" / "v.txt").read_text() == "one\n"
    assert (prefix / "NEW" / "data" / "v.txt").read_text() == "two\n"
    assert (prefix / "NEW" / "extra.txt").read_text() == "extra\n"
    records = json.loads((prefix / "poncho" / "data.json").read_text())
    assert records["OLD"]["commit"] == repo["first"] and records["NEW"]["commit"] == repo["second"]
    assert (prefix / "poncho" / "set_env").read_text().splitlines()[1:] == [
        'export NEW="$1/NEW"', 'export OLD="$1/OLD"']


@pytest.mark.parametrize("remote,tag,cause", [
    ("REPO", "no-such-tag", "no-such-tag"),
    ("file:///nonexistent/poncho-repo", None, "Could not read from remote repository"),
])
def test_git_errors_name_variable_and_cause(tmp_path, repo, remote, tag, cause):
    remote = remote.replace("REPO", "file://" + repo["path"])
    src = {"remote": remote}
    if tag:
        src["tag"] = tag
    with pytest.raises(PonchoError) as e:
        build(tmp_path, {"git": {"DATA_DIR": src}})
    msg = str(e.value)
    assert e.value.exit_code == 3
    assert "git.DATA_DIR" in msg and remote in msg and cause.lower() in msg.lower()
    assert sorted(os.listdir(str(tmp_path / "prefix"))) == []


# --- http --------------------------------------------------------------------------------------------------------

PAYLOAD = b"reference data line\n" * 5000


def tarball(members, mode):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


Served = collections.namedtuple("Served", "url root")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real HTTP server on 127.0.0.1 (port 0) serving a directory of test files; yields its base URL."""
    root = tmp_path_factory.mktemp("www")
    files = {
        "data.txt": PAYLOAD,
        "data.txt.gz": gzip.compress(PAYLOAD),
        "data.txt.bz2": bz2.compress(PAYLOAD),
        "data.txt.xz": lzma.compress(PAYLOAD),
        "not-gzip.gz": b"plain text, not gzip",
        "tree.tar": tarball([("tree/a.txt", b"A"), ("tree/sub/b.txt", b"B")], "w"),
        "tree.tar.gz": tarball([("a.txt", b"A"), ("sub/b.txt", b"B")], "w:gz"),
        "tree.tar.xz": tarball([("a.txt", b"A")], "w:xz"),
        "evil.tar.gz": tarball([("ok.txt", b"ok"), ("../../escaped.txt", b"x")], "w:gz"),
        "broken.tar.gz": gzip.compress(b"not a tar archive at all" * 50),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)

    def handler(*args, **kwargs):
        return _Quiet(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Served("http://127.0.0.1:{}/".format(httpd.server_address[1]), str(root))
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("name,compression", [("data.txt", None), ("data.txt.gz", "gzip"),
                                              ("data.txt.bz2", "bzip2"), ("data.txt.xz", "xz")])
def test_http_file_is_downloaded_and_decompressed(tmp_path, server, name, compression):
    src = {"url": server.url + name, "type": "file"}
    if compression:
        src["compression"] = compression
    prefix = build(tmp_path, {"http": {"REF": src}})
    assert (prefix / "REF").read_bytes() == PAYLOAD
    assert source_set_env(prefix, "REF") == [str(prefix / "REF")]
    record = json.loads((prefix / "poncho" / "data.json").read_text())["REF"]
    with open(os.path.join(server.root, name), "rb") as f:
        served = f.read()
    assert record["url"] == server.url + name and record["size"] == len(served)
    assert record["sha256"] == hashlib.sha256(served).hexdigest()
    assert sorted(os.listdir(str(prefix))) == ["REF", "poncho"]


@pytest.mark.parametrize("name,compression,expect", [
    ("tree.tar", None, {"tree/a.txt": b"A", "tree/sub/b.txt": b"B"}),
    ("tree.tar.gz", "gzip", {"a.txt": b"A", "sub/b.txt": b"B"}),
    ("tree.tar.gz", None, {"a.txt": b"A", "sub/b.txt": b"B"}),  # compression detected
    ("tree.tar.xz", "xz", {"a.txt": b"A"}),
])
def test_http_tar_is_extracted_into_a_directory(tmp_path, server, name, compression, expect):
    src = {"url": server.url + name, "type": "tar"}
    if compression:
        src["compression"] = compression
    prefix = build(tmp_path, {"http": {"TREE": src}, "git": {}})
    found = {}
    for dirpath, _, filenames in os.walk(str(prefix / "TREE")):
        for f in filenames:
            p = os.path.join(dirpath, f)
            found[os.path.relpath(p, str(prefix / "TREE"))] = open(p, "rb").read()
    assert found == expect
    assert source_set_env(prefix, "TREE") == [str(prefix / "TREE")]


@pytest.mark.parametrize("path,type,compression,causes", [
    ("missing.txt", "file", None, ["404"]),
    ("not-gzip.gz", "file", "gzip", ["not valid gzip data"]),
    ("evil.tar.gz", "tar", "gzip", ["'../../escaped.txt'", "'..'"]),
    ("broken.tar.gz", "tar", None, ["cannot extract the archive"]),
    ("REFUSED", "file", None, ["cannot download", "Connection refused"]),
])
def test_http_errors_name_variable_url_and_cause(tmp_path, server, path, type, compression, causes):
    url = "http://127.0.0.1:{}/x".format(closed_port()) if path == "REFUSED" else server.url + path
    src = {"url": url, "type": type}
    if compression:
        src["compression"] = compression
    with pytest.raises(PonchoError) as e:
        build(tmp_path, {"http": {"BAD_VAR": src}})
    msg = str(e.value)
    assert e.value.exit_code == 3
    assert "http.BAD_VAR" in msg and url in msg
    for cause in causes:
        assert cause in msg
    assert os.listdir(str(tmp_path / "prefix")) == []  # nothing half-written, no scratch
    assert not (tmp_path / "escaped.txt").exists()


def test_variable_clashing_with_prefix_content_is_an_error(tmp_path, server):
    prefix = tmp_path / "prefix"
    (prefix / "REF").mkdir(parents=True)
    with pytest.raises(PonchoError, match="already has a file or directory named 'REF'"):
        fetch_data(parse_spec({"http": {"REF": {"url": server.url + "data.txt"}}}), str(prefix), None)


def test_git_and_http_together(tmp_path, repo, server):
    prefix = build(tmp_path, {"git": {"CODE": {"remote": repo["path"], "tag": "v1"}},
                              "http": {"REF": {"url": server.url + "data.txt.gz", "compression": "gzip"}}})
    assert source_set_env(prefix, "CODE", "REF") == [str(prefix / "CODE"), str(prefix / "REF")]
    assert set(json.loads((prefix / "poncho" / "data.json").read_text())) == {"CODE", "REF"}


# --- stalls: a server that accepts the connection and never answers (issue 11, item 9) ---------------------------

class StallingServer:
    """A real TCP server on 127.0.0.1 that accepts every connection, optionally sends *greeting* (e.g. HTTP headers
    and the first bytes of a body), then holds the connection open without another byte until closed."""

    def __init__(self, greeting=b""):
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.greeting:
                conn.sendall(self.greeting)
            self.accepted.append(conn)

    def close(self):
        self.stop.set()
        self.thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def stalling():
    servers = []

    def make(greeting=b""):
        servers.append(StallingServer(greeting))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.mark.e2e  # a real build or a timeout of seconds: not in the fast subset
@pytest.mark.parametrize("scheme", ["git", "http"])
def test_git_remote_that_never_answers_fails_after_the_stall_timeout(tmp_path, stalling, monkeypatch, scheme):
    monkeypatch.setenv("PONCHO_WQ_GIT_TIMEOUT", "2")
    server = stalling()
    remote = "{}://127.0.0.1:{}/repo.git".format(scheme, server.port)
    start = time.monotonic()
    with pytest.raises(BuildError) as e:
        # A tag: on a plain failure the code retries with a full clone, which a stall must not trigger.
        build(tmp_path, {"git": {"DATA_DIR": {"remote": remote, "tag": "v1"}}})
    elapsed = time.monotonic() - start
    msg = str(e.value)
    assert e.value.exit_code == 3
    assert "git.DATA_DIR" in msg and remote in msg and "no progress for 2 seconds" in msg
    assert "PONCHO_WQ_GIT_TIMEOUT" in msg
    assert len(server.accepted) == 1  # it did connect; and was not retried
    assert 1.5 < elapsed < 10, elapsed
    assert os.listdir(str(tmp_path / "prefix")) == []  # no scratch left behind
    # git's whole process group is gone: no git process still has the prefix as its argument or cwd.
    leftover = subprocess.run(["pgrep", "-f", "127.0.0.1:{}".format(server.port)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", leftover.stdout


@pytest.mark.parametrize("greeting", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial"],
                         ids=["no-answer", "stalls-mid-body"])
@pytest.mark.e2e  # a real build or a timeout of seconds: not in the fast subset
def test_http_download_that_stalls_fails_after_the_timeout(tmp_path, stalling, monkeypatch, greeting):
    monkeypatch.setenv("PONCHO_WQ_HTTP_TIMEOUT", "1.5")
    server = stalling(greeting)
    url = "http://127.0.0.1:{}/data.bin".format(server.port)
    start = time.monotonic()
    with pytest.raises(BuildError) as e:
        build(tmp_path, {"http": {"REF": {"url": url}}})
    elapsed = time.monotonic() - start
    msg = str(e.value)
    assert "http.REF" in msg and url in msg and "sent nothing for 1.5 seconds" in msg
    assert "PONCHO_WQ_HTTP_TIMEOUT" in msg
    assert 1 < elapsed < 10, elapsed
    assert os.listdir(str(tmp_path / "prefix")) == []


def test_git_stall_timeout_leaves_working_clones_alone(tmp_path, repo, monkeypatch):
    """A 1-second stall timeout does not break a normal clone (its output keeps the watchdog fed)."""
    monkeypatch.setenv("PONCHO_WQ_GIT_TIMEOUT", "1")
    prefix = build(tmp_path, {"git": {"DATA_DIR": {"remote": "file://" + repo["path"], "tag": repo["first"]}}})
    assert (prefix / "DATA_DIR" / "data" / "v.txt").read_text() == "one\n"


@pytest.mark.parametrize("remote", [" -uflag", "\t--upload-pack=touch pwned"])
def test_git_remote_like_an_option_never_reaches_git(tmp_path, remote):
    with pytest.raises(SpecError, match="git.D.remote"):
        parse_spec({"git": {"D": {"remote": remote}}})

