"""Balancing methods: small objects fed by the model's outputs that shape what the loader yields.

OGM-GE is the training-side companion (a gradient hook called between backward and step).
"""

from .ogmge import OGMGE, OGMGE_NOISE, OGMGE_PARAMS

__all__ = ["OGMGE", "OGMGE_NOISE", "OGMGE_PARAMS"]
