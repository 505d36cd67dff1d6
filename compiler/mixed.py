"""weight_bits="auto": Hessian-aware mixed precision, from calibration data to bits per layer.

1. Curvature trace of the rate loss per layer (compiler/sensitivity.py: Hutchinson on the
   Gauss-Newton Hessian by default, or on the full Hessian), on the calibration spikes and labels
   (or, without labels, the float network's own predictions).
2. The squared weight error ||Q_b(W_i) - W_i||^2 at every width b in 2..8, with the scales the
   quantizer will use (compiler/scales.py).
3. The exact allocation under the budget (compiler/allocate.py); without a budget, the best
   allocation that the target device holds (tried from the largest down with the mapper).
4. With labels: the curvature model is a second-order estimate, so the few best allocations it
   allows (CANDIDATES, and the widest uniform width that is allowed) are run on the labelled
   calibration data and the most accurate is kept (ties: the lower curvature cost).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .allocate import BITS, Allocation, allocate, budget_bits, costs_from, frontier
from .ir import Network
from .quantize import accuracy_report, quantize
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
    choice, selection = candidates[0], "curvature"
    scored = []
    if labels is not None and len(candidates) > 1:
        for candidate in candidates:
            layers, _ = quantize(network, weight_bits=dict(enumerate(candidate.bits)),
                                 calibration=calibration, decay=decay, scales=scales, clip=clip)
            acc = accuracy_report(network, layers, calibration, labels)["quant_accuracy"]
            scored.append({"bits": list(candidate.bits), "size_bits": candidate.size_bits,
                           "cost": candidate.cost, "calibration_accuracy": acc})
        best = max(range(len(candidates)), key=lambda k: (scored[k]["calibration_accuracy"], -k))
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


def _candidates(costs, sizes, allowed) -> list[Allocation]:
    """The CANDIDATES cheapest allowed allocations of the Pareto front (cheapest first), then
    the widest allowed uniform width if it is not among them."""
    out: list[Allocation] = []
    for candidate in reversed(frontier(costs, sizes)):  # largest, cheapest first
        if len(out) == CANDIDATES:
            break
        if allowed(candidate):
            out.append(candidate)
    for b in sorted(BITS, reverse=True):
        uniform = Allocation((b,) * len(sizes), b * sum(int(n) for n in sizes),
                             sum(c[b] for c in costs))
        if any(a.bits == uniform.bits for a in out):
            break
        if allowed(uniform):
            out.append(uniform)
            break
    return out


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
