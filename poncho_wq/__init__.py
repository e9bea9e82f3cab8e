"""poncho_wq: make a Python environment travel with Work Queue / TaskVine tasks.

The public API is imported here; see README.md for runnable examples.
"""

__version__ = "0.1.0"

from .errors import PonchoError
from .spec import Spec, load_spec, parse_spec

__all__ = ["PonchoError", "Spec", "load_spec", "parse_spec", "__version__"]
