"""mmsample: data-side balancing for multimodal learning.

Sharded WebDataset readers that decode only what a step needs, and the balancing methods of five
papers (DUS, BSS, SMV, BMMAL, OGM-GE) as wrappers around the loaders users already have.
"""

__version__ = "0.1.0"
