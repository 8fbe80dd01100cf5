"""Exports transformer and grouped-convolution networks in configurations no fixture has, with
both PyTorch exporters, for `crates/cli/tests/variants.rs`.

    python export_variants.py OUT_DIR

For every variant it writes OUT_DIR/<name>.onnx and OUT_DIR/<name>.json (and prints
`wrote PATH`; the dynamo exporter prints its progress too): the input shape, a
seeded input batch of 3 and ONNX Runtime's output on it (the reference the import is
compared with). Parameters that PyTorch initialises to zero or one (biases, norms, heads)
and timm's near-zero tokens (class, register, distillation tokens, position embedding) are
drawn at random so that every part of the network changes the output. Every export has
a dynamic batch axis, but Swin's under the dynamo exporter (a batch of 3, see
FIXED_BATCH_DYNAMO).
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.maxvit import MaxVit
from torchvision.models.swin_transformer import (PatchMergingV2, SwinTransformer,
                                                 SwinTransformerBlockV2)
from torchvision.models.vision_transformer import VisionTransformer


class HandAttention(nn.Module):
    """Batch-first self-attention with separate q, k, v linears, written by hand: either
    `F.scaled_dot_product_attention` or the explicit product with `d ** 0.5`."""

    def __init__(self, dim, heads, sdpa):
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, e = x.shape
        d = e // self.heads

        def split(y):
            return y.view(b, t, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = torch.softmax((q @ k.transpose(-2, -1)) / d ** 0.5, dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, t, e))


class HandBlock(nn.Module):
    def __init__(self, dim, heads, mlp, sdpa):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = HandAttention(dim, heads, sdpa)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class HandViT(nn.Module):
    """Patch convolution, pre-norm blocks, token mean, linear head."""

    def __init__(self, channels, patch, dim, heads, mlp, depth, sdpa, classes=6):
        super().__init__()
        self.patch = nn.Conv2d(channels, dim, patch, patch)
        self.blocks = nn.Sequential(*[HandBlock(dim, heads, mlp, sdpa) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


class Bottleneck(nn.Module):
    """A ResNeXt-style residual block: 1×1, a grouped 3×3, 1×1."""

    def __init__(self, channels, width, groups):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 1, 1, groups=groups, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(), nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return torch.relu(x + self.body(x))


def resnext(groups):
    blocks = [Bottleneck(48, w, g) for w, g in groups]
    return nn.Sequential(nn.Conv2d(3, 48, 3, 1, 1), nn.BatchNorm2d(48), nn.ReLU(), *blocks,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 9))


def separable():
    """Depthwise separable convolutions (groups = channels) and a grouped conv of 6 groups."""
    return nn.Sequential(
        nn.Conv2d(3, 24, 3, 2, 1), nn.BatchNorm2d(24), nn.ReLU6(),
        nn.Conv2d(24, 24, 3, 1, 1, groups=24), nn.BatchNorm2d(24), nn.ReLU6(),
        nn.Conv2d(24, 40, 1), nn.BatchNorm2d(40), nn.ReLU6(),
        nn.Conv2d(40, 40, 5, 2, 2, groups=40), nn.BatchNorm2d(40), nn.Hardswish(),
        nn.Conv2d(40, 36, 1), nn.Conv2d(36, 36, 3, 1, 1, groups=6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(36, 5))


def torchvision_vit(image, patch, layers, heads, dim, mlp, channels):
    model = VisionTransformer(image_size=image, patch_size=patch, num_layers=layers,
                              num_heads=heads, hidden_dim=dim, mlp_dim=mlp, num_classes=7)
    if channels != 3:
        model.conv_proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
    return model, [channels, image, image]


def timm_vit(distilled=False, **sizes):
    """timm's VisionTransformer (or DeiT's distilled class): one fused qkv linear."""
    import timm
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    assert timm.__version__ == "1.0.15", timm.__version__
    cls = VisionTransformerDistilled if distilled else TimmViT
    return cls(**sizes).eval(), [sizes.get("in_chans", 3), sizes["img_size"], sizes["img_size"]]


def torchvision_swin(v2, image, **sizes):
    """torchvision's SwinTransformer (V1, or V2 with its block and patch merging)."""
    if v2:
        sizes.update(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
    return SwinTransformer(stochastic_depth_prob=0.0, **sizes).eval(), [3, image, image]


def maxvit():
    """A small torchvision MaxVit whose layers have PyTorch's default initialisation:
    torchvision draws MaxViT's linear layers from N(0, 0.02), with which the output hardly
    depends on the input (its spread over a batch would be below the test's tolerance)."""
    model = MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2,
                   block_channels=[16, 32], block_layers=[1, 1], head_dim=8,
                   stochastic_depth_prob=0.0, num_classes=5)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.reset_parameters()
    return model.eval()


# name: (builder, input shape)
VARIANTS = {
    # torchvision's class: 3 heads of 16, 3 layers, patch 12 on 48²
    "tv_vit_h3_l3": lambda: torchvision_vit(48, 12, 3, 3, 48, 80, 3),
    # 6 heads of 6, an MLP of 72, 2 input channels
    "tv_vit_h6_d6": lambda: torchvision_vit(36, 6, 3, 6, 36, 72, 2),
    # one head (the dynamo exporter drops the [T, N·1, d] view)
    "tv_vit_h1": lambda: torchvision_vit(32, 8, 2, 1, 16, 48, 3),
    # hand-written attention, scaled_dot_product_attention, 6 heads of 8
    "hand_sdpa_h6": lambda: (HandViT(3, 4, 48, 6, 96, 2, True), [3, 32, 32]),
    # hand-written attention with `d ** 0.5` (TorchScript: a Pow of the head width), 5 heads
    "hand_pow_h5": lambda: (HandViT(3, 8, 40, 5, 70, 3, False), [3, 32, 32]),
    # grouped 3×3 convs of 4, 8 and 3 groups in residual blocks
    "resnext_g4_g8_g3": lambda: (resnext([(32, 4), (64, 8), (48, 3)]), [3, 32, 32]),
    # depthwise convs and a conv of 6 groups
    "separable": lambda: (separable(), [3, 32, 32]),
    # timm's ViT: 3 heads of 16, 3 blocks, patch 4 on one-channel 28², MLP ratio 1.5
    "timm_vit_h3": lambda: timm_vit(img_size=28, patch_size=4, in_chans=1, embed_dim=48, depth=3,
                                    num_heads=3, mlp_ratio=1.5, num_classes=10),
    # DeiT's distilled class: 2 heads of 12, LayerScale, qkv without bias
    "timm_deit_h2": lambda: timm_vit(True, img_size=24, patch_size=6, embed_dim=24, depth=2,
                                     num_heads=2, mlp_ratio=3, num_classes=5, init_values=0.3,
                                     qkv_bias=False),
    # timm's ViT with a class token, two register tokens and the mean over the patch tokens
    # (`x[:, 3:].mean(1)`, global_pool="avg", fc_norm)
    "timm_vit_reg_avg": lambda: timm_vit(img_size=24, patch_size=6, embed_dim=24, depth=2,
                                         num_heads=2, num_classes=5, reg_tokens=2,
                                         global_pool="avg", fc_norm=True),
    # Swin V1: a 10×10 map in 4×4 windows (padded to 12, shifted by 2), patch merging of an
    # odd 5×5 map (padded), 2 then 4 heads of 8
    "tv_swin_pad": lambda: torchvision_swin(False, 40, patch_size=[4, 4], embed_dim=16,
                                            depths=[2, 2], num_heads=[2, 4],
                                            window_size=[4, 4], num_classes=7),
    # Swin V1: non-square 3×5 windows on a 9×15 map (patch 2), 3 heads of 4, three stages
    "tv_swin_3x5": lambda: (SwinTransformer(patch_size=[2, 2], embed_dim=12, depths=[2, 2, 1],
                                            num_heads=[3, 3, 6], window_size=[3, 5],
                                            stochastic_depth_prob=0.0, num_classes=4).eval(),
                            [3, 18, 30]),
    # Swin V2: cosine attention, continuous position bias, post-norm, a 9×9 map in 4×4
    # windows (padded to 12)
    "tv_swin_v2": lambda: torchvision_swin(True, 36, patch_size=[4, 4], embed_dim=16,
                                           depths=[2, 2], num_heads=[2, 2],
                                           window_size=[4, 4], num_classes=5),
    # Swin V1 on a 4×12 map: a 4×4 window covers the rows, so torchvision drops the shift
    # on them only (shift (0, 2)), one stage of 2 heads
    "tv_swin_1axis": lambda: (SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2],
                                              num_heads=[2], window_size=[4, 4],
                                              stochastic_depth_prob=0.0, num_classes=3).eval(),
                              [3, 16, 48]),
    # MaxViT: MBConv blocks, block attention in 2×2 windows and grid attention over a 4×4
    # grid of them (2 heads of 8, the scale 1/√E), two stages, a tanh classifier
    "tv_maxvit": lambda: (maxvit(), [3, 32, 32]),
}

# The dynamo exporter writes Swin's flatten after the pooling (of a permuted map) as an
# `as_strided` copy whose indices depend on the batch size: exported with a fixed batch.
FIXED_BATCH_DYNAMO = {"tv_swin_pad", "tv_swin_3x5", "tv_swin_v2", "tv_swin_1axis"}


def randomise(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if name.split(".")[-1] == "logit_scale":
                # Swin V2's per-head logit scale (ln 10 at init): different per head.
                p.copy_(p + torch.randn_like(p) * 0.3)
            elif name.split(".")[-1] == "relative_position_bias_table":
                # Swin V1's bias table (N(0, 0.02) at init): make the bias count.
                p.copy_(torch.randn_like(p) * 0.5)
            elif name.split(".")[-1] in ("cls_token", "reg_token", "dist_token", "pos_embed"):
                # timm draws these from N(0, 1e-6) or N(0, 0.02): make each token count.
                p.copy_(torch.randn_like(p) * 0.5)
            elif p.dim() <= 1 or p.abs().max() == 0:
                p.copy_(p + torch.randn_like(p) * 0.05)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, build in VARIANTS.items():
        torch.manual_seed(0)
        model, shape = build()
        randomise(model)
        model.eval()
        x = torch.randn(2, *shape)
        for exporter in ("ts17", "dyn18"):
            path = os.path.join(out, f"{name}_{exporter}.onnx")
            if exporter == "ts17":
                torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
            elif name in FIXED_BATCH_DYNAMO:
                torch.onnx.export(model, (torch.randn(3, *shape),), path, dynamo=True,
                                  opset_version=18, input_names=["input"],
                                  output_names=["output"])
            else:
                torch.onnx.export(model, (x,), path, dynamo=True, opset_version=18,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
            sample = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            y = session.run(None, {session.get_inputs()[0].name: sample})[0]
            with open(path[:-5] + ".json", "w") as f:
                json.dump({"input": shape, "sample_input": sample.flatten().tolist(),
                           "onnxruntime": y.flatten().tolist(), "outputs": int(y.shape[1])}, f)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
