"""Placeholder: the per-sample Ledger is being written (see issue 3)."""

from __future__ import annotations


class Ledger:
    """Per-sample statistics table keyed by global sample id (not yet implemented)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("Ledger is not implemented yet")
