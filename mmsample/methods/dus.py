"""DUS: per-modality batch sizes from the cumulative discrepancy (Jiang et al. 2025).

Place in the data flow: ledger (`cumulative_discrepancy`, S^(j)) -> **DUS** -> per-modality rows
per batch -> the loader builds batches of `max_j n_j` rows in which modality j is carried by
exactly n_j rows (seeded positions), so the decoder of modality j runs n_j times per batch.

Heuristic (docs/methods.md): the dominant modality (largest S; ties go to the lowest index) gets
`round(beta * exp(alpha * T) * N_B)` rows at epoch T = e + 1 (epochs counted from 0), the others
N_B, with `alpha = ln(1 / beta) / E`, so the sizes meet at the last epoch E - 1. Python's `round`
(half to even) rounds; sizes are clamped to [1, N_B]. Before any observation every modality gets
N_B.

RL policy (no public code exists; these are our choices): the state is S normalised to sum 1
(uniform before any observation); the policy is a linear layer M -> M (float64, initialised to
zero, so its mean action is uniform) giving the mean of Gaussian logits with a fixed standard
deviation `policy_std`; the action `a_hat = softmax(logits)` gives modality j
`max(1, round(N_B * a_hat_j))` rows (N_B = `batch_size` is the total). Before any observation
every modality gets the initial action N_B / M. Each later epoch, the reward of the previous action,
`r = (1/M) sum_j 1[S^(j) != max_k S^(k)] log(a_hat_j)` on the new S, makes one REINFORCE step
(loss `-r * log pi(logits | state)`, Adam, learning rate `lr` = 1e-4), then a new action is drawn
from a generator seeded by (seed, epoch). Sizes are fixed within an epoch.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ..errors import ShortRunWarning
from ..ledger import Ledger
from ..plan import ArrayPlan
from ..schedule import mix_seed
from .base import Method, check_choice, check_number

_TAG_ACTION = 0xD05


def heuristic_sizes(
    s: np.ndarray, batch_size: int, epoch: int, epochs: int, beta: float
) -> list[int]:
    """DUS heuristic rows per modality at 0-based `epoch` from the cumulative discrepancy `s`."""
    m = len(s)
    sizes = [batch_size] * m
    dominant = int(np.argmax(s))  # ties: the lowest index
    alpha = math.log(1.0 / beta) / epochs
    n = round(beta * math.exp(alpha * (epoch + 1)) * batch_size)
    sizes[dominant] = min(batch_size, max(1, n))
    return sizes


def rl_reward(s: np.ndarray, action: np.ndarray) -> float:
    """`(1/M) sum_j 1[S_j != max S] log(a_hat_j)`: high when the non-dominant modalities get a
    large share of the batch (DUS paper)."""
    weak = s != s.max()
    return float(np.sum(np.log(action[weak]))) / len(s)


class Heuristic:
    """Sizes from the schedule: N_B for every modality but the dominant one (`heuristic_sizes`);
    `batch_size` is the rows per batch."""

    def smallest_batch(self, m: int) -> int:
        return 1

    def initial(self, dus: DUS) -> list[int]:
        return [dus.rows_total] * dus.num_modalities

    def take(self, dus: DUS, epoch: int, s: np.ndarray, observed: bool) -> list[int]:
        if not observed:
            return self.initial(dus)
        return heuristic_sizes(s, dus.rows_total, epoch, dus.schedule_epochs, dus.beta)

    def stats(self, dus: DUS) -> dict[str, float]:
        return {}


class Reinforce:
    """A REINFORCE policy over the shares of `batch_size` (the total over modalities); see the
    module docstring."""

    def smallest_batch(self, m: int) -> int:
        return m

    def initial(self, dus: DUS) -> list[int]:
        m = dus.num_modalities
        return [max(1, round(dus.rows_total / m))] * m

    def take(self, dus: DUS, epoch: int, s: np.ndarray, observed: bool) -> list[int]:
        m = dus.num_modalities
        if not observed:
            dus._last, dus._reward = None, math.nan
            return self.initial(dus)
        state = torch.from_numpy(s / s.sum() if s.sum() > 0 else np.full(m, 1.0 / m))
        if dus._last is not None:  # REINFORCE on the previous action, rewarded by the new S
            prev_state = torch.tensor(dus._last["state"], dtype=torch.float64)
            prev_logits = torch.tensor(dus._last["logits"], dtype=torch.float64)
            action = torch.softmax(prev_logits, 0).numpy()
            dus._reward = rl_reward(s, action)
            dist = torch.distributions.Normal(dus._net(prev_state), dus.policy_std)
            loss = -dus._reward * dist.log_prob(prev_logits).sum()
            dus._optim.zero_grad()
            loss.backward()
            dus._optim.step()
        else:
            dus._reward = math.nan
        gen = torch.Generator().manual_seed(mix_seed(dus.seed, epoch, _TAG_ACTION))
        with torch.no_grad():
            mean = dus._net(state)
            logits = mean + dus.policy_std * torch.randn(m, generator=gen, dtype=torch.float64)
        dus._last = {"state": state.tolist(), "logits": logits.tolist()}
        share = torch.softmax(logits, 0).numpy()
        return [max(1, round(dus.rows_total * float(a))) for a in share]

    def stats(self, dus: DUS) -> dict[str, float]:
        return {"reward": dus._reward}


POLICIES: dict[str, Heuristic | Reinforce] = {"heuristic": Heuristic(), "rl": Reinforce()}


class DUS(Method):
    """Per-modality batch sizes (DUS paper); `batch_sizes(epoch)` -> `{modality: rows}`.

    Args:
        ledger: the Ledger the training pass feeds (its `cumulative_discrepancy` is S); None:
            bound later (`bind`, done by `mmsample.Balancer` and `wrap`).
        batch_size: N_B, rows per batch of the non-dominant modalities (heuristic) or the
            total over modalities (RL). int >= 1; None: the DataLoader's (`set_run`), else 64.
        epochs: E, the epochs the schedule spans (heuristic: sizes meet at epoch E - 1); None:
            the run's (`set_run`), else 1. `set_run` warns (ShortRunWarning) when E exceeds
            the run or, heuristic, E <= 2 (no size would change).
        beta: the dominant modality's starting fraction, in (0, 1].
        policy: "heuristic" or "rl".
        seed: seeds the batch positions of each modality and the RL actions.
        lr: the RL policy's learning rate (Adam). policy_std: std of the Gaussian logits.

    Raises ValueError naming the parameter for a bad setting.
    """

    _SAVED = ("_sizes", "_s", "_policy_state", "_optim_state", "_last", "_reward")
    _COMPAT = ("batch_size", "epochs", "beta", "policy")

    def __init__(
        self,
        ledger: Ledger | None = None,
        batch_size: int | None = None,
        epochs: int | None = None,
        beta: float = 0.5,
        policy: str = "heuristic",
        seed: int = 0,
        *,
        lr: float = 1e-4,
        policy_std: float = 0.5,
    ) -> None:
        super().__init__(ledger, seed)
        if batch_size is not None:
            check_number("DUS", "batch_size", batch_size, low=1, integer=True)
        if epochs is not None:
            check_number("DUS", "epochs", epochs, low=1, integer=True)
        check_number("DUS", "beta", beta, low=0, high=1, low_open=True)
        check_choice("DUS", "policy", policy, POLICIES)
        check_number("DUS", "lr", lr, low=0, low_open=True)
        check_number("DUS", "policy_std", policy_std, low=0, low_open=True)
        self._sizer = POLICIES[policy]
        self.batch_size: int | None = batch_size
        self.epochs: int | None = epochs
        self.beta, self.policy = beta, policy
        self.lr, self.policy_std = lr, policy_std
        if ledger is not None:
            self.bind(ledger)

    def _bind(self) -> None:
        """The policy network and the first sizes, for the ledger's M modalities; settings left
        None take their defaults here (batch_size 64, epochs 1) unless `set_run` gave them."""
        self.batch_size = 64 if self.batch_size is None else self.batch_size
        self.epochs = 1 if self.epochs is None else self.epochs
        if self.rows_total < self._sizer.smallest_batch(self.num_modalities):
            raise ValueError(
                f"The 'batch_size' parameter of DUS must be >= the number of modalities "
                f"({self.num_modalities}) with policy={self.policy!r} (it is the total); got "
                f"{self.batch_size}."
            )
        self._net = torch.nn.Linear(self.num_modalities, self.num_modalities, dtype=torch.float64)
        torch.nn.init.zeros_(self._net.weight)
        torch.nn.init.zeros_(self._net.bias)
        self._optim = torch.optim.Adam(self._net.parameters(), lr=self.lr)
        self._sizes: list[int] = self._sizer.initial(self)
        self._s: list[float] = [0.0] * self.num_modalities
        self._last: dict[str, list[float]] | None = None  # previous RL action: state, logits
        self._reward = math.nan

    @property
    def rows_total(self) -> int:
        """N_B as an int (`batch_size`, filled by `set_run` or `bind`)."""
        return 64 if self.batch_size is None else self.batch_size

    @property
    def schedule_epochs(self) -> int:
        """E as an int (`epochs`, filled by `set_run` or `bind`)."""
        return 1 if self.epochs is None else self.epochs

    def _set_run(self, epochs: int | None, batch_size: int | None) -> None:
        if self.batch_size is None and batch_size is not None:
            self.batch_size = batch_size
        if epochs is None:
            return
        if self.epochs is None:
            self.epochs = epochs
        if self.policy != "heuristic":
            return
        if self.schedule_epochs > epochs:
            warnings.warn(
                f"DUS's schedule spans epochs={self.epochs} but the run has {epochs}: the "
                "dominant modality's rows never grow back to batch_size. Build DUS with "
                f"epochs={epochs} (or leave epochs out: it takes the run's).",
                ShortRunWarning,
                stacklevel=3,
            )
        elif self.schedule_epochs <= 2:
            warnings.warn(
                f"DUS(policy='heuristic') with a {self.epochs}-epoch schedule changes no batch "
                "size: epoch 0 has no observation yet and the sizes meet batch_size at the last "
                "epoch. Run 3 epochs or more, or use policy='rl'.",
                ShortRunWarning,
                stacklevel=3,
            )

    # policy and optimizer live in torch modules; their states are what is saved
    @property
    def _policy_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._net.state_dict().items()}

    @_policy_state.setter
    def _policy_state(self, value: dict[str, torch.Tensor]) -> None:
        self._net.load_state_dict(value)

    @property
    def _optim_state(self) -> dict[str, Any]:
        return self._optim.state_dict()

    @_optim_state.setter
    def _optim_state(self, value: dict[str, Any]) -> None:
        self._optim.load_state_dict(value)

    def _reset(self) -> None:
        self._sizes = self._sizer.initial(self)

    # ---- the schedule --------------------------------------------------------------------
    def batch_sizes(self, epoch: int) -> dict[str, int]:
        """`{modality name: rows carrying it per batch}` for `epoch` (fixed within it); a batch
        has `max` of them rows."""
        self.set_epoch(epoch)
        return dict(zip(self.names, self._sizes))

    def rows_per_batch(self, epoch: int) -> int:
        """Rows of each batch of `epoch`: the largest per-modality size."""
        return max(self.batch_sizes(epoch).values())

    def _take(self, epoch: int) -> None:
        s = self.ledger.cumulative_discrepancy.numpy().astype(np.float64)
        observed = self.ledger.step > 0
        self._s = s.tolist()
        self._sizes = self._sizer.take(self, epoch, s, observed)

    # ---- plan and stats ------------------------------------------------------------------
    def _plan(self, epoch: int) -> ArrayPlan:
        return self._every_id_once()  # the rows' modalities are chosen by batch position

    def _stats(self, epoch: int) -> dict[str, float]:
        rows = max(self._sizes)
        batches = -(-len(self._ids) // rows)
        out: dict[str, float] = {"rows_per_batch": float(rows), "batches": float(batches)}
        for name, n, s in zip(self.names, self._sizes, self._s):
            out[f"batch_size/{name}"] = float(n)
            out[f"items/{name}"] = float(n * batches)
            out[f"discrepancy/{name}"] = float(s)
        out.update(self._sizer.stats(self))
        return out
