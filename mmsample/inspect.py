"""The `mmsample inspect` report: what a sharded dataset holds and what one sample decodes to.

Place in the data flow: a look at the output of the sharding tool through the same reader
training uses (`IndexedDataset` with the default spec of each field), so a user sees the tensor
shapes a model will get before writing any training code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import ManifestError
from .shards.format import read_manifest
from .storage.location import redact


def _describe(value: Any) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {k: _describe(v) for k, v in value.items()}
    return {"type": type(value).__name__}


def inspect_dataset(
    root: str | Path, *, sample_id: int | None = None, tokenizer: str | Path | None = None
) -> dict[str, Any]:
    """Summarise the dataset at `root` (samples, shards, bytes, fields, class counts) and decode
    one sample (default: the first stored id) with the default spec of each field."""
    from .decoding import DEFAULT_SPECS, default_spec
    from .shards.indexed import IndexedDataset

    root = os.fspath(root)  # a folder or a URL
    manifest = read_manifest(root)
    report: dict[str, Any] = {
        "root": redact(root),
        "samples": manifest.num_samples,
        "rows": manifest.num_rows,
        "skipped": manifest.skipped,
        "shards": len(manifest.shards),
        "bytes": sum(s.bytes for s in manifest.shards),
        "fields": list(manifest.fields),
        "class_counts": manifest.class_counts(),
        "split_counts": manifest.split_counts(),
        "sample": None,
        "not_decoded": [],
    }
    specs = {}
    for name in manifest.fields:
        if name.rsplit(".", 1)[-1].lower() not in DEFAULT_SPECS:
            report["not_decoded"].append(name)
            continue  # a bad --tokenizer is an error, never a silently undecoded field
        specs[name] = default_spec(name, tokenizer=str(tokenizer) if tokenizer else None)
    if not manifest.shards or not specs:
        return report
    if sample_id is None:
        sample_id = manifest.shards[0].first_id
    dataset = IndexedDataset(root, specs)
    try:
        sample = dataset.get(sample_id)
    except KeyError:
        raise ManifestError(
            f"The 'sample_id' parameter must be a stored sample id: {sample_id} is not in "
            f"{redact(root)} (ids are input rows 0..{manifest.num_rows - 1}; skipped rows have none)"
        ) from None
    finally:
        dataset.close()
    label = int(sample["label"])
    report["sample"] = {
        "id": int(sample["id"]),
        "key": sample["key"],
        "shard": sample["shard"],
        "label": label,
        "class": manifest.classes[label] if 0 <= label < len(manifest.classes) else None,
        "modalities": {name: _describe(sample[name]) for name in specs if name in sample},
        "absent": [name for name in specs if name not in sample],
    }
    return report


def _shape(info: dict[str, Any]) -> str:
    if "shape" in info:
        return f"{info['dtype']} {info['shape']}"
    return "; ".join(f"{k} {_shape(v)}" for k, v in info.items())


def format_report(report: dict[str, Any]) -> str:
    """The report of `inspect_dataset` as the text `mmsample inspect` prints."""
    skipped = f", {report['skipped']} skipped" if report["skipped"] else ""
    lines = [
        f"dataset {report['root']}",
        f"  samples {report['samples']} of {report['rows']} rows{skipped}, "
        f"{report['shards']} shards, {report['bytes']:,} bytes",
        f"  fields  {', '.join(report['fields'])}",
        f"  classes {len(report['class_counts'])}",
    ]
    width = max((len(c) for c in report["class_counts"]), default=0)
    lines += [f"    {c:<{width}}  {n}" for c, n in report["class_counts"].items()]
    if report.get("split_counts"):
        splits = ", ".join(f"{s} {n}" for s, n in report["split_counts"].items())
        lines.insert(3, f"  splits  {splits}")
    sample = report["sample"]
    if sample is not None:
        lines.append(
            f"sample id {sample['id']} (key {sample['key']}, {sample['shard']}, "
            f"class {sample['class']})"
        )
        width = max((len(m) for m in sample["modalities"]), default=0)
        for name, info in sample["modalities"].items():
            lines.append(f"  {name:<{width}}  {_shape(info)}")
        if sample["absent"]:
            lines.append(f"  absent: {', '.join(sample['absent'])}")
    if report["not_decoded"]:
        lines.append(f"  no default spec (not decoded): {', '.join(report['not_decoded'])}")
    return "\n".join(lines)
