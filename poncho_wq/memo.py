"""The process-wide memos, registered in one place so that a long-running manager (or a test) can drop them all.

Why memos at all: a manager submits thousands of tasks with the same environment, and each task asks for its
environment again (analysis, spec hash, cache lookup, reachability of the index). Why one registry: memos
spread over modules are forgotten when something changes outside the process (a package installed, a network
that comes back); :func:`poncho_wq.clear_caches` clears every registered one.

Each memo's key is documented where it is defined and holds everything its answer depends on that can change
while the process runs (file identities: path, size, mtime; interpreter paths; settings that matter), so a stale
answer needs a change the key cannot see (an edited file whose size and mtime were put back).
"""

import threading
from typing import Callable, List

_clearers: List[Callable[[], None]] = []
_lock = threading.Lock()


def register(clear: Callable[[], None]) -> Callable[[], None]:
    """Register *clear* (e.g. ``some_dict.clear`` or an ``lru_cache``'s ``cache_clear``); returns it."""
    with _lock:
        _clearers.append(clear)
    return clear


def clear_caches() -> None:
    """Forget every in-process memo of the modules imported so far (on-disk caches stay: they check themselves)."""
    with _lock:
        clearers = list(_clearers)
    for clear in clearers:
        clear()
