"""Balancing methods: small objects fed by the model's outputs that shape what the loader yields.

The data-side methods (`DUS`, `BSS`, `SMV`, `Remix`) read a `Ledger` and return each epoch's plan
(DUS also per-modality batch sizes); OGM-GE is the training-side companion (a gradient hook
called between backward and step). `METHODS` maps the command-line names to classes.
"""

from .base import Method
from .bss import BSS
from .dus import DUS
from .ogmge import OGMGE, OGMGE_NOISE, OGMGE_PARAMS
from .remix import Remix
from .smv import SMV

METHODS: dict[str, type[Method]] = {"dus": DUS, "bss": BSS, "smv": SMV, "remix": Remix}

__all__ = [
    "BSS",
    "DUS",
    "METHODS",
    "OGMGE",
    "OGMGE_NOISE",
    "OGMGE_PARAMS",
    "SMV",
    "Method",
    "Remix",
]
