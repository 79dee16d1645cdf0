"""`python -m pipelines.train`: the command of the reference training loop.

Place in the data flow: the entry point only; the loop (options, device, data, evaluation, the
run and its checkpoints, the epochs) lives in `pipelines.training`, whose docstring is this
command's `--help`.
"""

from __future__ import annotations

from .training import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
