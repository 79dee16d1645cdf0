"""The reference training loop: a late-fusion model trained through a balancing method.

Place in the data flow: all of it. shards -> `balanced_loader` (or `wrap` around a plain
DataLoader) -> MultimodalBatch -> model (features, subset logits, unimodal probes) -> loss,
OGM-GE hook, step -> `ledger.observe(...)` -> the method plans the next epoch. Public API only.

    python -m pipelines.train --data runs/demo/data/shards --out runs/demo/dus --method dus
    torchrun --nproc_per_node 2 -m pipelines.train --data ... --out ... --method smv

Methods (`--method`): plain, dus, dus-rl, bss, bss-learned, smv, smv-modality, ogmge,
ogmge+dus, remix (Data Remixing: `--remix-warmup` epochs of joint training, then each sample
trains the modality its unimodal head is least confident on, with unimodal heads that train the
encoders; `--mode indexed` keeps each batch to one modality). Any device (`--device auto`: CUDA with bf16 autocast and non-blocking copies from
pinned batches, else CPU); DDP under torchrun (gloo on CPU, NCCL on GPU). Every
`--checkpoint-every` steps and at each epoch's end every rank saves `OUT/checkpoint/rank<r>.pt`
(model, optimizer, loader state with the method's and the ledger's, OGM-GE); a rerun with the
same arguments resumes from it. Writes `OUT/config.json`, `OUT/stats.jsonl` (the loader's
`method.stats(e)` per epoch), `OUT/metrics.jsonl` (train loss and accuracy, test accuracy and
macro-F1 of the fused head, accuracy of each modality alone, Shapley contribution per modality,
OGM-GE coefficients, time and throughput per epoch), `OUT/outcomes.jsonl` (every test clip's
predictions per epoch) and, when the run ends, `OUT/done.json` (docs/run_format.md).

`--model resnet18` trains on its preset's "train" specs (a few random frames per step, OGM-GE's
crop and flip on the device, drawn from (seed, epoch, step, rank)) and evaluates on the "test"
specs (all frames).

Evaluation reads the `--test-split` with an `IndexedDataset`, decoded once per process and
reused by later epochs and runs; under DDP each rank predicts a disjoint share of the test ids
and the shares are gathered, so every test sample counts once (the training reader's padding
never reaches it).
"""

# Modules (listed here, not in the docstring above: that is the --help text): `options` (the
# command line), `device` (rank, world, device, all-reduce), `data` (the method and the
# loader), `evaluate` (test metrics), `runner` (`Run`: the run's objects, checkpoint and one
# step) and `loop` (epochs, records, `main`). `python -m pipelines.train` runs `main`.
from .data import build_loader, build_method
from .evaluate import evaluate
from .loop import main, run_epoch, train
from .options import LOADERS, METHOD_CHOICES, METHODS, build_parser, parse_args
from .runner import Run

__all__ = [
    "LOADERS",
    "METHODS",
    "METHOD_CHOICES",
    "Run",
    "build_loader",
    "build_method",
    "build_parser",
    "evaluate",
    "main",
    "parse_args",
    "run_epoch",
    "train",
]
