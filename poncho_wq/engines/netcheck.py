"""Which package index would the installer use? Named in the messages of builds that need one.

It once also decided where ``source="auto"`` environments came from, by a 3-second reachability probe: under load
the probe timed out and the same script got another engine and other versions. ``auto`` now builds the lock from
the installed files (:mod:`poncho_wq.engines.locked`), and no timing decides anything; this module only says which
index a build that does need one would ask, the way that installer would find it:

* ``PIP_NO_INDEX``, ``UV_OFFLINE`` or ``UV_NO_INDEX`` set to a true value mean "no index" (the user said so);
* otherwise the index URL is ``UV_DEFAULT_INDEX`` / ``UV_INDEX_URL`` (uv is the installer when it is installed,
  see :mod:`poncho_wq.engines.pip`), then ``PIP_INDEX_URL``, then ``index-url`` from the pip configuration files
  (``$PIP_CONFIG_FILE``, the global, user and site ``pip.conf``; a ``no-index = true`` there counts too), then
  ``https://pypi.org/simple``.
"""

import configparser
import logging
import os
import sys

from ..tools import find_tool

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
