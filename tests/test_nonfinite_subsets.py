"""Issue 18, point 2: a subset whose logits give no prediction (NaN, +inf, or -inf for every
class) counts as wrong, never as argmax's pick (class 0), with one NonFiniteSubsetWarning per
call naming the ids: in `subset_correct`, `subset_values`, the scoring pass (both value kinds)
and so in what the ledger and SMV see. The issue's case, worked by hand: a cosine video head
makes the subsets without video NaN; a label-0 sample right on video and on both gets
v = [0, 0, 1, 2] (argmax would give [0, 1, 1, 2]), Shapley (0.5, 1.5), one extra audio item."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from mmsample.batch import MultimodalBatch
from mmsample.ledger import Ledger
from mmsample.methods import SMV
from mmsample.scoring import score
from mmsample.shards import IndexedDataset
from mmsample.signals import (
    NonFiniteSubsetWarning,
    finite_subsets,
    shapley,
    smv_copies,
    subset_correct,
    subset_logits,
    subset_sizes,
    subset_values,
)
from mmsample.testing import write_tiny_dataset

from .loader_helpers import modalities

NAN, INF = float("nan"), float("inf")
K = 2  # classes


def cosine_head(x: torch.Tensor, m: int = 2) -> torch.Tensor:
    """Logits [N, K] from M features of width 2: the last modality (video) L2-normalised (NaN
    when zeroed, as a cosine head gives), the others added as they are."""
    parts = x.reshape(x.shape[0], m, 2)
    video = parts[:, -1] / parts[:, -1].norm(dim=1, keepdim=True)
    return 0.1 * parts[:, :-1].sum(1) + video


def features(labels: torch.Tensor, m: int = 2) -> list[torch.Tensor]:
    """Every modality's features point (weakly for all but video) at the label."""
    onehot = torch.nn.functional.one_hot(labels, K).double()
    return [onehot + 0.5 for _ in range(m)]


def caught(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """(fn's result, the NonFiniteSubsetWarnings it raised)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [w for w in seen if issubclass(w.category, NonFiniteSubsetWarning)]


def test_the_issues_cosine_head_case_worked_by_hand() -> None:
    labels = torch.tensor([0, 1, 0, 1])
    ids = torch.tensor([10, 11, 12, 13])
    logits = subset_logits(features(labels), cosine_head)  # [4, 4, 2]
    assert torch.isnan(logits[:, :2]).all() and torch.isfinite(logits[:, 2:]).all()
    sizes = subset_sizes(2).double()
    # the bug: argmax takes NaN as the maximum, class 0: label-0 samples "right" on audio alone
    naive = (logits.argmax(-1) == labels[:, None]).double() * sizes
    assert naive[0].tolist() == [0, 1, 1, 2] and shapley(naive)[0].tolist() == [1.0, 1.0]
    right, found = caught(subset_correct, logits, labels, ids)
    assert len(found) == 1  # one warning for the call, naming every sample and subset 1
    text = str(found[0].message)
    assert "subset_correct: the logits of subsets [1] " in text
    assert "4 sample(s), ids [10, 11, 12, 13]" in text and "count as wrong" in text
    values = right.double() * sizes
    assert values.tolist() == [[0, 0, 1, 2]] * 4
    phi = shapley(values)
    assert phi.tolist() == [[0.5, 1.5]] * 4
    assert smv_copies(phi).tolist() == [[1, 0]] * 4  # one extra audio item, none of video

    # the ledger and SMV: the label-0 samples' plan keeps their audio item
    led = Ledger(14, 2, K, names=["audio", "video"])
    uni = [torch.zeros(4, K, dtype=torch.double), logits[:, 2]]  # own finite unimodal heads
    led.observe(ids, labels, uni, logits[:, 3], values=values)
    smv = SMV(led, warmup=0, seed=0)
    smv.set_epoch(0)
    plan = smv.plan(0)
    for i in ids.tolist():
        assert list(plan.items(i)) == [3, 1], i  # the full item, then one audio item


def test_three_modalities_with_a_cosine_head() -> None:
    labels = torch.tensor([0, 1, 1])
    logits = subset_logits(features(labels, 3), lambda x: cosine_head(x, 3))  # [3, 8, 2]
    right, found = caught(subset_correct, logits, labels, torch.tensor([5, 6, 7]))
    assert len(found) == 1 and "subsets [1, 2, 3] " in str(found[0].message)
    values = right.double() * subset_sizes(3).double()
    assert values.tolist() == [[0, 0, 0, 0, 1, 2, 2, 3]] * 3  # right only with video (bit 2)
    assert torch.allclose(shapley(values), torch.tensor([[0.5, 0.5, 2.0]] * 3).double())


# (one subset's logits, label, counted right, warned): non-finite rows are wrong however
# argmax would read them; -inf for some classes is a masked class, a prediction
ROWS = {
    "all NaN": ([NAN, NAN, NAN], 0, False, True),
    "partial NaN": ([NAN, 0.0, 5.0], 0, False, True),
    "partial NaN, label elsewhere": ([1.0, NAN, 0.0], 0, False, True),
    "+inf": ([INF, 0.0, 0.0], 0, False, True),
    "+inf twice": ([INF, INF, 0.0], 0, False, True),
    "-inf everywhere": ([-INF, -INF, -INF], 0, False, True),
    "-inf for some classes": ([-INF, 2.0, 1.0], 1, True, False),
    "finite": ([3.0, 2.0, 1.0], 0, True, False),
}


@pytest.mark.parametrize("case", list(ROWS))
def test_each_kind_of_row(case: str) -> None:
    row, label, right, warned = ROWS[case]
    logits = torch.zeros(2, 4, 3)
    logits[:, :, 0] = 5.0  # every other subset predicts class 0 (right for label 0)
    logits[1, 2] = torch.tensor(row)
    labels = torch.tensor([0, label])
    got, found = caught(subset_correct, logits, labels, torch.tensor([40, 41]))
    assert got[1, 2].item() is right
    assert got[1, [1, 3]].tolist() == [label == 0] * 2 and got[0, 1:].all()
    assert len(found) == int(warned)
    if warned:
        assert "subsets [2] " in str(found[0].message) and "1 sample(s), ids [41]" in str(
            found[0].message
        )


def test_rows_are_named_without_ids_and_the_empty_subset_never() -> None:
    logits = torch.zeros(3, 4, 2)
    logits[:, 0] = NAN  # the empty subset: value 0 by definition, never warned about
    _, found = caught(subset_correct, logits, torch.zeros(3, dtype=torch.long))
    assert found == []
    logits[2, 3] = NAN
    right, found = caught(subset_correct, logits, torch.zeros(3, dtype=torch.long))
    assert len(found) == 1 and "subsets [3] " in str(found[0].message)
    assert "1 sample(s), rows [2]" in str(found[0].message)
    assert not right[:, 0].any() and right[:2, 1:].all() and not right[2, 3]
    with pytest.raises(ValueError, match="'ids' argument of subset_correct"):
        subset_correct(logits, torch.zeros(3, dtype=torch.long), torch.arange(2))


def test_subset_values_give_no_probability_to_a_subset_without_prediction() -> None:
    labels = torch.tensor([0, 1])
    feats = features(labels)
    raw, found = caught(subset_values, feats, cosine_head, "logits")
    assert found == [] and torch.isnan(raw[:, :2]).all()  # logits as the head gave them
    probs, found = caught(subset_values, feats, cosine_head, "probs", torch.tensor([3, 4]))
    assert len(found) == 1 and "subset_values: " in str(found[0].message)
    assert "ids [3, 4]" in str(found[0].message)
    assert (probs[:, :2] == 0).all() and torch.allclose(
        probs[:, 2:].sum(-1), torch.ones(2, 2).double()
    )
    logp, _ = caught(subset_values, feats, cosine_head, "log_probs")
    assert (logp[:, :2] == -INF).all() and torch.isfinite(logp[:, 2:]).all()
    with pytest.warns(NonFiniteSubsetWarning, match=r"^finite_subsets: .* rows \[0, 1\]"):
        assert finite_subsets(raw).tolist() == [[False, False, True, True]] * 2


class CosineModel:
    """Audio and feat (as "video") features from the batch; the fused head normalises the
    video part (NaN when it is zeroed); its own unimodal heads are finite."""

    def features(self, batch: MultimodalBatch) -> list[torch.Tensor]:
        onehot = torch.nn.functional.one_hot(batch.labels, K).float()
        return [onehot + 0.5, onehot + 0.5]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return cosine_head(x)

    def unimodal(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.zeros_like(feats[0]), feats[1]]


@pytest.mark.parametrize("kind", ["smv", "bmmal"])
def test_the_scoring_pass_counts_them_wrong(tmp_path: Path, kind: str) -> None:
    write_tiny_dataset(tmp_path, n=6, num_classes=K, fields=("wav", "npy"), samples_per_shard=3)
    reader = IndexedDataset(tmp_path, modalities())
    led = Ledger(6, 2, K, names=["audio", "video"])
    with pytest.warns(NonFiniteSubsetWarning, match=r"subsets \[1\] .* ids \[0, 1, 2, 3, 4, 5\]"):
        score(CosineModel(), reader, led, values=kind, batch_size=6, progress=False)
    values = led.values.double()
    assert torch.isfinite(values).all() and (values[:, 1] == 0).all()
    if kind == "smv":
        assert values.tolist() == [[0, 0, 1, 2]] * 6  # labels 0, 1, 0, 1, 0, 1
        assert shapley(values).tolist() == [[0.5, 1.5]] * 6
    else:
        assert (values[:, 2:] > 0.5).all()  # video and both: the prediction's probability
