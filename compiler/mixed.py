"""weight_bits="auto": Hessian-aware mixed precision, from calibration data to bits per layer.

1. Curvature trace of the rate loss per layer (compiler/sensitivity.py: Hutchinson on the
   Gauss-Newton Hessian by default, or on the full Hessian), on the calibration spikes and labels
   (or, without labels, the float network's own predictions).
2. The squared weight error ||Q_b(W_i) - W_i||^2 at every width b in 2..8, with the scales the
   quantizer will use (compiler/scales.py).
3. The exact allocation under the budget (compiler/allocate.py); without a budget, the best
   allocation that the target device holds (tried from the largest down with the mapper).
4. With labels: the curvature model is a second-order estimate, so the few best allocations it
   allows (CANDIDATES) and the widest uniform width that is allowed are run through the golden
   model on the labelled calibration data. The uniform width is the default; a mixed allocation
   replaces it only when it is better on the same samples by more than chance: a paired sign
   test, (wins - losses) > Z * sqrt(wins + losses) over the samples the two classify
   differently (Z = SIGNIFICANCE_Z, one-sided 5 %). Among those that pass, the most accurate is
   kept (ties: the lower curvature cost).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..sim import golden
from .allocate import BITS, Allocation, allocate, budget_bits, costs_from, frontier
from .ir import Network
from .quantize import accuracy_report, plain_image, predictions, quantize
from .scales import quantization_error
from .sensitivity import check_labels, layer_traces


def layer_weights(network: Network) -> list[np.ndarray]:
    """Per layer the weights that share its memory: [n_out, fan_in] (recurrent columns last)."""
    return [layer.weight if layer.rec_weight is None else
            np.concatenate([layer.weight, layer.rec_weight], axis=1) for layer in network.layers]


def plan_weight_bits(network: Network, weight_bits, calibration: np.ndarray | None,
                     labels, budget, *, scales: str = "neuron", clip: str = "mse",
                     fits: Callable[[dict], bool] | None = None, samples: int = 32,
                     seed: int = 0, curvature: str = "ggn",
                     decay: str = "auto") -> tuple[object, dict | None]:
    """Resolve `weight_bits` ("auto", or what the quantizer takes) into what the quantizer takes,
    and the mixed-precision plan for the report (None unless "auto").

    `fits(bits_by_index)` says whether the network at those widths fits the target device; it
    picks the allocation when `budget` is None.
    """
    if labels is not None:
        if calibration is None:
            raise ValueError("labels must come with calibration spikes, not alone")
        labels = check_labels(labels, calibration.shape[0], network.n_outputs)
    if not (isinstance(weight_bits, str) and weight_bits == "auto"):
        if isinstance(weight_bits, str):
            raise ValueError(f"weight_bits must be 2..16, a dict per layer or 'auto', "
                             f"not {weight_bits!r}")
        if budget is not None:
            raise ValueError(f"budget is for weight_bits='auto', not {weight_bits!r}")
        return weight_bits, None
    if calibration is None:
        raise ValueError("weight_bits='auto' must have calibration spikes (and labels) to "
                         "measure each layer's sensitivity, not calibration=None")
    weights = layer_weights(network)
    sizes = [w.size for w in weights]
    full = 8 * sum(sizes)
    budget_limit = None if budget is None else budget_bits(budget, sizes)
    if budget_limit is not None and budget_limit < min(BITS) * sum(sizes):
        allocate([dict.fromkeys(BITS, 0.0) for _ in sizes], sizes, budget_limit)  # raises
    traces, stderr = layer_traces(network, calibration, labels, samples=samples, seed=seed,
                                  curvature=curvature)
    errors = [{b: quantization_error(w, b, scales=scales, clip=clip) for b in BITS}
              for w in weights]
    costs = costs_from(traces, errors, sizes)
    if budget_limit is not None:
        allocate(costs, sizes, budget_limit)  # raises, naming the smallest, when nothing fits

        def allowed(a: Allocation) -> bool:
            return a.size_bits <= budget_limit
    else:
        def allowed(a: Allocation) -> bool:
            return fits is None or fits(dict(enumerate(a.bits)))
    candidates = _candidates(costs, sizes, allowed)
    if not candidates:
        raise ValueError("the network does not fit the device even at 2 weight bits "
                         "per layer; compile with weight_bits=2 to see what is short")
    choice, selection = min(candidates, key=lambda a: (a.cost, a.size_bits)), "curvature"
    scored = []
    if labels is not None and len(candidates) > 1:
        correct = []
        for candidate in candidates:
            layers, _ = quantize(network, weight_bits=dict(enumerate(candidate.bits)),
                                 calibration=calibration, decay=decay, scales=scales, clip=clip)
            correct.append(_correct(network, layers, calibration, labels))
            scored.append({"bits": list(candidate.bits), "size_bits": candidate.size_bits,
                           "cost": candidate.cost,
                           "calibration_accuracy": float(correct[-1].mean())})
        best = select(correct)
        for k, row in enumerate(scored):
            row["selected"] = k == best
        choice, selection = candidates[best], "calibration accuracy"
    plan = {
        "budget_bits": budget_limit, "budget_fraction":
            None if budget_limit is None else budget_limit / full,
        "budget_source": "given" if budget_limit is not None else "device",
        "size_bits": choice.size_bits, "size_fraction": choice.size_bits / full,
        "full_8bit_bits": full, "cost": choice.cost, "trace_samples": samples,
        "curvature": curvature, "selected_by": selection, "candidates": scored,
        "layers": [{"name": layer.name, "trace": float(t), "trace_stderr": float(e),
                    "bits": b, "weights": n, "size_bits": b * n,
                    "sq_error": float(err[b])}
                   for layer, t, e, b, n, err in zip(network.layers, traces, stderr,
                                                      choice.bits, sizes, errors, strict=True)],
    }
    return dict(enumerate(choice.bits)), plan


CANDIDATES = 3  # best allocations by curvature cost compared on labelled calibration data
SIGNIFICANCE_Z = 1.645  # one-sided 5 % sign test: a mixed allocation must beat uniform by this


def _correct(network: Network, layers, calibration: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per calibration sample, whether the golden model classifies it right (bool [samples])."""
    result = golden.run(plain_image(layers, network.n_inputs), calibration)
    return predictions(result.spikes, result.values) == labels


def select(correct: list[np.ndarray]) -> int:
    """The candidate kept, from per-sample correctness on the labelled calibration data (bool
    [samples] per candidate, cheapest curvature cost first, the uniform width last, as
    `_candidates` orders them).

    The last candidate (the uniform width) is the default. Another replaces it only when it
    beats it on the same samples by more than chance: with `wins` the samples only it gets right
    and `losses` those only the default gets right, wins - losses > SIGNIFICANCE_Z *
    sqrt(wins + losses) (a paired sign test, one-sided 5 %). Of those, the most accurate is
    kept; ties go to the lower curvature cost (the earlier one)."""
    base = correct[-1]
    passed = []
    for k, c in enumerate(correct[:-1]):
        wins = int(np.sum(c & ~base))
        losses = int(np.sum(~c & base))
        if wins - losses > SIGNIFICANCE_Z * np.sqrt(wins + losses):
            passed.append(k)
    if not passed:
        return len(correct) - 1
    return max(passed, key=lambda k: (int(correct[k].sum()), -k))


def _candidates(costs, sizes, allowed) -> list[Allocation]:
    """The CANDIDATES cheapest allowed allocations of the Pareto front (cheapest first) that are
    not uniform, then the widest allowed uniform width (last, the default of `select`)."""
    uniform = None
    for b in sorted(BITS, reverse=True):
        candidate = Allocation((b,) * len(sizes), b * sum(int(n) for n in sizes),
                               sum(c[b] for c in costs))
        if allowed(candidate):
            uniform = candidate
            break
    out: list[Allocation] = []
    for candidate in reversed(frontier(costs, sizes)):  # largest, cheapest first
        if len(out) == CANDIDATES:
            break
        if allowed(candidate) and (uniform is None or candidate.bits != uniform.bits):
            out.append(candidate)
    return out if uniform is None else [*out, uniform]


def precision_report(plan: dict | None, network: Network, layers, quant_report,
                     calibration: np.ndarray | None, labels) -> dict:
    """The image meta entry "mixed_precision": per layer trace, bits, scale, clip and size; with
    labels, float against golden accuracy on the calibration data. {} when there is nothing to
    say (no plan and no labels)."""

    if plan is None and labels is None:
        return {}
    out = dict(plan) if plan is not None else {"layers": [
        {"name": layer.name, "bits": layer.weight_bits, "weights": layer.weights.size +
         (0 if layer.rec_weights is None else layer.rec_weights.size),
         "trace": None} for layer in layers]}
    rows = []
    for row, params, q in zip(out["layers"], layers, quant_report.layers, strict=True):
        row = dict(row)
        row.update({"scale": params.scale, "clip": q.clip,
                    "size_bits": params.weight_bits * row["weights"]})
        rows.append(row)
    out["layers"] = rows
    if labels is not None:
        acc = accuracy_report(network, layers, calibration, np.asarray(labels).reshape(-1))
        out["accuracy"] = {"on": "calibration", **acc}
    return {"mixed_precision": out}
