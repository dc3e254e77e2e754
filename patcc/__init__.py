"""patcc: a compiler that turns pattern-pruned CNNs into fast native code.

The pipeline is frontends -> IR -> passes -> backends -> runtime; see README.md.
"""

from patcc.errors import PatccError

__version__ = "0.1.0"

__all__ = ["PatccError", "__version__"]
