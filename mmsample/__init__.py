"""mmsample: data-side balancing for multimodal learning.

Sharded WebDataset readers that decode only what a step needs, and the balancing methods of five
papers (DUS, BSS, SMV, BMMAL, OGM-GE) as wrappers around the loaders users already have.

`mmsample.Balancer` balances your own loop; `mmsample.wrap` (= `mmsample.loader.wrap`) wraps a
DataLoader. Both, and the subpackages (`mmsample.methods`, ...), are imported on first use, so
`import mmsample` stays light (the command line starts fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .balancer import Balancer
    from .loader import wrap

# top-level name -> the module that defines it
_LAZY = {"Balancer": "mmsample.balancer", "wrap": "mmsample.loader"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:
        return importlib.import_module(f"mmsample.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"mmsample.{name}":
            raise
        raise AttributeError(f"module 'mmsample' has no attribute {name!r}") from None


__all__ = ["Balancer", "__version__", "wrap"]
