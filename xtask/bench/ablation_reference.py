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
  iso     Isomorphic pruning (Torch-Pruning's `isomorphic=True`, ECCV 2024): GroupTaylorImportance
          (gradients as for taylor), global ranking within each set of structurally identical
          groups.

Models with attention (the exported module calls torch.nn.functional.scaled_dot_product_attention
on Linear outputs q, k and v, unflattened to [N, heads, T, head_dim]): the q, k and v layers of
every attention are found by tracing one forward pass and given to Torch-Pruning with their
head count (`num_heads`, `prune_num_heads=True`, `prune_head_dims=False`,
`head_pruning_ratio` = the pruning ratio), so it removes whole heads; besides the heads only
the MLP hidden neurons (layers named `*.mlp.fc1`) are pruned: every other layer writes the
residual stream, which fair-pruner holds fixed, and is ignored. Their removed q/k/v channels
are written back as head indices (fair-pruner's units there), each head checked to be removed
whole, and the summary records per target the parameters and the matrix-product MACs
(Conv2d/Linear plus 2*T*T*E per attention, fair-pruner's MAC count) of Torch-Pruning's own
pruned model, which the bench checks against the model it builds from the plan.

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
    if kind == "iso":
        return tp.importance.GroupTaylorImportance(), True
    raise SystemExit(f"unknown importance {kind}: expected l1, taylor, norm or iso")


def trace_attention(model, example):
    """The attentions of `model`: a list of (q, k, v) module names with their head count and
    head dimension, found by one forward pass in which scaled_dot_product_attention's inputs
    are matched (by storage) to the Linear outputs they are views of; also the matrix-product
    MACs of that pass (fair-pruner's count: Conv2d and Linear weights times output positions,
    2*T*T*E per attention), for one sample."""
    outputs = {}
    macs = [0]

    def hook(name):
        def record(module, _inputs, out):
            outputs[out.untyped_storage().data_ptr()] = name
            if isinstance(module, nn.Linear):
                macs[0] += out.numel() // out.shape[0] * module.in_features
            else:
                per_output = module.weight[0].numel()
                macs[0] += out.numel() // out.shape[0] * per_output
        return record

    found = []
    original = F.scaled_dot_product_attention

    def attention(q, k, v, *args, **kwargs):
        names = [outputs.get(t.untyped_storage().data_ptr()) for t in (q, k, v)]
        if None in names:
            raise SystemExit("an attention whose q, k or v is not a Linear output: cannot prune its heads")
        heads, tokens, head_dim = q.shape[1], q.shape[2], q.shape[3]
        found.append((names, heads, head_dim))
        macs[0] += 2 * tokens * tokens * heads * head_dim
        return original(q, k, v, *args, **kwargs)

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    F.scaled_dot_product_attention = attention
    try:
        with torch.no_grad():
            model.eval()
            model(example)
    finally:
        F.scaled_dot_product_attention = original
        for h in handles:
            h.remove()
    return found, macs[0]


def heads_of(remove, attentions):
    """`remove` with the q, k and v layers' removed channels as removed heads (unit h is
    channels h*head_dim .. (h+1)*head_dim); a head removed in part is an error."""
    out = dict(remove)
    for names, _heads, head_dim in attentions:
        for name in names:
            channels = remove.get(name)
            if not channels:
                continue
            heads = sorted({c // head_dim for c in channels})
            whole = [c for h in heads for c in range(h * head_dim, (h + 1) * head_dim)]
            if whole != sorted(channels):
                raise SystemExit(f"{name}: Torch-Pruning removed part of a head ({channels})")
            out[name] = heads
    return out


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
    attentions, matmul0 = trace_attention(base, example)
    if attentions:
        # The targets are fractions of fair-pruner's MACs (matrix products, attention included),
        # which Torch-Pruning's counter (no attention product, norms and activations counted)
        # does not give.
        macs0 = matmul0
    grads = gradients(copy.deepcopy(base), calibration) if kind in ("taylor", "iso") else None

    def pruned(ratio):
        model = copy.deepcopy(base)
        if grads is not None:
            for n, p in model.named_parameters():
                p.grad = grads[n].clone() if n in grads else None
        ignored = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1:]
        extra = {"max_pruning_ratio": MAX_LAYER_RATIO} if global_pruning else {}
        if kind == "iso":
            extra["isomorphic"] = True
        if attentions:
            qkv = {n for names, _, _ in attentions for n in names}
            heads = {model.get_submodule(n): h for names, h, _ in attentions for n in names}
            ignored = [m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                       and n not in qkv and not n.endswith(".mlp.fc1")]
            extra.update(num_heads=heads, prune_num_heads=True, prune_head_dims=False,
                         head_pruning_ratio=ratio)
        pruner = tp.pruner.MagnitudePruner(
            model, example, importance=imp, pruning_ratio=ratio, ignored_layers=ignored,
            global_pruning=global_pruning, **extra)
        pruner.step()
        model.zero_grad(set_to_none=True)
        macs, params = tp.utils.count_ops_and_params(model, example)
        if attentions:
            macs = trace_attention(model, example)[1]
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
        remove = removed_units(original, model)
        record = {"ratio": ratio, "macs": macs, "params": params, "macs_removed": 1 - macs / macs0}
        if attentions:
            remove = heads_of(remove, attentions)
            record["matmul_macs"] = macs
        write_json(plan, {"remove": remove})
        summary["targets"][key] = record
    write_json(os.path.join(out, f"tp-{kind}.json"), summary)


def main():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if len(sys.argv) < 6:
        raise SystemExit(__doc__)
    run(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], [float(t) for t in sys.argv[5:]])


if __name__ == "__main__":
    main()
