"""What a worker runs to fetch a published environment or code layer in ``url`` mode, and how it checks it.

How ``url`` inputs are fetched, and why not ``Task.specify_url``: Debian's binding (CCTools 8 API) has no
``specify_url``, and CCTools 7.17.1's worker runs ``curl -sSL -o CACHE URL`` *without* ``-f``, checking nothing: a
404 page, a cut transfer or any bytes a server sends are stored as the tarball for the worker's life (measured: a
lying server's activation script ran). So url inputs are worker-side fetch commands (``specify_file_command``, in
both bindings, with their different argument orders) that check what arrives (:func:`fetch_script`):

* the manager passes the published file's size and sha256 (:class:`Fetch`; the ``env-<hash>`` name is a cache key,
  not the content's hash); the worker hashes the bytes while they arrive and keeps them only when both match, as
  ``.poncho-<sha256>`` beside Work Queue's cache, linked to each task's input (:func:`fetch_command`);
* whatever fails (an HTTP error, a stall, the time limit ``PONCHO_WQ_FETCH_TIMEOUT``, a short read, other bytes, no
  downloader or hash tool on the worker) writes a *failure note* as the input instead, and the command succeeds:
  a failing fetch command makes Debian's CCTools drop the worker and requeue the task without end (and TaskVine
  hang it). The task's wrapper (:func:`note_check`, before the shim) ends the task with the note's exit code (2 an
  HTTP error, 3 a failed transfer or bytes that are not the published ones, 4 no curl/wget or sha256 tool) and a
  ``poncho_package_run:`` line naming the URL, which ``shim_error`` reports. The input is uncached in Work Queue's
  sense, so a note reaches one task only and the next task fetches again;
* the downloader is curl, else wget, else busybox wget (``file://``: cat), so a worker without curl works.

What cannot be written at all (a full worker disk) still fails the input: :func:`fetch_failure` names it.

The manager side (publishing, the distribution settings, the local server) is :mod:`poncho_wq.deliver.publish`.
"""

import dataclasses
import inspect
import os
import re
import shlex
import threading
import time
import urllib.parse

from ..config import FETCH_TIMEOUT
from ..credentials import mask
from ..errors import BuildError
from ..worker import STALL_SECONDS, fetch_sections  # noqa: F401 (STALL_SECONDS: imported from here)

_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Fetch:
    """One published file as a worker fetches it: the remote *name* (``env-<hash>.tar.gz``), its *url*, and the
    *size* and *sha256* of the bytes published, which the worker checks before anything is unpacked (the name is
    a cache key, not the content's hash: :func:`poncho_wq.deliver.publish.fetch_for`); *seconds*: how long the
    worker's whole fetch may take (the delivery's ``fetch_timeout``, ``$PONCHO_WQ_FETCH_TIMEOUT``)."""

    name: str
    url: str
    size: int
    sha256: str
    seconds: float = FETCH_TIMEOUT

    @property
    def shown_url(self):
        """The URL for messages: its secrets masked (:func:`poncho_wq.credentials.mask`)."""
        return mask(self.url)


#: What the first line of a failure note starts with (see :func:`fetch_script`).
NOTE_MARK = "poncho-fetch-failed"

# The worker-side fetch (POSIX sh) lives in poncho_wq/worker/fetch.sh, with the reasons for each of its steps; its
# sections are read once here and assembled per file: the URL shown ("shown", when the URL carries secrets), the
# tools, the downloader ("http" or "file"), the check, and for Work Queue the link to the task's input ("wq-link").
_SECTIONS = fetch_sections()
if _SECTIONS["tools"].count(NOTE_MARK) != 1:
    raise ImportError("poncho_wq/worker/fetch.sh: its note mark is not " + NOTE_MARK)
_FETCH_CORE = _SECTIONS["tools"] + "@DOWNLOADER@" + _SECTIONS["check"]
_CURL = _SECTIONS["http"]
_CAT = _SECTIONS["file"]
_SHOWN = _SECTIONS["shown"]
_WQ_LINK = _SECTIONS["wq-link"]


def fetch_script(fetch, seconds, where, stall_seconds=STALL_SECONDS):
    """The sh text that fetches *fetch* into the file ``$t`` and, when its size and sha256 are the published
    ones, renames it to ``$c``; else writes a failure note to ``$p``. Nothing is fetched when ``$c`` exists.
    *where* is the sh text that sets ``p``, ``c`` and ``t`` (``t`` and its siblings ``$t.e``, ``$t.x``, ``$t.h``
    without blanks), run after the variables above (``$h`` is the sha256). *seconds* bounds the whole transfer;
    *stall_seconds* a transfer under 1 KB/s."""
    if not re.fullmatch(r"[0-9a-f]{64}", fetch.sha256) or not re.fullmatch(r"[A-Za-z0-9._-]+", fetch.name):
        raise BuildError("cannot fetch {!r}: {!r} is not a sha256 hex digest or the name is not a plain file "
                         "name".format(fetch.name, fetch.sha256))
    parts = urllib.parse.urlsplit(fetch.url)
    head = "u={} N={} s={} h={} T={};".format(shlex.quote(fetch.url), fetch.name, int(fetch.size), fetch.sha256,
                                              int(seconds))
    head += 'd="$u";' if fetch.shown_url == fetch.url else _SHOWN
    if parts.scheme == "file":
        head += "l={};".format(shlex.quote(urllib.parse.unquote(parts.path)))
        downloader = _CAT
    else:
        downloader = _CURL.replace("@STALL@", str(int(stall_seconds)))
    return head + where + 'if [ ! -f "$c" ];then ' + _FETCH_CORE.replace("@DOWNLOADER@", downloader) + "fi;"


def fetch_command(fetch, seconds=None, stall_seconds=STALL_SECONDS):
    """The sh command a Work Queue worker runs to materialize *fetch* at its cache path ``%%``.

    The checked bytes are kept beside Work Queue's cache as ``.poncho-<sha256>`` (named by content, so only
    checked bytes ever have that name) and hard-linked (else copied) to ``%%`` for each task; the input is
    attached *uncached* (:func:`specify_fetch`), so a failure note reaches one task only, and the next task
    fetches again. One GET per worker for as long as the worker keeps its workspace (it empties it when it
    leaves a manager)."""
    if seconds is None:
        seconds = fetch.seconds
    # $t in Work Queue's cache directory, whose path has no blanks (the worker's workspace/cache).
    where = 'p="%%";c="${p%/*}/.poncho-$h";t=$c.$$;'
    return fetch_script(fetch, seconds, where, stall_seconds) + _WQ_LINK


def note_check(names):
    """The sh text a task runs before the shim: when a fetched input in *names* is a failure note, print its
    message as a ``poncho_package_run:`` line and exit with its code (no fork: ``read`` of the first line; a
    gzip tarball's first line is short)."""
    if not names:
        return ""
    return ("for f in {};do {{ read -r l;read -r e;read -r m;}} 2>/dev/null <\"$f\"&&[ \"$l\" = {} ]&&"
            "{{ printf 'poncho_package_run: %s\\n' \"$m\" >&2;exit \"$e\";}};done;").format(
                " ".join(shlex.quote(n) for n in names), NOTE_MARK)


def specify_fetch(task, fetch, seconds=None):
    """Attach *fetch* to *task* as the input ``fetch.name``, materialized by the worker (see :func:`fetch_command`).
    Uncached at Work Queue's level: the fetch command keeps the checked bytes itself. ``specify_file_command``
    takes ``(cmd, remote_name)`` in CCTools 7.x and ``(remote_name, cmd)`` in Debian's CCTools 8 binding;
    keywords would not help either (both spell them differently too)."""
    method = task.specify_file_command
    params = list(inspect.signature(method).parameters)
    cmd = fetch_command(fetch, seconds)
    if params and params[0] == "remote_name":
        return method(fetch.name, cmd, cache=False)
    return method(cmd, fetch.name, cache=False)


_probes: dict = {}  # url -> (time, answer): many tasks failing on one URL ask the server once
PROBE_MEMO_SECONDS = 30


def probe_url(url, timeout=5.0):
    """What a request for *url* from the manager gets now: ``"HTTP 404 Not Found"``, ``"connection refused"``,
    ``"HTTP 200, N bytes"``... (a HEAD request; for file:// the file's state).

    Bounded: it runs in the manager's wait loop (through ``shim_error``), so the whole request, name resolution
    included (which urllib's *timeout* does not cover), gets *timeout* seconds in a helper thread, and an answer
    is reused for :data:`PROBE_MEMO_SECONDS` (a thousand tasks failing on one dead URL cost one request)."""
    now = time.monotonic()
    with _lock:
        seen = _probes.get(url)
    if seen and now - seen[0] < PROBE_MEMO_SECONDS:
        return seen[1]
    box = []
    worker = threading.Thread(target=lambda: box.append(_probe(url, timeout)), daemon=True)
    worker.start()
    worker.join(timeout + 1)
    answer = box[0] if box else "no answer within {:g} s".format(timeout)
    with _lock:
        _probes[url] = (time.monotonic(), answer)
    return answer


def _probe(url, timeout):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = urllib.parse.unquote(parts.path)
        try:
            return "{} bytes".format(os.path.getsize(path))
        except OSError as e:
            return "{} on the manager: {}".format(path, e.strerror)
    # Imported here (tests/test_structure.py, LAZY_EXTERNAL): urllib.request loads http.client, email and ssl,
    # and only a failed url fetch asks the server; a task submission does not need them (issue 27).
    from urllib import error as url_error, request as url_request

    class KeepHead(url_request.HTTPRedirectHandler):
        """Follows a redirect with HEAD again: urllib's own handler turns it into a GET (the whole tarball)."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and req.get_method() == "HEAD":
                new.method = "HEAD"
            return new

    req = url_request.Request(url, method="HEAD")
    try:
        with url_request.build_opener(KeepHead).open(req, timeout=timeout) as r:
            return "HTTP {}, {} bytes".format(r.status, r.headers.get("Content-Length", "?"))
    except url_error.HTTPError as e:
        return "HTTP {} {}".format(e.code, e.reason)
    except url_error.URLError as e:
        reason = e.reason
        return str(getattr(reason, "strerror", None) or reason).lower()
    except (OSError, ValueError) as e:
        return str(e)


def fetch_failure(task, urls, failed_results):
    """The one-line message for a task whose url inputs could not be materialized at all, else None. *urls* maps
    remote names to URLs; *failed_results* are the binding's result codes of a failed input.

    Rare since the fetch command writes a failure note instead of failing (:func:`fetch_script`): what is left is
    a command that could not even write its note (a full or read-only worker disk). Work Queue reports it as the
    task's result (``INPUT_MISSING``): the command, and so the run shim, never ran. What the manager's own request
    gets now is said as exactly that, not as the cause on the worker."""
    if not urls:
        return None
    if getattr(task, "result", None) not in failed_results:
        return None
    parts = []
    for name, url in sorted(urls.items(), key=lambda item: (not item[0].startswith("env-"), item[0])):
        parts.append("{} from {} (the manager's own request now: {})".format(name, mask(url), probe_url(url)))
    return ("the worker could not put in place " + "; ".join(parts) + " (the task did not run; the worker's disk "
            "may be full or read-only: the cause is in its debug log)")
