"""Bits per layer under a weight-memory budget, solved exactly (as HAWQ-V3 does).

Layer i has n_i weights (feed-forward and recurrent). Giving it b_i bits costs, in the loss's
second-order estimate,

    cost_i(b) = Tr_i / n_i * ||Q_b(W_i) - W_i||^2        Tr_i: the Hessian trace of layer i

and takes b_i * n_i bits of weight memory. `allocate` minimises sum_i cost_i(b_i) subject to
sum_i b_i n_i <= budget, b_i in 2..8, by dynamic programming over the layers: the partial
allocations of the first i layers are kept on their Pareto front (no other partial allocation is
both smaller and cheaper), which loses nothing because the remaining layers add to size and cost
independently of how the first i were chosen. The result is the exact optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BITS = tuple(range(2, 9))


@dataclass(frozen=True)
class Allocation:
    bits: tuple[int, ...]  # per layer
    size_bits: int  # sum_i bits_i * n_i
    cost: float


def costs_from(traces, errors: list[dict[int, float]], sizes) -> list[dict[int, float]]:
    """cost_i(b) = max(Tr_i, 0) / n_i * error_i(b). A negative trace estimate (a non-convex
    point, or noise) counts as zero curvature; a tie-break worth 1e-9 of the largest cost keeps
    the lower error when curvature says nothing."""
    weights = [max(float(t), 0.0) / max(int(n), 1) for t, n in zip(traces, sizes, strict=True)]
    raw = [{b: w * e[b] for b in e} for w, e in zip(weights, errors, strict=True)]
    top = max((c for layer in raw for c in layer.values()), default=0.0)
    tie = 1e-9 * top if top > 0 else 1e-12
    return [{b: c + tie * e[b] for b, c in layer.items()} for layer, e in
            zip(raw, errors, strict=True)]


def frontier(costs: list[dict[int, float]], sizes) -> list[Allocation]:
    """Every Pareto-optimal allocation (smallest cost for its size), sorted by size."""
    sizes = [int(n) for n in sizes]
    states: list[Allocation] = [Allocation((), 0, 0.0)]
    for layer_costs, n in zip(costs, sizes, strict=True):
        best: dict[int, Allocation] = {}
        for state in states:
            for b, c in layer_costs.items():
                cand = Allocation(state.bits + (b,), state.size_bits + b * n, state.cost + c)
                old = best.get(cand.size_bits)
                if old is None or cand.cost < old.cost:
                    best[cand.size_bits] = cand
        states = []
        for size in sorted(best):
            if not states or best[size].cost < states[-1].cost:
                states.append(best[size])
    return states


def allocate(costs: list[dict[int, float]], sizes, budget_bits: int) -> Allocation:
    """The cheapest allocation whose size is at most `budget_bits` (see the module docstring).

    Raises ValueError naming the smallest possible size when nothing fits."""
    front = frontier(costs, sizes)
    fitting = [a for a in front if a.size_bits <= budget_bits]
    if not fitting:
        smallest = front[0]
        full = 8 * sum(int(n) for n in sizes)
        raise ValueError(f"budget must allow at least {smallest.size_bits} weight bits "
                         f"({100 * smallest.size_bits / full:.1f} % of the 8-bit size, "
                         f"{min(b for layer in costs for b in layer)} bits per weight), "
                         f"not {budget_bits} ({100 * budget_bits / full:.1f} %)")
    return min(fitting, key=lambda a: (a.cost, a.size_bits))


def budget_bits(budget, sizes) -> int:
    """A budget as weight-memory bits: a float is a fraction (0, 1] of the uniform 8-bit size,
    an int is bits."""
    full = 8 * sum(int(n) for n in sizes)
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise TypeError(f"budget must be a fraction of the 8-bit size (float) or a number of "
                        f"bits (int), not {budget!r}")
    if isinstance(budget, (float, np.floating)):
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be a fraction in (0, 1] of the 8-bit size, "
                             f"not {budget!r}")
        return int(np.floor(budget * full + 1e-9))
    if budget <= 0:
        raise ValueError(f"budget must be a positive number of bits, not {budget!r}")
    return int(budget)
