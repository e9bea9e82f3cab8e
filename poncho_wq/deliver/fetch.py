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
import urllib.error
import urllib.parse
import urllib.request

from ..config import FETCH_TIMEOUT
from ..credentials import mask
from ..errors import BuildError

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


#: A transfer under 1 KB/s for this many seconds fails. Work Queue's workers run a fetch command synchronously:
#: while it runs they answer no keepalive, and a manager drops a worker that leaves its keepalive check unanswered
#: for 30 s (CCTools' default), then sends the task again (measured: 561 s, 5 GETs, no result with a hung server).
STALL_SECONDS = 20
#: What the first line of a failure note starts with (see :func:`fetch_script`).
NOTE_MARK = "poncho-fetch-failed"

# The worker-side fetch, POSIX sh (dash, bash, busybox ash). It runs in Work Queue's fetch command (synchronously,
# in the worker's own process tree, its output not shown anywhere useful) and in TaskVine's fetch mini task.
#  - The downloader is curl, else wget (GNU: one try, its read timeout), else busybox wget; for a file:// URL, cat.
#    Without curl the whole transfer is bounded with timeout(1) when the worker has it.
#  - The bytes are hashed while they arrive (tee into the file and into the hash tool: sha256sum, shasum -a 256,
#    openssl dgst, busybox sha256sum) and counted; the file is kept only when both size and sha256 are the
#    published ones. No hash tool on the worker is a failure (exit 4), never an unchecked environment.
#  - On any failure the destination $p receives a *note* instead of a tarball: the mark, the exit code for the
#    task (2: the downloader failed with an HTTP error, 3: the transfer failed or the bytes are not the published
#    ones, 4: a tool is missing) and a one-line message naming the file and the URL (masked). The command itself
#    succeeds: a failing fetch command makes Debian's CCTools drop the worker and requeue the task for ever, and
#    TaskVine 7.17.1 leave it pending for ever. The task's wrapper (or TaskVine's stub) turns the note into the
#    task's exit code and a `poncho_package_run:` line.
# Kept short: Work Queue sends the fetch command url-encoded (blanks, quotes, braces and pipes cost 3 bytes each)
# on one 4096-byte protocol line, beside the URL. Names: u URL, d URL as shown, N remote name, s size, h sha256,
# T seconds in all, l local path (file://), t temp file, c kept file, p destination; v: is a command there;
# n: write the note.
_FETCH_CORE = (
    "v(){ command -v $1 >/dev/null;};n(){ printf '" + NOTE_MARK + "\\n%s\\ncould not fetch %s from %s: %s\\n' "
    "$1 $N \"$d\" \"$2\" >\"$p\";};H=;G=;k=;v timeout&&k=\"timeout $T\";"
    "if v sha256sum;then H=sha256sum;elif v shasum;then H='shasum -a 256';elif v openssl;then "
    "H='openssl dgst -sha256 -r';elif busybox sha256sum </dev/null >/dev/null 2>&1;then H='busybox sha256sum';fi;"
    "@DOWNLOADER@"
    "if [ -z \"$H\" ];then n 4 'no sha256sum, shasum, openssl or busybox here to check it';"
    "elif [ -z $G ];then n 4 'no curl, wget or busybox wget here to download it';"
    "else { g 2>$t.e||echo $? >$t.x;}|tee $t|$H >$t.h;read -r a b <$t.h;z=$(($(wc -c <$t)));"
    "if [ $z = $s ]&&[ \"$a\" = $h ];then mv -f $t \"$c\";"
    "elif [ -f $t.x ];then read -r x <$t.x;e=3;case $x in 22|8)e=2;;28|124)set -- \"at most $T s\";;63)set -- \"over the $s bytes published\";;esac;"
    "n $e \"${1:+$1: }$(tail -c 200 $t.e|tr -c ' -~' ' ') (exit $x, $z of $s bytes, not kept)\";"
    "elif [ $z != $s ];then n 3 \"$z bytes, not the $s published (cut short?), not kept\";"
    "else n 3 \"sha256 $a, not the published $h, not kept\";fi;fi;rm -f $t $t.e $t.x $t.h;"
)
_CURL = ("if v curl;then G=1;g(){ curl -fsSL --speed-limit 1024 --speed-time @STALL@ --max-time $T "
         "--max-filesize $((s+1048576)) \"$u\";};elif v wget;then G=1;W=wget;wget -V >/dev/null 2>&1&&"
         "W='wget -t 1 -T @STALL@';g(){ $k $W -q -O - \"$u\";};elif busybox wget --help >/dev/null 2>&1;then G=1;"
         "g(){ $k busybox wget -q -O - \"$u\";};fi;")
_CAT = "G=1;g(){ $k cat -- \"$l\";};"
# The URL as messages show it when it carries secrets: without its query, and a user:password@ masked. (No "%%"
# anywhere in the command: Work Queue replaces every one by the cache path, hence the two-step prefix cuts.)
_SHOWN = ("q=${u#*\\?};d=${u%\"?$q\"};[ \"$d\" = \"$u\" ]||d=\"$d?...\";"
          "case $d in *//*@*)q=${d#*//};d=${d%\"$q\"}***@${d#*@};;esac;")


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
    return (fetch_script(fetch, seconds, where, stall_seconds) +
            'if [ -f "$c" ];then ln -f "$c" "$p" 2>/dev/null||cp "$c" "$p";fi;[ -s "$p" ]')


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


class _KeepHead(urllib.request.HTTPRedirectHandler):
    """Follows a redirect with HEAD again: urllib's own handler turns it into a GET (the whole tarball)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        return new


def _probe(url, timeout):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = urllib.parse.unquote(parts.path)
        try:
            return "{} bytes".format(os.path.getsize(path))
        except OSError as e:
            return "{} on the manager: {}".format(path, e.strerror)
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.build_opener(_KeepHead).open(req, timeout=timeout) as r:
            return "HTTP {}, {} bytes".format(r.status, r.headers.get("Content-Length", "?"))
    except urllib.error.HTTPError as e:
        return "HTTP {} {}".format(e.code, e.reason)
    except urllib.error.URLError as e:
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
