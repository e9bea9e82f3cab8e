"""Every environment variable poncho_wq reads, in one place: typed, validated, documented.

Why one module (the model is pex's ``variables.py`` / shiv's ``bootstrap/environment.py``): the same variable read
in several places drifts (``PONCHO_WQ_CACHE`` was once resolved twice, differently), a typo'd value was silently
replaced by a default in one reader and rejected in another, and the README table had no single source. Here
each manager-side variable is one property of :class:`Settings` that parses and validates its value and raises a
:class:`~poncho_wq.errors.SpecError` naming the variable, the value and what is accepted. Worker-side variables
are read by the sh run shim (no Python on the worker), so they are only *declared* here, for the documentation
table. docs/settings.md is generated from :data:`SETTINGS` (``python -m poncho_wq.config > docs/settings.md``);
``tests/test_config.py`` checks that the committed file is what :func:`settings_markdown` writes.

Values are read when a property is asked, not at import, so a long-running manager and the tests see changes:
``settings()`` reads ``os.environ``; ``Settings(environ={...})`` reads a given mapping.
"""

import os
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from .errors import SpecError
from .target import parse_target

#: Values of ``PONCHO_WQ_SOURCE``.
SOURCES = ("index", "current", "auto")
#: Values of ``PONCHO_WQ_BINDING``.
BINDINGS = ("ndcctools.work_queue", "work_queue", "debian")
#: Values of ``PONCHO_WQ_DISTRIBUTION`` (see :mod:`poncho_wq.deliver.publish`).
DISTRIBUTIONS = ("direct", "url", "shared", "serve")
#: Values of ``PONCHO_WQ_PROGRESS``.
PROGRESS = ("auto", "on", "off")
#: PONCHO_WQ_FETCH_TIMEOUT's default, in seconds
FETCH_TIMEOUT = 300.0
#: PONCHO_WQ_DATA_WARN_MB's default (100 MB), in bytes
DATA_WARN_BYTES = 100 * 10 ** 6
DEFAULT_MTIME = 946684800  # 2000-01-01T00:00:00Z: SOURCE_DATE_EPOCH's default


@dataclass(frozen=True)
class Setting:
    """One environment variable: where it is read (``manager``, ``worker`` or ``both``) and what it means."""

    name: str
    where: str
    doc: str


SETTINGS: Tuple[Setting, ...] = (
    Setting("PONCHO_WQ_CACHE", "manager", "build cache directory (default `$XDG_CACHE_HOME/poncho_wq` or "
            "`~/.cache/poncho_wq`)"),
    Setting("PONCHO_WQ_BINDING", "manager", "`ndcctools.work_queue`, `work_queue` (what `import work_queue` gives), "
            "or `debian` (Debian's module from `/usr/lib/python3/dist-packages`); default: the first that imports, "
            "in that order"),
    Setting("PONCHO_CONDA_EXE", "manager", "the conda/mamba/micromamba executable for conda specs, or `rattler` "
            "for the embedded py-rattler (default: one on `PATH`, else py-rattler)"),
    Setting("PONCHO_CONDA_PKGS_DIR", "manager", "py-rattler's package cache for conda builds (default: rattler's own)"),
    Setting("PONCHO_WQ_SOURCE", "manager", "`auto` (default), `index` or `current`: what `source=\"auto\"` "
            "environments are built as: the lock from the installed files, only the imports pinned from the index, "
            "or the installed files only"),
    Setting("PONCHO_WQ_GIT_TIMEOUT", "manager", "seconds a `git` fetch of the spec's git section may stall with "
            "no progress before the build fails (default 120)"),
    Setting("PONCHO_WQ_HTTP_TIMEOUT", "manager", "seconds an http(s) download may wait for the server (connect "
            "or the next bytes) before the build fails (default 60): the spec's http section, and wheels an `auto` "
            "build takes from the index"),
    Setting("PONCHO_WQ_EXCLUDE", "manager", "`:`-separated glob patterns of local files not to ship (matched "
            "against the path the task sees and the file name), e.g. `*.h5:data/raw/*`"),
    Setting("PONCHO_WQ_DATA_WARN_MB", "manager", "warn when the data files shipped with local packages exceed this "
            "many MB (default 100)"),
    Setting("PONCHO_WQ_ANALYZE_SERIAL", "manager", "parse files in one process (the analyzer forks parsers for "
            "large cold trees)"),
    Setting("PONCHO_WQ_KEEP_TESTS", "manager", "`1`: ship the `tests`/`test` directories of installed packages "
            "(left out by default unless the package's own code imports them; part of the cache key)"),
    Setting("PONCHO_WQ_PARTS", "manager", "`1`: `PonchoTask` (and TaskVine's `declare_environment`) ships its environment as content-addressed parts "
            "(interpreter, each large distribution, the small ones, the environment's own files) so that a change "
            "sends only the parts that changed (`direct`, `url` and `shared` distribution; see docs/parts.md); "
            "default off"),
    Setting("PONCHO_WQ_PART_MB", "manager", "with `PONCHO_WQ_PARTS=1`: a distribution of at least this many MB "
            "(unpacked) is a part of its own, smaller ones share one group part (default 4)"),
    Setting("PONCHO_WQ_DISTRIBUTION", "manager", "how tasks get their environment: `direct` (the manager sends it "
            "to each worker), `url` (workers fetch it from `PONCHO_WQ_PUBLISH_URL`), `shared` (unpacked once on a "
            "shared file system) or `serve` (Work Queue: the manager serves its build cache over HTTP and a worker "
            "fetches only what its root does not hold ready, so a second workflow sends nothing; see "
            "`PONCHO_WQ_SERVE_ADDRESS`); default `url` when `PONCHO_WQ_PUBLISH_DIR` is set, else `direct`"),
    Setting("PONCHO_WQ_SERVE_ADDRESS", "manager", "`serve` mode: the address the manager's cache server listens on "
            "(a port of its own, chosen free); the workers' URL names it, or this host's name for `0.0.0.0`. "
            "Default `127.0.0.1`: workers on this machine only; set `0.0.0.0` (or an interface's address) for "
            "workers elsewhere, whose firewall path must then allow that port"),
    Setting("PONCHO_WQ_SERVE_LOG", "manager", "`serve` mode: append one line per request of the cache server to this "
            "file (`<epoch> <client> <method> <path> <status>`; default: no access log)"),
    Setting("PONCHO_WQ_PUBLISH_DIR", "manager", "directory the environment and code layer tarballs are published "
            "into (content-addressed names, atomic) for the `url` and `shared` modes"),
    Setting("PONCHO_WQ_PUBLISH_URL", "manager", "base URL under which workers reach `PONCHO_WQ_PUBLISH_DIR` "
            "(`http(s)://`, `ftp://`, or `file://` on a shared file system); workers fetch with `curl` (else `wget` "
            "or busybox `wget`) and check size and sha256"),
    Setting("PONCHO_WQ_FETCH_TIMEOUT", "manager", "`url` mode: seconds a worker's fetch of the environment or code "
            "layer may take in all before the task fails (default 300; a transfer under 1 KB/s for 20 s fails "
            "sooner)"),
    Setting("PONCHO_WQ_VINE_SEED", "manager", "TaskVine: seconds `declare_environment` waits for one worker to get "
            "the environment first, the others then getting it from peers (default 0: off)"),
    Setting("PONCHO_WQ_NO_WORKER_NOTICE", "manager", "seconds a manager with tasks waiting and no worker connected "
            "waits before it logs, once, its port and the worker command to start (default 30; 0: never)"),
    Setting("PONCHO_WQ_PROGRESS", "manager", "build progress of `PonchoTask`, `PonchoVineTask` and "
            "`Environment.build()` when they are not given `progress=`: `auto` (default: on when stderr is a "
            "terminal), `on` or `off`"),
    Setting("PONCHO_WQ_TARGET", "manager", "the oldest worker environments must run on, as a manylinux tag such as "
            "`manylinux_2_28_x86_64` (RHEL 8) when neither `--target`, `target=` nor the spec names one (see "
            "[targets.md](targets.md))"),
    Setting("SOURCE_DATE_EPOCH", "manager", "the mtime written into archives (default 2000-01-01; another value is "
            "another cache key)"),
    Setting("PONCHO_DEBUG", "both", "tracebacks in the CLIs; phase timings in the shim"),
    Setting("PONCHO_ENV_DIR", "worker", "root of the unpacked environments (see [caches.md](caches.md))"),
    Setting("PONCHO_LOCK", "worker", "`mkdir`: force the `mkdir` lock instead of `flock` (also on shared file systems "
            "whose `flock` is per host)"),
    Setting("PONCHO_ENV_KEEP", "worker", "keep at most N unpacked environments, evicting the least recently used "
            "one not in use"),
    Setting("PONCHO_ENV_BUDGET_MB", "worker", "keep the unpacked environments and code layers of a worker within this "
            "many MiB, evicting the least recently used ones not in use (sizes recorded at unpack time); default 10240 "
            "in the shim's own root, none in a `PONCHO_ENV_DIR`; `off`: no budget"),
    Setting("PONCHO_PRIVATE_UNPACK", "worker", "`1`: a missing `--unpack-to` dir inside the task sandbox is unpacked "
            "in place as upstream does, not linked to the per-worker cache"),
    Setting("PONCHO_SKIP_FLOOR_CHECK", "worker", "`1`: run an environment on a worker below its recorded floor "
            "(another architecture, an older glibc) instead of exit 4 before unpacking"),
    Setting("PONCHO_WAIT_FOR_LOCK", "worker", "seconds `run_in_env` waits for another relocation (default 300)"),
)


def _bad(name: str, value: str, expected: str) -> SpecError:
    return SpecError("{}={!r} is not valid: expected {} (or unset it for the default)".format(name, value, expected))


class Settings:
    """The manager-side settings, read from *environ* (default ``os.environ``) when each property is asked."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None):
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> Optional[str]:
        """The variable's value, or None when unset or empty (an empty value means "the default" everywhere)."""
        value = self._environ.get(name)
        return value if value else None

    def _seconds(self, name: str, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            seconds = float(value)
        except ValueError:
            raise _bad(name, value, "a number of seconds") from None
        if not 0 < seconds < 1e9:
            raise _bad(name, value, "a positive number of seconds")
        return seconds

    def _flag(self, name: str) -> bool:
        return (self.raw(name) or "").strip().lower() not in ("", "0", "no", "false", "off")

    @property
    def cache_dir(self) -> str:
        """``$PONCHO_WQ_CACHE``, else ``$XDG_CACHE_HOME/poncho_wq``, else ``~/.cache/poncho_wq`` (absolute)."""
        root = self.raw("PONCHO_WQ_CACHE")
        if root:
            return os.path.abspath(os.path.expanduser(root))
        base = self.raw("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(os.path.abspath(base), "poncho_wq")

    @property
    def debug(self) -> bool:
        """``PONCHO_DEBUG``: tracebacks in the CLIs, debug logging."""
        return self._flag("PONCHO_DEBUG")

    @property
    def source(self) -> str:
        """``PONCHO_WQ_SOURCE``: what ``source="auto"`` means (``index``, ``current`` or ``auto``)."""
        value = (self.raw("PONCHO_WQ_SOURCE") or "auto").strip().lower()
        if value not in SOURCES:
            raise _bad("PONCHO_WQ_SOURCE", self.raw("PONCHO_WQ_SOURCE") or "", "one of " + ", ".join(SOURCES))
        return value

    @property
    def git_timeout(self) -> float:
        """``PONCHO_WQ_GIT_TIMEOUT``: seconds a git transfer may stall (no progress) before failing (default 120)."""
        return self._seconds("PONCHO_WQ_GIT_TIMEOUT", 120.0)

    @property
    def http_timeout(self) -> float:
        """``PONCHO_WQ_HTTP_TIMEOUT``: seconds an http(s) download may wait for the server (default 60)."""
        return self._seconds("PONCHO_WQ_HTTP_TIMEOUT", 60.0)

    @property
    def exclude_patterns(self) -> Tuple[str, ...]:
        """``PONCHO_WQ_EXCLUDE``: glob patterns of local files not to ship."""
        return tuple(p for p in (self.raw("PONCHO_WQ_EXCLUDE") or "").split(":") if p.strip())

    @property
    def data_warn_bytes(self) -> int:
        """``PONCHO_WQ_DATA_WARN_MB`` in bytes: above this, shipping local package data is warned about."""
        value = self.raw("PONCHO_WQ_DATA_WARN_MB")
        if value is None:
            return DATA_WARN_BYTES
        try:
            mb = float(value)
        except ValueError:
            raise _bad("PONCHO_WQ_DATA_WARN_MB", value, "a number of megabytes") from None
        if not 0 <= mb < 1e9:
            raise _bad("PONCHO_WQ_DATA_WARN_MB", value, "a number of megabytes")
        return int(mb * 10 ** 6)

    @property
    def target(self) -> Optional[str]:
        """``PONCHO_WQ_TARGET``: the default build target, a canonical manylinux tag (:mod:`poncho_wq.target`)."""
        value = self.raw("PONCHO_WQ_TARGET")
        if value is None:
            return None
        return parse_target(value, "PONCHO_WQ_TARGET").tag

    @property
    def keep_tests(self) -> bool:
        """``PONCHO_WQ_KEEP_TESTS``: ship installed packages' ``tests``/``test`` directories
        (:mod:`poncho_wq.archive.pack`)."""
        return self._flag("PONCHO_WQ_KEEP_TESTS")

    @property
    def parts(self) -> bool:
        """``PONCHO_WQ_PARTS``: ship environments as content-addressed parts (:mod:`poncho_wq.archive.parts`)."""
        return self._flag("PONCHO_WQ_PARTS")

    @property
    def part_mb(self) -> float:
        """``PONCHO_WQ_PART_MB``: the size (MB, unpacked) from which a distribution is a part of its own."""
        value = self.raw("PONCHO_WQ_PART_MB")
        if value is None:
            return 4.0
        try:
            mb = float(value)
        except ValueError:
            raise _bad("PONCHO_WQ_PART_MB", value, "a number of MB") from None
        if not 0 < mb < 1e9:
            raise _bad("PONCHO_WQ_PART_MB", value, "a positive number of MB")
        return mb

    @property
    def vine_seed(self) -> float:
        """``PONCHO_WQ_VINE_SEED``: seconds to wait for TaskVine's seed copy of an environment (0: no seed)."""
        value = self.raw("PONCHO_WQ_VINE_SEED")
        if value is None or value.strip() in ("0", "0.0"):
            return 0.0
        return self._seconds("PONCHO_WQ_VINE_SEED", 0.0)

    @property
    def no_worker_notice(self) -> float:
        """``PONCHO_WQ_NO_WORKER_NOTICE``: seconds with tasks waiting and no worker connected before a manager says
        so on the ``poncho_wq`` logger (:mod:`poncho_wq.waiting`; default 30, 0: never)."""
        value = self.raw("PONCHO_WQ_NO_WORKER_NOTICE")
        if value is not None and value.strip() in ("0", "0.0"):
            return 0.0
        return self._seconds("PONCHO_WQ_NO_WORKER_NOTICE", 30.0)

    @property
    def progress(self) -> str:
        """``PONCHO_WQ_PROGRESS``: ``auto`` (render a build's progress when stderr is a terminal), ``on`` or ``off``;
        what ``progress=None`` means for PonchoTask and ``Environment.build`` (:func:`poncho_wq.progress.
        default_progress`)."""
        value = (self.raw("PONCHO_WQ_PROGRESS") or "auto").strip().lower()
        if value not in PROGRESS:
            raise _bad("PONCHO_WQ_PROGRESS", self.raw("PONCHO_WQ_PROGRESS") or "", "one of " + ", ".join(PROGRESS))
        return value

    @property
    def analyze_serial(self) -> bool:
        """``PONCHO_WQ_ANALYZE_SERIAL``: parse in one process instead of forking parsers."""
        return self._flag("PONCHO_WQ_ANALYZE_SERIAL")

    @property
    def binding(self) -> Optional[str]:
        """``PONCHO_WQ_BINDING``: the Work Queue binding to load, or None for the first that imports."""
        value = self.raw("PONCHO_WQ_BINDING")
        if value is not None and value not in BINDINGS:
            raise _bad("PONCHO_WQ_BINDING", value, "one of " + ", ".join(BINDINGS))
        return value

    @property
    def conda_exe(self) -> Optional[str]:
        """``PONCHO_CONDA_EXE``: the conda installer named by the user (validated by the conda engine)."""
        value = self.raw("PONCHO_CONDA_EXE")
        return value.strip() if value and value.strip() else None

    @property
    def conda_pkgs_dir(self) -> Optional[str]:
        """``PONCHO_CONDA_PKGS_DIR``: py-rattler's package cache, or None for rattler's default."""
        return self.raw("PONCHO_CONDA_PKGS_DIR")

    @property
    def distribution(self) -> Optional[str]:
        """``PONCHO_WQ_DISTRIBUTION``: ``direct``, ``url``, ``shared`` or ``serve``; None for the default."""
        value = self.raw("PONCHO_WQ_DISTRIBUTION")
        if value is None:
            return None
        mode = value.strip().lower()
        if mode not in DISTRIBUTIONS:
            raise _bad("PONCHO_WQ_DISTRIBUTION", value, "one of " + ", ".join(DISTRIBUTIONS))
        return mode

    @property
    def publish_dir(self) -> Optional[str]:
        """``PONCHO_WQ_PUBLISH_DIR`` (absolute), or None."""
        value = self.raw("PONCHO_WQ_PUBLISH_DIR")
        return os.path.abspath(os.path.expanduser(value)) if value else None

    @property
    def publish_url(self) -> Optional[str]:
        """``PONCHO_WQ_PUBLISH_URL``, or None (checked by :class:`poncho_wq.deliver.publish.Delivery`)."""
        value = self.raw("PONCHO_WQ_PUBLISH_URL")
        return value.strip() if value and value.strip() else None

    @property
    def serve_address(self) -> str:
        """``PONCHO_WQ_SERVE_ADDRESS``: where the ``serve`` mode's cache server listens (default ``127.0.0.1``)."""
        value = self.raw("PONCHO_WQ_SERVE_ADDRESS")
        value = value.strip() if value else ""
        if not value:
            return "127.0.0.1"
        if any(c.isspace() or c in "/?#@[]'\"%" for c in value):
            raise _bad("PONCHO_WQ_SERVE_ADDRESS", value, "an address or host name to listen on, e.g. 0.0.0.0 or "
                       "10.0.0.5")
        return value

    @property
    def serve_log(self) -> Optional[str]:
        """``PONCHO_WQ_SERVE_LOG``: the cache server's access log (absolute), or None."""
        value = self.raw("PONCHO_WQ_SERVE_LOG")
        return os.path.abspath(os.path.expanduser(value)) if value and value.strip() else None

    @property
    def fetch_timeout(self) -> float:
        """``PONCHO_WQ_FETCH_TIMEOUT``: seconds a worker's whole fetch of a published file may take (default 300)."""
        return self._seconds("PONCHO_WQ_FETCH_TIMEOUT", FETCH_TIMEOUT)

    @property
    def source_date_epoch(self) -> int:
        """``SOURCE_DATE_EPOCH``: the mtime of every archive member (default 2000-01-01T00:00:00Z)."""
        value = self.raw("SOURCE_DATE_EPOCH")
        if value is None:
            return DEFAULT_MTIME
        try:
            epoch = int(value)
        except ValueError:
            raise _bad("SOURCE_DATE_EPOCH", value, "whole seconds since 1970") from None
        if not 0 <= epoch < 2 ** 33:  # the ustar/gzip headers' range
            raise _bad("SOURCE_DATE_EPOCH", value, "whole seconds since 1970, before the year 2242")
        return epoch


def settings_markdown() -> str:
    """docs/settings.md: every variable of :data:`SETTINGS` in one table, generated so that it cannot drift."""
    lines = [
        "# Settings: environment variables",
        "",
        "<!-- generated from poncho_wq/config.py by `python -m poncho_wq.config > docs/settings.md`; "
        "tests/test_config.py checks it -->",
        "",
        "All of them are read, validated and documented in one place, `poncho_wq/config.py`; an invalid value is an "
        "error naming",
        "the variable. *manager* variables are read by poncho_wq on the machine that builds and submits; *worker* "
        "variables by",
        "the run shim on the workers (set them in the worker's environment).",
        "",
        "| variable | where | meaning |",
        "| --- | --- | --- |",
    ]
    lines += ["| `{}` | {} | {} |".format(s.name, s.where, s.doc) for s in SETTINGS]
    return "\n".join(lines) + "\n"


def settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """The settings read from *environ* (default: the process environment, read at each access)."""
    return Settings(environ)


if __name__ == "__main__":
    import sys

    sys.stdout.write(settings_markdown())
