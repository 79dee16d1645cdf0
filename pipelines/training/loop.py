"""The epoch loop: batches -> steps -> checkpoints -> per-epoch records, and `main`.

Place in the data flow: drives a `Run` (`runner`) epoch by epoch: the loader's batches through
`Run.train_step`, a checkpoint every `--checkpoint-every` steps and at each epoch's end (or a
stop after `--stop-after` steps), the epoch's metrics (`evaluate`) appended to
`OUT/metrics.jsonl` and its per-clip test outcomes to `OUT/outcomes.jsonl`, and
`OUT/done.json` when the run ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from mmsample.batch import MultimodalBatch
from mmsample.cli import name_the_flags
from mmsample.decoding import decode_count
from mmsample.decoding.backends.diagnosis import announce_decoders
from mmsample.report.outcomes import write_outcomes
from mmsample.report.runs import RUN_FORMAT
from mmsample.storage import redact

from .device import all_sum
from .evaluate import evaluate
from .options import build_parser, check_args
from .runner import Run


def write_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append `record` unless its epoch is already in the file (a resumed run repeats none)."""
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and json.loads(line).get("epoch") == record.get("epoch"):
                return
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def batches(run: Run) -> Iterator[MultimodalBatch]:
    """The epoch's batches with a progress bar on rank 0."""
    bar = tqdm(
        total=len(run.loader),
        initial=run.step,
        desc=f"{run.args.method} epoch {run.epoch}",
        unit="batch",
        disable=run.args.no_progress or run.rank != 0,
        leave=False,
    )
    for batch in run.loader:
        yield batch
        bar.update(1)
    bar.close()


def run_epoch(run: Run) -> dict[str, Any] | None:
    """Train one epoch (from `run.step` when resumed); None if stopped by --stop-after. The
    record's times: `time/set_epoch_s` (the loader's set_epoch: ledger sync, scoring and
    rescoring passes, the method's plan), `time/epoch_s` (the training batches),
    `time/eval_s` (evaluation) and `time/wall_s` (all of the epoch, checkpoint included)."""
    args = run.args
    decoded = decode_count.total()  # the epoch's work: scoring passes, training, evaluation
    begin = time.perf_counter()
    if run.fresh_epoch:
        run.loader.set_epoch(run.epoch)
    run.fresh_epoch = True
    set_epoch_s = time.perf_counter() - begin
    trace_path = args.out / f"trace-{run.rank}.jsonl"
    trace = trace_path.open("a") if args.trace else nullcontext(None)
    loss_sum, right, rows, items, waited = 0.0, 0, 0, 0, 0.0
    start = time.perf_counter()
    with trace as tr:
        it = iter(batches(run))
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            waited += time.perf_counter() - t0
            if batch is None:
                break
            if tr is not None:
                rec = {"epoch": run.epoch, "step": run.step, "ids": batch.ids.tolist()}
                tr.write(json.dumps(rec) + "\n")
                tr.flush()
            loss, r, n = run.train_step(batch)
            loss_sum, right, rows, items = (
                loss_sum + loss,
                right + r,
                rows + n,
                items + len(batch),
            )
            run.step += 1
            run.steps_this_run += 1
            every = args.checkpoint_every
            if every and run.step % every == 0:
                run.save(end_of_epoch=False)
            if args.stop_after and run.steps_this_run >= args.stop_after:
                run.save(end_of_epoch=False)  # a preemption: checkpoint, then stop
                return None
    seconds = time.perf_counter() - start
    totals = all_sum(torch.tensor([loss_sum, right, rows, items], dtype=torch.float64))
    record: dict[str, Any] = {
        "epoch": run.epoch,
        "method": args.method,
        "steps": run.step,
        "train/loss": float(totals[0] / max(float(totals[3]), 1.0)),
        "train/acc": float(totals[1] / max(float(totals[2]), 1.0)),
        "train/items": float(totals[3]),
        "time/set_epoch_s": set_epoch_s,
        "time/epoch_s": seconds,
        "time/data_s": waited,
        "throughput/items_per_s": float(totals[3]) / max(seconds, 1e-9),
    }
    trained = decode_count.total()
    record.update(run.ogm_record())
    record.update(evaluate_epoch(run))
    work = [trained.items - decoded.items, decode_count.total().items - trained.items]
    summed = all_sum(torch.tensor(work, dtype=torch.float64))
    record["work/decoded_train"], record["work/decoded_eval"] = (float(x) for x in summed)
    run.save(end_of_epoch=True)
    record["time/wall_s"] = time.perf_counter() - begin
    run.epoch, run.step = run.epoch + 1, 0
    return record


def evaluate_epoch(run: Run) -> dict[str, float]:
    """The epoch's test metrics and `time/eval_s` (empty without a test split); rank 0 appends
    the per-clip outcomes to `OUT/outcomes.jsonl`."""
    if run.test is None or run.test_key is None:
        return {}
    t0 = time.perf_counter()
    metrics, outcomes = evaluate(
        run.model, run.test, run.test_key, run.device, run.args.workers, run.epoch
    )
    metrics["time/eval_s"] = time.perf_counter() - t0
    if run.rank == 0:
        write_outcomes(run.args.out, outcomes)
    return metrics


def train(run: Run) -> int:
    """Write `OUT/config.json` (rank 0), resume from this rank's checkpoint if any, train the
    remaining epochs and write `OUT/done.json`; 0 when done or stopped by --stop-after."""
    args = run.args
    if run.rank == 0:
        # a run that falls back to PyAV says so, and why (once per process: the demo's runs
        # share one process)
        decoders = announce_decoders()
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        config.update(world_size=run.world, device=str(run.device), run_format=RUN_FORMAT)
        config["data"] = redact(args.data)  # a URL without its query string (a signature)
        config["data_fingerprint"] = run.fingerprint
        config["num_classes"] = run.num_classes  # chance = 1 / num_classes in the report
        config["decoder"] = decoders  # the report says which decoder each run used
        (args.out / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
    run.restore()
    while run.epoch < args.epochs:
        record = run_epoch(run)
        if record is None:
            return 0
        if run.rank == 0:
            write_jsonl(args.out / "metrics.jsonl", record)
            shown = {k: round(v, 4) for k, v in record.items() if k.startswith("test/acc")}
            shown["train/loss"] = round(record["train/loss"], 4)
            # the metrics line prints with --no-progress too: that flag hides the bars only
            print(f"[{args.method}] epoch {record['epoch']}: {shown}", flush=True)
    if run.rank == 0:
        (args.out / "done.json").write_text(json.dumps({"epochs": args.epochs}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Train (or resume) one run; see `pipelines.training`."""
    parser = build_parser()
    args = check_args(parser, parser.parse_args(argv))
    try:
        run = Run(args)
    except ValueError as err:  # a setting the run refuses: name the flag, exit 2
        parser.error(name_the_flags(str(err), parser.format_usage()))
    try:
        return train(run)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
