"""k-means++ over rank-one embeddings: first pick, no repeats, the D^2 law, exact distances."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from mmsample.signals import kmeans_pp, rank_one_sq_distances


def materialised(a: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    """The [N, K*D] embeddings kmeans_pp must never build, built here in numpy as the reference."""
    an, zn = a.double().numpy(), z.double().numpy()
    return np.einsum("nk,nd->nkd", an, zn).reshape(len(an), -1)


def test_rank_one_distances_equal_materialised() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 5, generator=g, dtype=torch.float64)
    z = torch.randn(20, 7, generator=g, dtype=torch.float64)
    emb = materialised(a, z)
    for c in range(20):
        expected = ((emb - emb[c]) ** 2).sum(axis=1)
        got = rank_one_sq_distances(a, z, c).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
        assert (got >= 0).all()  # rounding negatives are clamped


def test_first_pick_is_largest_norm() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(50, 4, generator=g)
    z = torch.rand(50, 6, generator=g)
    a[17] *= 3.0  # ||a_17|| ||z_17|| clearly largest
    norms = np.linalg.norm(materialised(a, z), axis=1)
    first = kmeans_pp(a, z, 1).item()
    assert first == int(np.argmax(norms)) == 17


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_never_repeats(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(40, 3, generator=g).to(dtype)
    z = torch.randn(40, 5, generator=g).to(dtype)
    picks = kmeans_pp(a, z, 40, generator=g)
    assert picks.dtype == torch.long
    assert sorted(picks.tolist()) == list(range(40))


def test_duplicates_fall_back_to_unchosen() -> None:
    # 12 points, only 3 distinct embeddings: picks past the third must still be new indices
    base_a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    base_z = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    a, z = base_a.repeat(4, 1), base_z.repeat(4, 1)
    picks = kmeans_pp(a, z, 12, generator=torch.Generator().manual_seed(0))
    assert sorted(picks.tolist()) == list(range(12))
    # the first three picks cover the three distinct embeddings (D^2 gives duplicates weight 0)
    assert sorted(p % 3 for p in picks[:3].tolist()) == [0, 1, 2]


def test_all_identical_points_second_pick_uniform() -> None:
    a, z = torch.ones(6, 2), torch.ones(6, 3)
    counts = np.zeros(6)
    g = torch.Generator().manual_seed(5)
    for _ in range(1200):
        picks = kmeans_pp(a, z, 2, generator=g).tolist()
        assert picks[0] == 0 and picks[1] != 0
        counts[picks[1]] += 1
    assert counts[0] == 0
    assert chisquare(counts[1:]).pvalue > 1e-3


def second_pick_counts(a: torch.Tensor, z: torch.Tensor, draws: int, seed: int) -> np.ndarray:
    counts = np.zeros(a.shape[0])
    g = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        counts[int(kmeans_pp(a, z, 2, generator=g)[1])] += 1
    return counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_second_pick_follows_d2_law(dtype: torch.dtype) -> None:
    a = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.5], [0.5, 0.5], [0.2, 1.0]])
    z = torch.tensor(
        [
            [2.0, 1.0, 0.0],
            [1.0, 0.0, 1.0],
            [0.0, 1.0, 1.0],
            [1.0, 1.0, 1.0],
            [0.5, 0.0, 0.5],
            [1.0, 2.0, 0.0],
        ]
    )
    a, z = a.to(dtype), z.to(dtype)
    emb = materialised(a, z)
    first = int(np.argmax(np.linalg.norm(emb, axis=1)))
    d2 = ((emb - emb[first]) ** 2).sum(axis=1)
    expected = d2 / d2.sum()
    draws = 3000
    counts = second_pick_counts(a, z, draws, seed=11)
    assert counts[first] == 0
    keep = expected > 0
    assert chisquare(counts[keep], expected[keep] * draws).pvalue > 1e-3
    # the same draws clearly reject a uniform second pick: the test can tell the laws apart
    uniform = np.full(keep.sum(), draws / keep.sum())
    assert chisquare(counts[keep], uniform).pvalue < 1e-6


def test_third_pick_uses_nearest_center() -> None:
    # three collinear clusters of embeddings: after picks {0, 2}, point 1's D^2 is to its nearest
    a = torch.tensor([[10.0], [1.0], [0.0], [1.2]], dtype=torch.float64)
    z = torch.ones(4, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    counts = np.zeros(4)
    n = 0
    for _ in range(2000):
        picks = kmeans_pp(a, z, 3, generator=g).tolist()
        if picks[1] == 2:
            counts[picks[2]] += 1
            n += 1
    # D^2 to nearest of {10, 0}: point 1 -> 1, point 3 -> 1.44
    expected = np.array([1.0, 1.44]) / 2.44 * n
    assert counts[0] == 0 and counts[2] == 0
    assert chisquare(counts[[1, 3]], expected).pvalue > 1e-3


def test_seeded_generator_is_reproducible() -> None:
    g = torch.Generator().manual_seed(9)
    a, z = torch.randn(100, 4, generator=g), torch.randn(100, 8, generator=g)
    p1 = kmeans_pp(a, z, 20, generator=torch.Generator().manual_seed(3))
    p2 = kmeans_pp(a, z, 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(p1, p2)
    assert kmeans_pp(a, z, 0).shape == (0,)


def test_validation() -> None:
    a, z = torch.randn(5, 2), torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"'n'.*\[0, 5\]"):
        kmeans_pp(a, z, 6)
    with pytest.raises(ValueError, match=r"'a' and 'z'"):
        kmeans_pp(a, torch.randn(4, 3), 2)
    with pytest.raises(ValueError, match=r"'a' and 'z'"):
        kmeans_pp(a, z.double(), 2)
    with pytest.raises(ValueError, match=r"'z'.*floating"):
        kmeans_pp(a, torch.ones(5, 3, dtype=torch.long), 2)
    with pytest.raises(TypeError, match=r"'n'"):
        kmeans_pp(a, z, 2.0)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(500, 7, device="cuda")
    z = torch.randn(500, 9, device="cuda")
    picks = kmeans_pp(a, z, 50, generator=g)
    assert picks.device.type == "cuda"
    assert len(set(picks.tolist())) == 50
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(z, dim=1)
    assert picks[0].item() == norms.argmax().item()
    with pytest.raises(ValueError, match=r"'generator'"):
        kmeans_pp(a, z, 2, generator=torch.Generator())


def test_non_finite_rows_are_named() -> None:
    a, z = torch.randn(6, 2), torch.randn(6, 3)
    z[4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"finite; rows \[4\]"):
        kmeans_pp(a, z, 2)


def test_row_split_matvecs_equal_whole_matvecs() -> None:
    from mmsample.signals.kmeans import SPLIT_ELEMENTS, paired_matvecs, row_split_pool

    g = torch.Generator().manual_seed(7)
    n = SPLIT_ELEMENTS // 8 + 1001  # odd size: the parts have unequal lengths
    a = torch.randn(n, 3, generator=g, dtype=torch.float64)
    z = torch.randn(n, 5, generator=g, dtype=torch.float64)
    a_c, z_c = a[17], z[17]
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            with row_split_pool(a, z) as pool:
                assert (pool is None) == (threads == 1)  # these rows are split over threads
            got_a, got_z = paired_matvecs(a, a_c, z, z_c)
            # independent reference: elementwise products summed per row
            assert torch.allclose(got_a, (a * a_c).sum(1), rtol=1e-12, atol=1e-12)
            assert torch.allclose(got_z, (z * z_c).sum(1), rtol=1e-12, atol=1e-12)
    finally:
        torch.set_num_threads(before)


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _process_cpu_seconds() -> float:
    return sum(os.times()[:2])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_no_thread_started_by_kmeans_pp_outlives_it() -> None:
    """Issue 7 item 15: a pool of helper threads (and the OpenMP teams their torch calls start)
    left behind by kmeans_pp slowed the caller's next calls; after it returns, nothing it started
    may still run or spin."""
    from mmsample.signals.kmeans import SPLIT_ELEMENTS

    before_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the row split needs >= 2 intra-op threads
        g = torch.Generator().manual_seed(3)
        a = torch.randn(SPLIT_ELEMENTS // 12 + 500, 4, generator=g)
        z = torch.randn(SPLIT_ELEMENTS // 12 + 500, 8, generator=g)
        torch.mv(a, a[0]).add_(1.0).sum()  # torch's own intra-op team exists before we count
        python_before = set(threading.enumerate())
        native_before = _native_threads()
        for _ in range(2):  # a second call must not add threads either
            picks = kmeans_pp(a, z, 4, generator=g)
            assert len(set(picks.tolist())) == 4
            assert set(threading.enumerate()) == python_before
        deadline = time.monotonic() + 2.0  # native threads may take a moment to exit
        while _native_threads() > native_before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _native_threads() <= native_before
        # nothing spins: the process burns (almost) no CPU while this thread sleeps
        cpu = _process_cpu_seconds()
        time.sleep(0.5)
        assert _process_cpu_seconds() - cpu < 0.1
    finally:
        torch.set_num_threads(before_threads)
