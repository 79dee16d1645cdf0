"""Pure tensor functions every balancing method reads, and the per-sample Ledger."""

from .ledger import Ledger

__all__ = ["Ledger"]
