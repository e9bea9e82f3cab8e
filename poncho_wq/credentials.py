"""Credentials in URLs: found once here, refused where they would be stored, masked wherever a URL is shown.

Why: a spec travels. Its pip strings, git remotes and http URLs are written into the cache's metadata and into
``poncho/spec.json`` inside the tarball that every worker unpacks; a requirements file's lines become such pip
strings; and error messages end up in terminals, CI logs and the manager's task results. A token that reaches any
of these is leaked. So a URL carrying one is refused with a message that shows it masked and says where the
secret belongs instead (``~/.netrc``, which pip, uv and git read, or the installer's own environment variables
such as ``PIP_INDEX_URL``), and every message that shows a URL passes it through :func:`mask`.

What counts as a credential:

* a password in the authority (``https://user:secret@host``), in any scheme;
* a user name alone in an http(s) URL (``https://TOKEN@host``: GitHub and GitLab tokens are sent that way); an
  ssh login (``git+ssh://git@host``, ``git@host:org/repo``) is not a secret;
* a query parameter whose name says it carries one (``token``, ``access_token``, ``key``, ``sig``/``signature``,
  ``password``, ``secret``, ``auth``, ``credential`` anywhere in the name, any case: ``X-Amz-Signature``,
  ``X-Amz-Credential``, ``X-Amz-Security-Token``, Azure's ``sig``, ``private_token``);
* a conda channel token (``https://conda.anaconda.org/t/<token>/channel``), where the path carries it.

The publish URL of the ``url`` distribution mode is the one place where a query token is accepted (a signed URL
of object storage is how workers are allowed in, and it must reach them): it is masked in every message.
"""

import re
import urllib.parse
from typing import Optional

#: Query parameter names that carry a secret (matched case-insensitively, anywhere in the name).
_SECRET_PARAM = re.compile(r"token|secret|passw|pwd|sig|key|auth|credential", re.I)
_SCHEME_AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#\s]*)@")
_CONDA_TOKEN = re.compile(r"(/t/)([^/\s]+)(/)")
#: A URL inside free text (a message, a requirement line): scheme://, then anything up to a blank or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
MASK = "***"


def _userinfo_secret(scheme: str, userinfo: str) -> bool:
    return ":" in userinfo or scheme.lower().split("+")[-1] in ("http", "https")


def _secret_params(query: str):
    return [name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True) if _SECRET_PARAM.search(name)]


def find(url: str, conda_channel: bool = False) -> Optional[str]:
    """What secret *url* carries (``"a password in user:password@"``, ``"a token in its query (sig=)"``, ...), or
    None. *conda_channel*: also a ``/t/<token>/`` path (anaconda.org's channel tokens)."""
    if not isinstance(url, str):
        return None
    m = _SCHEME_AUTHORITY.match(url)
    if m and _userinfo_secret(m.group(1), m.group(2)):
        return "a password or token before the host (user:secret@ or token@)"
    parts = urllib.parse.urlsplit(url) if "://" in url else None
    if parts is not None:
        names = _secret_params(parts.query)
        if names:
            return "a secret in its query ({}=)".format(names[0])
        if conda_channel and _CONDA_TOKEN.search(parts.path + "/"):
            return "a channel token in its path (/t/<token>/)"
    return None


def _mask_url(url: str) -> str:
    m = _SCHEME_AUTHORITY.match(url)
    if m and _userinfo_secret(m.group(1), m.group(2)):
        url = url[:m.start(2)] + MASK + url[m.end(2):]
    if "?" in url:
        head, _, query = url.partition("?")
        query, hash_, fragment = query.partition("#")
        pairs = query.split("&")
        for i, pair in enumerate(pairs):
            name, eq, _value = pair.partition("=")
            if eq and _SECRET_PARAM.search(urllib.parse.unquote_plus(name)):
                pairs[i] = name + "=" + MASK
        url = head + "?" + "&".join(pairs) + hash_ + fragment
    return _CONDA_TOKEN.sub(lambda t: t.group(1) + MASK + t.group(3), url)


def mask(text: str) -> str:
    """*text* with the secrets of every URL in it replaced by ``***`` (the rest of each URL kept, so that a message
    still names the host and path)."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: _mask_url(m.group(0)), text)


WHERE_INSTEAD = ("put the credentials in ~/.netrc (pip, uv and git read it) or in the installer's settings "
                 "(PIP_INDEX_URL, UV_INDEX_URL, a keyring) and give the URL without them")
