"""Compressed variants of a linear head: int8 weights, 20% magnitude pruning, and both.

All variants map embeddings to logits like the float32 head, so the fusion code is the same.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune

Variant = Literal["fp32", "int8", "pruned", "int8_pruned"]
VARIANTS: tuple[Variant, ...] = ("fp32", "int8", "pruned", "int8_pruned")
PRUNE_AMOUNT = 0.2


class Int8Linear(nn.Module):
    """Weight-only int8 linear layer: symmetric per-output-row scales, float32 activations.

    Stores a quarter of the float32 weight bytes; the matmul dequantises on the fly.
    """

    weight_q: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.register_buffer("weight_q", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q = torch.clamp(torch.round(weight / scale[:, None]), -127, 127).to(torch.int8)
        layer = cls(linear.in_features, linear.out_features)
        layer.weight_q.copy_(q)
        layer.scale.copy_(scale)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight_q.to(x.dtype).T) * self.scale + self.bias


def prune_linear(linear: nn.Linear, amount: float = PRUNE_AMOUNT) -> nn.Linear:
    """A copy of ``linear`` with the ``amount`` smallest-magnitude weights set to exactly zero."""
    pruned = copy.deepcopy(linear)
    prune.l1_unstructured(pruned, name="weight", amount=amount)
    prune.remove(pruned, "weight")
    return pruned


def compress_linear(linear: nn.Linear, variant: Variant) -> nn.Module:
    if variant == "fp32":
        return linear
    if variant == "int8":
        return Int8Linear.from_linear(linear)
    if variant == "pruned":
        return prune_linear(linear)
    if variant == "int8_pruned":
        return Int8Linear.from_linear(prune_linear(linear))
    raise ValueError(f"unknown head variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def empty_linear(variant: Variant, in_features: int, out_features: int) -> nn.Module:
    """An uninitialised module of the right type, for ``load_state_dict``."""
    if variant in ("int8", "int8_pruned"):
        return Int8Linear(in_features, out_features)
    return nn.Linear(in_features, out_features)


def state_bytes(module: nn.Module) -> int:
    """Bytes of the tensors a variant stores."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def zero_fraction(module: nn.Module) -> float:
    weight = module.state_dict().get("weight", module.state_dict().get("weight_q"))
    if weight is None:
        return 0.0
    return float((weight == 0).sum()) / weight.numel()
