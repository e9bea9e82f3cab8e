"""Can this machine reach a package index? Decides where ``source="auto"`` environments come from.

HPC login nodes and managers behind firewalls often have no route to PyPI; building from the index would then
fail after a long pip timeout. The check asks the index the installer would use, the way that installer would
find it, and gives up fast:

* ``$PONCHO_WQ_SOURCE`` = ``index`` | ``current`` | ``auto`` forces the answer (auto: check);
* ``PIP_NO_INDEX``, ``UV_OFFLINE`` or ``UV_NO_INDEX`` set to a true value mean "no index" (the user said so);
* otherwise the index URL is ``UV_DEFAULT_INDEX`` / ``UV_INDEX_URL`` (uv is the installer when it is installed,
  see :mod:`poncho_wq.engines.pip`), then ``PIP_INDEX_URL``, then ``index-url`` from the pip configuration files
  (``$PIP_CONFIG_FILE``, the global, user and site ``pip.conf``; a ``no-index = true`` there counts too), then
  ``https://pypi.org/simple``;
* the URL is reachable when an HTTP ``HEAD`` gets *any* HTTP answer within ``$PONCHO_WQ_NETCHECK_TIMEOUT``
  seconds (default 3): a 404 or 405 still proves the route. urllib honours ``https_proxy``/``no_proxy``, as pip
  does. A ``file://`` index is reachable when its directory exists.

The answer is cached per process (per URL): a manager submitting thousands of tasks checks once.
"""

import configparser
import functools
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from .config import settings
from .credentials import mask
from .memo import register

log = logging.getLogger(__name__)

DEFAULT_INDEX = "https://pypi.org/simple"
_TRUE = ("1", "true", "yes", "on")


def _truthy(value):
    return (value or "").strip().lower() in _TRUE


def _pip_config_files():
    files = []
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    files += [os.path.join(d, "pip", "pip.conf") for d in xdg_dirs if d] + ["/etc/pip.conf"]
    home = os.path.expanduser("~")
    files += [os.path.join(home, ".pip", "pip.conf"),
              os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "pip", "pip.conf")]
    files.append(os.path.join(sys.prefix, "pip.conf"))
    return files


def _pip_config():
    """(index_url or None, no_index) from pip's configuration files (later files win, as in pip)."""
    url, no_index = None, False
    for path in _pip_config_files():
        if not os.path.isfile(path):
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError) as e:
            log.debug("ignoring unreadable pip configuration %s: %s", path, e)
            continue
        for section in ("global", "install"):
            if parser.has_option(section, "index-url"):
                url = parser.get(section, "index-url").strip()
            if parser.has_option(section, "no-index"):
                no_index = _truthy(parser.get(section, "no-index"))
    return url, no_index


def index_url():
    """``(url, reason)``: the index the installer would use, or ``(None, why not)`` when indexes are off."""
    for var in ("PIP_NO_INDEX", "UV_OFFLINE", "UV_NO_INDEX"):
        if _truthy(os.environ.get(var)):
            return None, "{} is set".format(var)
    from .tools import find_tool

    uv_first = find_tool("uv") is not None
    uv = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL")
    pip_url = os.environ.get("PIP_INDEX_URL")
    conf_url, conf_no_index = _pip_config()
    if conf_no_index and not uv_first:
        return None, "pip.conf sets no-index"
    candidates = ([uv, pip_url, conf_url] if uv_first else [pip_url, conf_url, uv])
    for url in candidates:
        if url:
            return url.strip(), "configured"
    return DEFAULT_INDEX, "default"


def _timeout():
    return settings().netcheck_timeout


@functools.lru_cache(maxsize=None)
def reachable(url, timeout=None):
    """``(ok, detail)``: does *url* answer an HTTP HEAD (any status) within *timeout* seconds?"""
    timeout = _timeout() if timeout is None else timeout
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = urllib.parse.unquote(parsed.path)
        return os.path.isdir(path), path
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False, "unsupported index URL {}".format(mask(url))
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "poncho_wq-netcheck"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return True, "HTTP {}".format(r.status)
    except urllib.error.HTTPError as e:
        return True, "HTTP {}".format(e.code)  # the server answered: the route exists
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return False, mask(str(reason))


register(reachable.cache_clear)  # keyed by (url, timeout): a network that comes back is seen after clear_caches()


def index_reachable():
    """``(ok, explanation)`` for the index the installer would use."""
    url, why = index_url()
    if url is None:
        return False, why
    ok, detail = reachable(url)
    # Masked: PIP_INDEX_URL often carries a user and token (https://user:token@host/simple), and this line is
    # printed on every manager's stderr.
    return ok, "{} {} ({})".format(mask(url), "reachable" if ok else "unreachable", detail)


_announced: set = set()  # (source, reason) already said on stderr
register(_announced.clear)


def resolve_source(source="auto"):
    """``"index"`` or ``"current"`` for *source* (``index``/``current``/``auto``/None); ``$PONCHO_WQ_SOURCE``
    overrides an ``auto``. An automatic choice is announced once per process on stderr."""
    if source in (None, "auto"):
        forced = settings().source
        if forced != "auto":
            return forced
        ok, why = index_reachable()
        chosen = "index" if ok else "current"
        if (chosen, why) not in _announced:
            _announced.add((chosen, why))
            if ok:
                line = "package index: {}".format(why)
            else:
                line = "the running environment, pruned to the scripts' needs (no package index: {}; " \
                       "PONCHO_WQ_SOURCE=index forces the index)".format(why)
            # A warning, so that a manager without logging set up still sees it (logging's last-resort handler
            # prints warnings to stderr): which source was guessed matters for what the tasks run.
            log.warning("poncho_wq: building environments from %s", line)
        return chosen
    if source not in ("index", "current"):
        from .errors import PonchoError

        raise PonchoError("source {!r} is not one of index, current, auto".format(source))
    return source
