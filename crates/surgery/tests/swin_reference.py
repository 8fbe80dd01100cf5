"""torchvision's Swin Transformer pieces as the reference for fair-pruner's window ops.

    python swin_reference.py make DIR    # DIR/<case>.safetensors: IR-named weights, x, y
    python swin_reference.py check DIR   # DIR/<case>/model.py, model.onnx (opset 17) and
                                         # model_opset20.onnx against
                                         # DIR/<case>.runtime.safetensors; prints JSON

`make` builds each case from torchvision (random weights, seeded) and writes its weights
under the names the Rust test's IR graph gives them: the qkv projection split by rows into
q, k and v linears (V2: k's bias is zero, as torchvision zeroes it in forward), the gathered
relative position bias [heads, N, N] (V2: 16·sigmoid(cpb_mlp(table))), the logit scale
[heads]. The input x is an image [B, C, H, W]; the blocks read x.permute(0, 2, 3, 1).
"""
import json
import sys
import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torchvision.models.swin_transformer import (
    PatchMerging,
    PatchMergingV2,
    SwinTransformerBlock,
    SwinTransformerBlockV2,
)

DIM, HEADS, WINDOW, SHIFT = 16, 2, [4, 4], [2, 2]

# (case, kind, H, W): the Rust test builds the same list.
CASES = [
    ("v1_8", "v1", 8, 8),
    ("v1_10", "v1", 10, 10),
    ("v2_8", "v2", 8, 8),
    ("v2_10", "v2", 10, 10),
    ("merge_v1_8", "merge_v1", 8, 8),
    ("merge_v1_7", "merge_v1", 7, 7),
    ("merge_v2_8", "merge_v2", 8, 8),
    ("merge_v2_7", "merge_v2", 7, 7),
]


def randomise(module, seed):
    """Every parameter drawn from N(0, 0.3²); LayerNorm scales from N(1, 0.3²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
                if isinstance(m, torch.nn.LayerNorm) and name == "weight":
                    p.add_(1.0)


def block_weights(block, v2):
    attn = block.attn
    w = {}
    qkv_w, qkv_b = attn.qkv.weight.detach(), attn.qkv.bias.detach().clone()
    if v2:
        qkv_b[DIM:2 * DIM] = 0  # torchvision zeroes k's bias in forward
    for i, part in enumerate("qkv"):
        w[f"attn.{part}.weight"] = qkv_w[i * DIM:(i + 1) * DIM]
        w[f"attn.{part}.bias"] = qkv_b[i * DIM:(i + 1) * DIM]
    w["attn.attn.relative_position_bias"] = attn.get_relative_position_bias()[0].detach()
    if v2:
        w["attn.attn.logit_scale"] = attn.logit_scale.detach().flatten()
    w["attn.proj.weight"] = attn.proj.weight.detach()
    w["attn.proj.bias"] = attn.proj.bias.detach()
    for n in ("norm1", "norm2"):
        w[f"{n}.weight"] = getattr(block, n).weight.detach()
        w[f"{n}.bias"] = getattr(block, n).bias.detach()
    w["mlp.fc1.weight"] = block.mlp[0].weight.detach()
    w["mlp.fc1.bias"] = block.mlp[0].bias.detach()
    w["mlp.fc2.weight"] = block.mlp[3].weight.detach()
    w["mlp.fc2.bias"] = block.mlp[3].bias.detach()
    return w


def make(out):
    out.mkdir(parents=True, exist_ok=True)
    for seed, (case, kind, h, w_) in enumerate(CASES):
        torch.manual_seed(100 + seed)
        if kind in ("v1", "v2"):
            cls = SwinTransformerBlock if kind == "v1" else SwinTransformerBlockV2
            m = cls(DIM, HEADS, WINDOW, SHIFT, mlp_ratio=4.0, dropout=0.0,
                    attention_dropout=0.0, stochastic_depth_prob=0.0)
            randomise(m, seed)
            with torch.no_grad():
                if kind == "v1":
                    table = m.attn.relative_position_bias_table
                    table.copy_(torch.randn(table.shape))
                else:
                    # Head 0 above the clamp at ln 100, head 1 below.
                    m.attn.logit_scale.copy_(torch.tensor([5.0, 1.5]).view(-1, 1, 1))
            weights = block_weights(m, kind == "v2")
        else:
            cls = PatchMerging if kind == "merge_v1" else PatchMergingV2
            m = cls(DIM)
            randomise(m, seed)
            weights = {
                "norm.weight": m.norm.weight.detach(),
                "norm.bias": m.norm.bias.detach(),
                "reduction.weight": m.reduction.weight.detach(),
            }
        m.eval()
        x = torch.randn(2, DIM, h, w_)
        with torch.no_grad():
            y = m(x.permute(0, 2, 3, 1))
        y = y.flatten(1, 2)  # [B, H', W', C'] -> tokens [B, H'·W', C']
        tensors = {k: v.contiguous() for k, v in weights.items()}
        tensors["x"] = x.contiguous()
        tensors["y"] = y.contiguous()
        save_file(tensors, str(out / f"{case}.safetensors"))


def check(out):
    import onnxruntime as ort

    result = {}
    for case, _, _, _ in CASES:
        d = out / case
        spec = importlib.util.spec_from_file_location(f"model_{case}", d / "model.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        net = mod.load(str(d / "model.safetensors"))
        ref = load_file(str(out / f"{case}.runtime.safetensors"))
        x, y = ref["x"], ref["y"]
        with torch.no_grad():
            py = net(x)
        result[case] = {"pytorch": (py - y).abs().max().item()}
        for what, file in (("onnx", "model.onnx"), ("onnx_opset20", "model_opset20.onnx")):
            sess = ort.InferenceSession(str(d / file), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            onnx_y = torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
            result[case][what] = (onnx_y - y).abs().max().item()
    print(json.dumps(result))


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](Path(sys.argv[2]))
