"""The version of poncho_wq, in a module of its own: the cache key holds it (:func:`poncho_wq.engines.cache_key`),
and the builders must not import the package's public front (``poncho_wq/__init__.py``) to read it."""

__version__ = "0.1.0"
