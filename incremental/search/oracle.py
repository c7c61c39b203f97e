"""The oracle: the search's choice against fully trained branches at every candidate, and its regret."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["oracle_report"]


def oracle_report(oracle: Mapping[int, float], chosen: int, tolerance: float,
                  energy: Mapping[int, float] | None = None) -> dict[str, Any]:
    """The search's regret against fully trained branches ``oracle[k]`` (task-aware test accuracy).

    The oracle's choice is ``max {k : oracle[k] >= oracle[0] - tolerance}``. ``chosen_within`` says whether the
    search's point is within tolerance of ``oracle[0]``; ``deeper_missed`` lists deeper points that were;
    ``accuracy_regret = oracle[oracle choice] - oracle[chosen]`` (negative: the search chose better than the rule).
    """
    ref = oracle[0]
    within = {k: a >= ref - tolerance - 1e-12 for k, a in oracle.items()}
    best = max(k for k, w in within.items() if w)
    rows = [{"share": k, "accuracy": oracle[k], "within_tolerance": within[k],
             **({"energy_pj": energy[k]} if energy and k in energy else {})} for k in sorted(oracle)]
    return {
        "curve": rows, "oracle_choice": best, "chosen": chosen,
        "chosen_within": bool(within.get(chosen, False)),
        "deeper_missed": [k for k in sorted(oracle) if k > chosen and within[k]],
        "accuracy_regret": oracle[best] - oracle.get(chosen, float("nan")),
        "energy_ratio": (energy[chosen] / energy[best]) if energy and chosen in energy and best in energy else None,
    }
