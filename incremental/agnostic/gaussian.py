"""Per-class Gaussian statistics of features: power normalisation, Ledoit-Wolf shrinkage, Mahalanobis distance.

Formulas (``docs/engine.md`` "Task-agnostic prediction" has a worked example):

* feature map ``phi(x) = u / ||u||_2`` with ``u_i = sign(x_i) |x_i|^beta`` (Tukey's power transform, ``beta = 0.5``
  as in FeCAM, Goswami et al., NeurIPS 2023; it makes ReLU features closer to Gaussian), then L2 normalisation so
  that spaces of different width and scale become comparable;
* per class ``c`` with ``n_c`` samples: mean ``mu_c`` and covariance ``S_c = (1/n_c) sum (phi - mu_c)(phi - mu_c)^T``,
  shrunk towards a scaled identity: ``Sigma_c = (1 - a) S_c + a m I + eps I`` with ``m = tr(S_c)/D`` and ``a`` the
  Ledoit-Wolf (2004) coefficient estimated from the same samples (no tuning; ``a -> 1`` when ``n_c << D``, so a
  covariance is always defined, never NaN), ``eps = 1e-6 m + 1e-12``;
* squared Mahalanobis distance ``d_c(x)^2 = (phi(x) - mu_c)^T Sigma_c^{-1} (phi(x) - mu_c)``;
* several blocks at once (the trunk space): ``phi(x_1, ..., x_L) = [phi(x_1), ..., phi(x_L)] / sqrt(L)``, each
  block's pooled features mapped as above and the results concatenated, so every block weighs the same whatever
  its width and the whole vector has unit norm (:func:`multi_block_normalise`).

``covariance = "task"`` pools the within-class scatter of one task into a single ``Sigma`` (fewer bytes:
``D^2`` per task instead of per class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Gaussians", "fit_gaussians", "ledoit_wolf", "multi_block_normalise", "power_normalise", "Scale",
           "fit_scale"]

BETA = 0.5


def power_normalise(x: Tensor, beta: float = BETA) -> Tensor:
    """``phi(x)``: signed power transform, then rows scaled to unit L2 norm (zero rows stay zero)."""
    x = x.double()
    u = x.sign() * x.abs().pow(beta)
    return u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)


def multi_block_normalise(blocks: list[Tensor], beta: float = BETA) -> Tensor:
    """``[phi(x_1), ..., phi(x_L)] / sqrt(L)``: every block power-normalised, concatenated, unit norm overall."""
    if not blocks:
        raise ValueError("no block features to normalise")
    return torch.cat([power_normalise(b, beta) for b in blocks], dim=1) / len(blocks) ** 0.5


def ledoit_wolf(xc: Tensor) -> tuple[Tensor, float]:
    """Ledoit-Wolf shrunk covariance of centred samples ``xc`` (n x D) and the shrinkage ``a`` in [0, 1].

    ``S = xc^T xc / n``, ``m = tr(S)/D``; ``d^2 = ||S - m I||_F^2 / D``;
    ``b^2 = min(d^2, (1/(n^2 D)) sum_i ||x_i x_i^T - S||_F^2)``; ``a = b^2 / d^2`` (0 when ``d^2 = 0``).
    """
    n, d = xc.shape
    s = xc.T @ xc / n
    m = float(torch.trace(s)) / d
    d2 = float(((s - m * torch.eye(d, dtype=s.dtype)) ** 2).sum()) / d
    # sum_i ||x_i x_i^T - S||_F^2 = sum_i ||x_i||^4 - n ||S||_F^2
    b2 = (float((xc.pow(2).sum(dim=1) ** 2).sum()) - n * float((s**2).sum())) / (n * n * d)
    b2 = min(max(b2, 0.0), d2)
    a = b2 / d2 if d2 > 0 else 1.0
    return (1.0 - a) * s + a * m * torch.eye(d, dtype=s.dtype), a


@dataclass
class Gaussians:
    """Class means (C x D) and precision matrices (C x D x D, or 1 x D x D when pooled) in one feature space.

    ``normalised``: the features given are already mapped (``phi`` applied, e.g. by :func:`multi_block_normalise`);
    else :func:`power_normalise` maps them.
    """

    means: Tensor
    precisions: Tensor
    shrinkage: list[float]
    normalised: bool = False

    def distances(self, x: Tensor) -> Tensor:
        """Squared Mahalanobis distances (N x C) of features ``x`` (N x D) to every class."""
        z = x.double() if self.normalised else power_normalise(x)
        means = self.means.double()
        pooled = self.precisions[0].double() if self.precisions.shape[0] == 1 else None
        cols = []
        for c in range(means.shape[0]):  # one class at a time: memory N x D, never N x C x D or C x D x D in float64
            diff = z - means[c]
            prec = pooled if pooled is not None else self.precisions[c].double()
            cols.append(((diff @ prec) * diff).sum(dim=1))
        return torch.stack(cols, dim=1)

    def log_det(self) -> Tensor:
        """``log |Sigma_c|`` of every class (C), from its precision: ``-log |Sigma_c^{-1}|``."""
        logdet = -torch.linalg.slogdet(self.precisions.double())[1]
        return logdet.expand(self.means.shape[0]) if logdet.shape[0] == 1 else logdet

    def words(self) -> int:
        """Numbers stored (means + precisions)."""
        return int(self.means.numel() + self.precisions.numel())

    def state(self) -> dict[str, Tensor]:
        return {"means": self.means.float(), "precisions": self.precisions.float(),
                "shrinkage": torch.tensor(self.shrinkage, dtype=torch.float64),
                "normalised": torch.tensor(self.normalised)}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> Gaussians:
        return cls(state["means"], state["precisions"], [float(v) for v in state["shrinkage"]],
                   bool(state.get("normalised", False)))


def _precision(cov: Tensor) -> Tensor:
    d = cov.shape[0]
    m = float(torch.trace(cov)) / d
    cov = cov + (1e-6 * m + 1e-12) * torch.eye(d, dtype=cov.dtype)
    return torch.cholesky_inverse(torch.linalg.cholesky(cov))


def fit_gaussians(x: Tensor, labels: Tensor, num_classes: int, covariance: str = "class",
                  normalised: bool = False) -> Gaussians:
    """Fit one Gaussian per class ``0..num_classes-1`` to features ``x`` (N x D) with local ``labels`` (N).

    ``normalised``: ``x`` is already mapped by ``phi`` (see :class:`Gaussians`).
    """
    if covariance not in ("class", "task"):
        raise ValueError(f"covariance must be 'class' or 'task', got {covariance!r}")
    z = x.double() if normalised else power_normalise(x)
    means, precisions, shrink = [], [], []
    for c in range(num_classes):
        zc = z[labels == c]
        if len(zc) == 0:
            raise ValueError(f"class {c} has no sample to fit its statistics")
        mu = zc.mean(dim=0)
        means.append(mu)
        xc = zc - mu
        if covariance == "class":
            cov, a = ledoit_wolf(xc)
            precisions.append(_precision(cov))
            shrink.append(a)
    if covariance == "task":
        centred = torch.cat([z[labels == c] - means[c] for c in range(num_classes)])
        cov, a = ledoit_wolf(centred)
        precisions.append(_precision(cov))
        shrink.append(a)
    return Gaussians(torch.stack(means), torch.stack(precisions), shrink, normalised)


@dataclass
class Scale:
    """Robust location and spread of a score on a task's own data: ``z = (s - location) / spread``."""

    location: float
    spread: float

    def standardise(self, s: Tensor) -> Tensor:
        return (s - self.location) / self.spread


def fit_scale(values: Tensor) -> Scale:
    """Median and ``IQR / 1.349`` (the normal-consistent spread) of ``values``; spread floored at 1e-6."""
    v = values.double().flatten()
    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    spread = float(q[2] - q[0]) / 1.349
    if not spread > 1e-6:
        spread = max(float(v.std()) if len(v) > 1 else 0.0, 1e-6)
    return Scale(float(q[1]), spread)
