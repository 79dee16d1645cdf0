"""Issue 18, point 1: a state saved after an epoch's `for` loop ended restores to "that epoch
done". A training loop observes every batch into the ledger; the restored loader's next pass
must be the uninterrupted run's next epoch, and no batch of the saved epoch is served (and so
observed) again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from .loader_helpers import NAMES, K, make_loader, write_dataset

Batches = list[list[tuple[int, int]]]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shards")
    write_dataset(path)  # 22 samples, 5 shards
    return path


def _observe(loader: Any, batch: Any) -> None:
    """A training step's record: logits that depend on the id and the ledger's epoch."""
    ids, labels = batch.ids, batch.labels
    onehot = torch.nn.functional.one_hot(labels, K).double()
    z = torch.cos(ids[:, None].double() * torch.arange(1, K + 1) + loader.ledger.epoch)
    audio, feat = z + 3 * onehot, z + 0.5 * onehot
    present = torch.stack([batch.present(n) for n in NAMES], 1)
    loader.ledger.observe(ids, labels, [audio, feat], audio + feat, present=present)


def _train_pass(loader: Any) -> Batches:
    """One `for batch in loader` loop that observes every batch; its (id, mask) rows."""
    out = []
    for batch in loader:
        _observe(loader, batch)
        out.append(list(zip(batch.ids.tolist(), batch.mask.tolist())))
    return out


@pytest.mark.parametrize(
    "name, mode, workers",
    [
        ("smv", "streamed", 0),
        ("smv", "indexed", 2),
        ("bss-learned", "indexed", 0),
        ("bss-learned", "streamed", 2),
        ("dus", "indexed", 0),
        ("dus", "streamed", 2),
    ],
)
def test_a_state_saved_after_the_epochs_loop_resumes_at_the_next_epoch(
    root: Path, name: str, mode: str, workers: int
) -> None:
    def build() -> Any:
        persistent = {"persistent_workers": True} if workers else {}
        return make_loader(root, name, mode=mode, workers=workers, **persistent)

    reference = build()  # uninterrupted: epochs 0, 1, 2
    epochs = []
    for e in range(3):
        reference.set_epoch(e)
        epochs.append(_train_pass(reference))
    reference.ledger.flush()

    stopped = build()
    for e in range(2):
        stopped.set_epoch(e)
        _train_pass(stopped)
    state = stopped.state_dict()  # after epoch 1's loop ended
    assert state["epoch"] == 1 and state["batches"] == len(epochs[1]) > 0

    for explicit in (False, True):  # the loop goes on with or without set_epoch(2)
        restored = build()
        restored.load_state_dict(state)
        if explicit:
            restored.set_epoch(2)
        following = _train_pass(restored)
        restored.ledger.flush()
        where = f"{name}/{mode}/{workers} workers, set_epoch(2): {explicit}"
        assert restored.epoch == 2, where
        again = [b for b in following if b in epochs[1]]
        assert not again, f"{where}: {len(again)} of epoch 1's batches served again"
        assert following == epochs[2], where
        got, want = restored.ledger.snapshot(), reference.ledger.snapshot()
        differ = [k for k in want if not torch.equal(got[k], want[k])]
        assert not differ, f"{where}: ledger differs from the uninterrupted run's in {differ}"
