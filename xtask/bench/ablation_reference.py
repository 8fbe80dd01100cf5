"""Reference side of `cargo xtask bench ablation`: Torch-Pruning 1.6.1 baselines at MACs targets.

Usage:
  python ablation_reference.py KIND MODEL_DIR CALIBRATION OUT_DIR TARGET [TARGET ...]

KIND:
  l1      MagnitudePruner, L1 importance (GroupMagnitudeImportance(p=1)), the same ratio in
          every layer (global_pruning=False) -- the baseline of `bench compare`.
  taylor  GroupTaylorImportance, global_pruning=True. The gradients are those of the
          cross-entropy loss summed over the calibration samples (batches of 64, model in
          eval mode), accumulated once on the unpruned model and given to every trial.
  norm    Group L2 norm (GroupMagnitudeImportance(p=2), called GroupNormImportance before
          Torch-Pruning 1.6), global_pruning=True.

MODEL_DIR is fair-pruner's export of the unpruned model (model.py, model.safetensors);
CALIBRATION the calibration samples fair-pruner drew (safetensors: inputs, labels). For every
TARGET (fraction of MACs removed) the smallest pruning ratio whose MACs reduction, by
Torch-Pruning's own counter, reaches it is found by bisection; the output layer is never
pruned, and a global pruner removes at most MAX_LAYER_RATIO of any layer. Writes
OUT_DIR/tp-KIND-TARGET.json (a plan: {"remove": {layer: [unit, ...]}}, read back from the
pruned weights as in compare_reference.py) and OUT_DIR/tp-KIND.json (ratio, MACs and
parameters of Torch-Pruning's own pruned model per target).
"""
import copy
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_reference import base_input_shape, load_model, removed_units, signatures, write_json  # noqa: E402

# The most a global pruner may remove of one layer (a layer is never emptied).
MAX_LAYER_RATIO = 0.95

# Bisection steps over the pruning ratio (as compare_reference.py).
STEPS = 14


def importance(kind):
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.MagnitudeImportance(p=1), False
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance(), True
    if kind == "norm":
        return tp.importance.GroupMagnitudeImportance(p=2), True
    raise SystemExit(f"unknown importance {kind}: expected l1, taylor or norm")


def gradients(model, calibration):
    """Per parameter name, the gradient of the cross-entropy loss (mean over each batch of
    64, summed over the batches) over the calibration samples, in eval mode."""
    data = load_file(calibration)
    x, y = data["inputs"], data["labels"].long()
    model.eval()
    model.zero_grad()
    for i in range(0, len(y), 64):
        F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def run(kind, model_dir, calibration, out, targets):
    import torch_pruning as tp

    imp, global_pruning = importance(kind)
    base = load_model(model_dir)
    base.eval()
    example = torch.randn(1, *base_input_shape(model_dir))
    macs0, params0 = tp.utils.count_ops_and_params(base, example)
    original = signatures(base)
    grads = gradients(copy.deepcopy(base), calibration) if kind == "taylor" else None

    def pruned(ratio):
        model = copy.deepcopy(base)
        if grads is not None:
            for n, p in model.named_parameters():
                p.grad = grads[n].clone() if n in grads else None
        ignored = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1:]
        extra = {"max_pruning_ratio": MAX_LAYER_RATIO} if global_pruning else {}
        pruner = tp.pruner.MagnitudePruner(
            model, example, importance=imp, pruning_ratio=ratio, ignored_layers=ignored,
            global_pruning=global_pruning, **extra)
        pruner.step()
        model.zero_grad(set_to_none=True)
        macs, params = tp.utils.count_ops_and_params(model, example)
        return model, macs, params

    summary = {"kind": kind, "global_pruning": global_pruning, "macs": macs0, "params": params0,
               "targets": {}}
    for target in targets:
        lo, hi = 0.0, 0.95
        best = None
        for _ in range(STEPS):
            mid = (lo + hi) / 2
            model, macs, params = pruned(mid)
            if 1 - macs / macs0 >= target:
                best, hi = (mid, model, macs, params), mid
            else:
                lo = mid
        key = f"{target:.4f}"
        plan = os.path.join(out, f"tp-{kind}-{key}.json")
        if os.path.exists(plan):
            os.remove(plan)
        if best is None:
            summary["targets"][key] = {"error": f"cannot remove {target:.1%} of the MACs at ratio <= 0.95"}
            continue
        ratio, model, macs, params = best
        write_json(plan, {"remove": removed_units(original, model)})
        summary["targets"][key] = {"ratio": ratio, "macs": macs, "params": params,
                                   "macs_removed": 1 - macs / macs0}
    write_json(os.path.join(out, f"tp-{kind}.json"), summary)


def main():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if len(sys.argv) < 6:
        raise SystemExit(__doc__)
    run(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], [float(t) for t in sys.argv[5:]])


if __name__ == "__main__":
    main()
