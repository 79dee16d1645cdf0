"""Benchmark the sharding tool's memory: bytes of peak RSS per input row of `mmsample shard`.

Writes a CSV table of N rows (`key`, `label` from 10 classes, an inline `txt` caption: about 44
bytes a row, as a big manifest of captions) and runs `shard_dataset` on it with `--part 0/100`
(one shard of N / 100 rows written; every row still read and checked for duplicate keys), each
run in a fresh interpreter. Prints a markdown table: rows, the CSV's bytes, the peak RSS above
the import baseline, bytes per row, and that peak against the goal max(3 x CSV bytes, 100 bytes
x rows).

How memory is measured (Linux /proc polling; no psutil): the child process imports the sharding
tool (and what it imports on its first run: tqdm, the process pool), takes its VmRSS as the
import baseline and resets its peak (`/proc/self/clear_refs`), then runs the tool. The parent's
figure is its VmHWM (the kernel's exact peak RSS) after the run minus that baseline. Each worker
process's figure is its peak anonymous RSS (RssAnon, polled every 5 ms by a thread through
`/proc/PID/task/TID/children`) minus the RssAnon of a spawned pool process that imported what a
worker imports (measured in the same run): anonymous memory, because a worker's baseline comes
from another process, and the file-backed pages of the shared libraries a process has mapped
(torch's among them) differ between processes by a few MiB with the page cache.
`resource.getrusage(RUSAGE_CHILDREN)` is not used: it gives the largest child's peak, file
pages included, not the sum. With `--part 0/100` the part has one shard, so the tool writes it
in-process and no worker starts; `--part 0/1 --workers 2` exercises the workers.

Run: `.venv/bin/python tools/bench_shard.py` (about a minute on 2 cores);
`--rows 100000 1000000 --part 0/100 --workers 1` are the defaults.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path


def _kib(pid: int | str, field: str) -> int:
    """A `Vm...` line of /proc/PID/status, in bytes (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children lists of each of its threads, recursively)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _worker_baseline() -> int:
    """The anonymous RSS (RssAnon, bytes) of a worker process of the kind the tool starts
    (spawned, in a process pool) once it has imported what a shard worker imports."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, ctx) as pool:
        return int(pool.submit(_imported_rss).result())


def _imported_rss() -> int:
    import mmsample.sharding.tasks  # noqa: F401  (what a worker process imports)

    return _kib("self", "RssAnon")


def child(args: argparse.Namespace) -> None:
    """Run the tool once on `args.csv` and print one JSON line of memory figures."""
    import concurrent.futures.process  # noqa: F401  (the tool imports these on its first run)
    import multiprocessing.popen_spawn_posix  # noqa: F401

    import tqdm  # noqa: F401

    from mmsample.sharding import shard_dataset

    worker_base = _worker_baseline() if args.workers > 1 else 0
    baseline = _kib("self", "VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    peaks: dict[int, int] = {}
    done = threading.Event()

    def poll() -> None:
        me = os.getpid()
        while not done.is_set():
            for pid in _descendants(me):
                peaks[pid] = max(peaks.get(pid, 0), _kib(pid, "RssAnon"))
            time.sleep(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    began = time.perf_counter()
    index, count = (int(x) for x in args.part.split("/"))
    shard_dataset(
        args.csv,
        args.out,
        samples_per_shard=max(1, args.rows[0] // 100),
        workers=args.workers,
        part=(index, count),
        progress=False,
    )
    seconds = time.perf_counter() - began
    done.set()
    thread.join()
    parent = _kib("self", "VmHWM") - baseline
    # other descendants (multiprocessing's resource tracker) are far below a worker's baseline
    workers = sum(max(0, peak - worker_base) for peak in peaks.values()) if worker_base else 0
    print(
        json.dumps({
            "baseline": baseline,
            "parent": parent,
            "workers": workers,
            "processes": len(peaks),
            "seconds": seconds,
        })
    )  # fmt: skip


def write_csv(path: Path, rows: int) -> int:
    """The input table of `rows` rows; returns its size in bytes."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("key,label,txt\n")
        for i in range(rows):
            f.write(f"k{i:07d},class{i % 10},caption {i} of the table\n")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--part", default="0/100", help="I/N, as `mmsample shard --part`")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"{datetime.now():%Y-%m-%d %H:%M}, load average {os.getloadavg()[0]:.2f}, "
        f"{os.cpu_count()} cores; --part {args.part}, --workers {args.workers}, shards of "
        "rows / 100; peak RSS of the tool (parent + workers) above the import baseline\n"
    )
    print(
        "| rows | CSV | peak RSS above baseline (parent + workers) | bytes per row | goal "
        "| peak / goal | s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "in.csv"
            size = write_csv(csv, rows)
            command = [sys.executable, __file__, "--child", "--csv", str(csv)]
            command += ["--out", str(Path(tmp) / "out"), "--rows", str(rows)]
            command += ["--part", args.part, "--workers", str(args.workers)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"the run of {rows} rows failed:\n{done.stderr}")
            got = json.loads(done.stdout.strip().splitlines()[-1])
        peak = got["parent"] + got["workers"]
        goal = max(3 * size, 100 * rows)
        print(
            f"| {rows:,} | {size / 2**20:.1f} MiB | {peak / 2**20:.1f} MiB ({got['parent'] / 2**20:.1f}"
            f" + {got['workers'] / 2**20:.1f}) | {peak / rows:.0f} | "
            f"{goal / 2**20:.1f} MiB | {peak / goal:.2f} | {got['seconds']:.1f} |"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
