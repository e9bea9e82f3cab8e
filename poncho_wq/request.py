"""The build request: one environment build, resolved once at the entry and handed down as a frozen value.

Why (issue 26): the build target, the engine and the settings that change the built bytes used to be looked up
again by every stage that needed them. A task's first build applied ``$PONCHO_WQ_TARGET`` 4 times and chose the
engine 4 times (``Environment``, ``create()``, ``cache_key()``, ``build_prefix()``), and ``cache_key()`` and the
packer each read ``$PONCHO_WQ_KEEP_TESTS``: the settings were hidden inputs of the cache key, and a setting changed
between two reads gave the key of one build to the bytes of another. Like pypa/installer's
``WheelSource -> install() -> WheelDestination``, the entry (``create()``, ``Environment.build()``, the command
line, the upstream drop-ins) now makes one :class:`BuildRequest` from the user's arguments and the settings, and
the stages below (key, populate, pack, cache) take it and return values.

A request is made by :func:`poncho_wq.engines.build_request` (the engines are a later stage than this module);
this module only says what a request holds. :class:`PackageData` is the analysis' part of the same idea: which
data files of local packages ship, read from the settings once by the entry (``Environment.from_script``, the
command line, ``poncho_wq.analyze``) and handed to :func:`poncho_wq.analysis.analyzer.analyze`.
"""

import dataclasses
from typing import Any, Mapping, Optional, Tuple

from .config import DATA_WARN_BYTES, DEFAULT_MTIME, Settings
from .spec import Spec


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """What one build is: everything its cache key and its bytes depend on besides the machine itself.

    ``spec``: the spec with its build target applied (``target=``, else the spec's, else ``$PONCHO_WQ_TARGET``);
    ``engine``: the chosen :class:`poncho_wq.engines.Engine`; ``python``: the base interpreter (portable and
    current engines); ``why``: canonical name -> reasons for ``poncho/lock.json`` (part of the key), or None;
    ``keep_tests``: ``$PONCHO_WQ_KEEP_TESTS`` as read at the entry (packages' test directories are packed);
    ``conda_exe``: the conda installer named by the caller (upstream's ``conda_executable=``), None: the
    conda engine's own choice (``$PONCHO_CONDA_EXE``, else what is on PATH, else py-rattler);
    ``source_date_epoch``: ``$SOURCE_DATE_EPOCH`` as read at the entry, the mtime of every archive member (another
    value gives other bytes, so another key)."""

    spec: Spec
    engine: Any
    python: Optional[str] = None
    why: Optional[Mapping[str, Any]] = None
    keep_tests: bool = False
    conda_exe: Optional[str] = None
    source_date_epoch: int = DEFAULT_MTIME


@dataclasses.dataclass(frozen=True)
class PackageData:
    """Which data files of the local packages an analysis ships, and when it warns about their size.

    ``exclude``: glob patterns of files not to ship (``$PONCHO_WQ_EXCLUDE``); ``warn_bytes``: above this total a
    warning names the largest (``$PONCHO_WQ_DATA_WARN_MB``). Part of an analyzed environment's memo key: another
    value is another list of shipped files."""

    exclude: Tuple[str, ...] = ()
    warn_bytes: int = DATA_WARN_BYTES

    @classmethod
    def from_settings(cls, config: Settings) -> "PackageData":
        """The value the settings *config* give (each read once, here)."""
        return cls(exclude=config.exclude_patterns, warn_bytes=config.data_warn_bytes)
