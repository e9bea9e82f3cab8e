"""Credentials in URLs (poncho_wq/credentials.py): what counts as one, and masking in free text; the places that
show a URL mask it (the spec and requirements refusals are tested with their modules)."""

import sys

import pytest

from helpers.cli import closed_port
from poncho_wq.credentials import find, mask


@pytest.mark.parametrize("url, what", [
    ("https://user:pw@host/x", "before the host"),
    ("https://ghp_token@host/x", "before the host"),
    ("git+https://oauth2:tok@gitlab/x.git", "before the host"),
    ("ftp://user:pw@host/x", "before the host"),
    ("https://host/x?token=1", "token="),
    ("https://host/x?a=1&X-Amz-Signature=abc", "X-Amz-Signature="),
    ("https://acct.blob.core.windows.net/c/x?sv=2020&sig=abc", "sig="),
    ("https://gitlab/x?private_token=abc", "private_token="),
])
def test_secrets_found(url, what):
    assert what in find(url)


@pytest.mark.parametrize("url", ["git+ssh://git@github.com/o/r.git", "ssh://git@host/r", "https://host/x?x=1&v=2",
                                 "https://host/t/abc/x", "git@github.com:o/r.git", "/local/path", "six==1.0"])
def test_logins_and_plain_urls_are_not_secrets(url):
    assert find(url) is None


def test_conda_channel_tokens_only_for_channels():
    assert find("https://conda.anaconda.org/t/tk-123/private", conda_channel=True)
    assert find("https://conda.anaconda.org/t/tk-123/private") is None


def test_mask_keeps_host_and_path_and_hides_every_secret():
    text = ("fetch https://u:pw1@h/p/x.whl?X-Amz-Signature=sig1&X-Amz-Date=2024 and 'http://tok2@h2:8/y' "
            "from https://conda.anaconda.org/t/tk3/c/")
    masked = mask(text)
    for secret in ("pw1", "sig1", "tok2", "tk3"):
        assert secret not in masked, masked
    for kept in ("h/p/x.whl", "X-Amz-Date=2024", "h2:8/y", "conda.anaconda.org/t/***/c/"):
        assert kept in masked, masked


def test_an_index_download_failure_masks_the_index_url(monkeypatch):
    # PIP_INDEX_URL often carries a user and token; the locked engine names the index when an exact pin must come
    # from it and does not, and that message reaches the manager's stderr and CI logs.
    from poncho_wq.engines.pip import install_exact
    from poncho_wq.errors import BuildError

    url = "http://user:s3cr3t@127.0.0.1:{}/simple".format(closed_port())
    for var in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        monkeypatch.setenv(var, url)
    for var in ("PIP_NO_INDEX", "UV_OFFLINE", "UV_NO_INDEX", "PIP_FIND_LINKS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(BuildError) as e:
        install_exact(sys.executable, ["poncho-wq-no-such-dist==1.0"])
    assert "s3cr3t" not in str(e.value) and "127.0.0.1" in str(e.value), str(e.value)
