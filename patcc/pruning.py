"""``patcc.pruning``: the pruning algorithms' public API (they live in
``patcc.frontends.pruning``, beside the other frontends)."""

from patcc.frontends.pruning import *  # noqa: F403
from patcc.frontends.pruning import __all__  # noqa: F401
