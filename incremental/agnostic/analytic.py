"""Analytic heads: exemplar-free ridge regression on a fixed random expansion of the trunk features.

The trunk features ``phi(x)`` (every base block pooled and mapped, :func:`multi_block_normalise`) are expanded
once by a fixed random matrix, ``h(x) = relu(phi(x) R)`` with ``R ~ N(0, 1)`` of size ``D x M`` drawn from a
fixed seed (RanPAC, McDonnell et al., NeurIPS 2023: a random nonlinear expansion makes class means linearly
separable where the raw features are not). The head ``W`` (``M x C``) is the ridge solution over every image
seen so far::

    W = (G + lambda I)^{-1} Q,     G = sum_i h_i h_i^T,     Q = sum_i h_i y_i^T     (y_i one-hot)

``G`` and ``Q`` are sums over images, so they grow task by task from each task's own images, new classes
adding columns to ``Q`` (ACIL, Zhuang et al., NeurIPS 2022; DS-AL, AAAI 2024): the head after task ``t`` is
exactly the head trained jointly on every task's images, and no image is kept — only ``G``, ``Q`` and ``N``.

The sums are kept in float64 (8 bytes a number, and so stored): ``G``'s spectrum spans ten orders of magnitude
(the expansion of a few hundred trunk features has many near-zero eigenvalues), and float32 rounding of ``G``
(relative 6e-8 of its largest entries) turns them into noise that misleads the choice of ``lambda``.

``lambda`` is chosen by generalised cross-validation (Golub, Heath & Wahba 1979) from the same sums, with no
image kept and none of the test set: with ``G = V diag(s) V^T``, ``P = V^T Q`` (rows ``p_i``) and ``N`` images,

    RSS(lambda) = N - sum_i ||p_i||^2 (s_i + 2 lambda) / (s_i + lambda)^2      (||Y||^2 = N for one-hot rows)
    df(lambda)  = sum_i s_i / (s_i + lambda)
    GCV(lambda) = N RSS(lambda) / (N - df(lambda))^2,

minimised over a log grid (:data:`LAMBDAS`). ``docs/engine.md`` has a worked example.

Cost (:meth:`AnalyticHead.arithmetic_macs`): per task ``N_t (D M + M^2 + M C_t)`` MACs for the expansion and the
sums, ``M^3`` for the eigendecomposition and ``M^2 C`` for the head. Stored: ``G`` (its ``M (M + 1) / 2``
distinct numbers), ``Q`` (``M C``) and ``N``; ``R`` is regenerated from its seed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from energymodel.errors import UserError

__all__ = ["AnalyticHead", "gcv_lambda", "LAMBDAS", "EXPANSION", "expansion"]

#: width ``M`` of the random expansion (README "Task-agnostic accuracy": chosen on validation images)
EXPANSION = 2048
#: the seed of the expansion matrix ``R`` (fixed: the head is a function of the data alone)
SEED = 20231
#: the ridge penalties GCV chooses from
LAMBDAS = tuple(10.0 ** (e / 2) for e in range(-8, 9))


def expansion(dims: int, width: int, seed: int = SEED) -> Tensor:
    """The fixed random matrix ``R`` (``dims x width``, float64, standard normal entries) from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dims, width, generator=g, dtype=torch.float64)


def gcv_lambda(gram: Tensor, cross: Tensor, n: int, lambdas: tuple[float, ...] = LAMBDAS) -> tuple[float, dict]:
    """The ridge penalty with the smallest generalised cross-validation score (module docstring), and the scores.

    ``gram`` = ``G`` (``M x M``), ``cross`` = ``Q`` (``M x C``), ``n`` the images summed. Ties go to the larger
    penalty (the smoother head).
    """
    s, v = torch.linalg.eigh(gram)
    s = s.clamp_min(0.0)
    p2 = (v.T @ cross).pow(2).sum(dim=1)
    scores = {}
    for lam in lambdas:
        rss = n - float((p2 * (s + 2 * lam) / (s + lam) ** 2).sum())
        df = float((s / (s + lam)).sum())
        scores[lam] = n * max(rss, 0.0) / max(n - df, 1e-12) ** 2
    best = min(scores, key=lambda lam: (scores[lam], -lam))
    return best, scores


def _mirrored(matrix: Tensor) -> Tensor:
    """The symmetric matrix of ``matrix``'s upper triangle (the diagonal included), exactly."""
    upper = torch.triu(matrix)
    return upper + torch.triu(matrix, diagonal=1).T


class AnalyticHead:
    """The running sums ``G``, ``Q``, ``N`` of one expansion, and the head they give (module docstring)."""

    def __init__(self, width: int = EXPANSION) -> None:
        self.width = int(width)
        self.gram: Tensor | None = None
        self.cross: Tensor | None = None
        self.n = 0
        self.head: Tensor | None = None
        self.lam: float | None = None
        self._r: Tensor | None = None

    def _expand(self, x: Tensor) -> Tensor:
        x = x.double()
        if self._r is None or self._r.shape[0] != x.shape[1]:
            self._r = expansion(x.shape[1], self.width)
        return torch.relu(x @ self._r)

    def add(self, features: Tensor, labels: Tensor, classes: int) -> None:
        """Add one task's images: ``features`` (N x D, the trunk space), global ``labels`` in ``[0, classes)``."""
        h = self._expand(features)
        y = torch.nn.functional.one_hot(labels.long(), classes).double()
        if self.gram is None:
            self.gram = torch.zeros(self.width, self.width, dtype=torch.float64)
            self.cross = torch.zeros(self.width, 0, dtype=torch.float64)
        assert self.cross is not None
        if classes > self.cross.shape[1]:
            self.cross = torch.cat([self.cross, self.cross.new_zeros(self.width, classes - self.cross.shape[1])], 1)
        # h.T @ h need not be exactly symmetric in floating point (the BLAS sums (i, j) and (j, i) in different
        # orders); kept as its upper triangle mirrored, the sums are what a checkpoint (that triangle) restores
        self.gram = _mirrored(self.gram + h.T @ h)
        self.cross += h.T @ y
        self.n += int(len(labels))
        self._solve()

    def _solve(self) -> None:
        assert self.gram is not None and self.cross is not None
        self.lam, _ = gcv_lambda(self.gram, self.cross, self.n)
        eye = torch.eye(self.width, dtype=torch.float64)
        self.head = torch.linalg.solve(self.gram + self.lam * eye, self.cross)

    def scores(self, features: Tensor) -> Tensor:
        """``N x C`` regression outputs (higher = more likely) over every class added so far."""
        if self.head is None:
            raise UserError("analytic head: no task has been added yet")
        return self._expand(features) @ self.head

    def words(self) -> int:
        """Numbers kept to go on learning: ``G``'s distinct entries, ``Q`` and ``N``."""
        if self.gram is None or self.cross is None:
            return 0
        return self.width * (self.width + 1) // 2 + self.cross.numel() + 1

    def state(self) -> dict[str, Any]:
        if self.gram is None or self.cross is None:
            return {"width": self.width}
        iu = torch.triu_indices(self.width, self.width)
        return {"width": self.width, "gram": self.gram[iu[0], iu[1]].clone(), "cross": self.cross.clone(), "n": self.n}

    def load(self, state: dict[str, Any]) -> None:
        self.width = int(state["width"])
        if "gram" not in state:
            return
        iu = torch.triu_indices(self.width, self.width)
        gram = torch.zeros(self.width, self.width, dtype=torch.float64)
        gram[iu[0], iu[1]] = state["gram"].double()
        self.gram = _mirrored(gram)
        self.cross = state["cross"].double()
        self.n = int(state["n"])
        self._solve()

    @staticmethod
    def fitting_macs(samples: int, dims: int, width: int, classes: int, total_classes: int) -> float:
        """MACs of adding one task: expansion ``N D M``, sums ``N (M^2 + M C_t)``, eigendecomposition ``M^3``,
        head ``M^2 C`` (``C`` = classes so far)."""
        return float(samples) * (dims * width + width * width + width * classes) + float(width) ** 3 \
            + float(width) ** 2 * total_classes
