"""Compressed variants of a linear head: int8 weights, 20% magnitude pruning, and both.

All variants map embeddings to logits like the float32 head, so the fusion code is the same.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FeatureStats:
    """Per-dimension statistics of the embeddings a head was trained on (mean and root-mean-square)."""

    mean: torch.Tensor
    rms: torch.Tensor


def prune_linear(linear: nn.Linear, amount: float = PRUNE_AMOUNT, stats: FeatureStats | None = None) -> nn.Linear:
    """A copy of ``linear`` with exactly ``amount`` of its weights set to zero.

    Without ``stats`` the smallest-magnitude weights go (plain L1 pruning). With the training
    embeddings' statistics, a weight's importance is ``|w_ij| · rms_j`` — the size of its typical
    contribution to the logit, as in activation-aware pruning (Wanda, Sun et al. 2023) — and the
    average contribution of the removed weights, ``Σ_j w_ij · mean_j``, is folded into the bias, so the
    logits stay centred where the float32 head put them.
    """
    pruned = copy.deepcopy(linear)
    weight = pruned.weight.detach()
    n_zero = round(amount * weight.numel())
    if n_zero == 0:
        return pruned
    if stats is None:
        prune.l1_unstructured(pruned, name="weight", amount=n_zero)
        prune.remove(pruned, "weight")
        return pruned
    importance = weight.abs() * stats.rms.to(weight.dtype)[None, :]
    cut = torch.zeros(weight.numel(), dtype=torch.bool)
    cut[torch.argsort(importance.flatten())[:n_zero]] = True
    cut = cut.view_as(weight)
    with torch.no_grad():
        removed = torch.where(cut, weight, torch.zeros_like(weight))
        if pruned.bias is not None:
            pruned.bias.add_(removed @ stats.mean.to(weight.dtype))
        pruned.weight.masked_fill_(cut, 0.0)
    return pruned


def refit_pruned(linear: nn.Linear, pruned: nn.Linear, x: torch.Tensor, ridge: float = 1e-3) -> nn.Linear:
    """``pruned`` with its surviving weights (and bias) refit by least squares so that its logits on the
    training embeddings ``x`` come as close as they can to ``linear``'s, the zero pattern fixed.

    For each output row ``i`` with kept inputs ``S`` this solves ``min ‖X̃_S w − X̃ w_i‖²`` over the
    augmented inputs ``X̃ = [X, 1]`` (the bias always kept): the optimal update of the surviving weights
    for a fixed mask (as in Optimal Brain Surgeon / SparseGPT, here exact because the layer is linear).
    ``ridge`` (relative to the mean diagonal) keeps the small systems well conditioned."""
    xt = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
    gram = xt.T @ xt / xt.shape[0]
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    gram = gram + ridge * float(gram.diagonal().mean()) * eye
    full = torch.cat([linear.weight.detach().double(), linear.bias.detach().double()[:, None]], dim=1)
    target = full @ gram  # row i: X̃ᵀX̃ w_i (ridge included, so an unpruned row is returned unchanged)
    out = copy.deepcopy(pruned)
    weight = torch.zeros_like(full)
    for i in range(full.shape[0]):
        keep = torch.cat([pruned.weight[i].detach() != 0, torch.tensor([True])])
        sub = gram[keep][:, keep]
        weight[i, keep] = torch.linalg.solve(sub, target[i, keep])
    with torch.no_grad():
        out.weight.copy_(weight[:, :-1].to(out.weight.dtype))
        out.bias.copy_(weight[:, -1].to(out.bias.dtype))
    return out


def compress_linear(
    linear: nn.Linear, variant: Variant, stats: FeatureStats | None = None, pruned: nn.Linear | None = None
) -> nn.Module:
    """The ``variant`` of ``linear``. ``pruned``: a pruned layer computed at training time (refit on the
    training embeddings, see :func:`refit_pruned`); without it, pruning happens here, without refit."""
    if variant == "fp32":
        return linear
    if variant == "int8":
        return Int8Linear.from_linear(linear)
    if variant == "pruned":
        return pruned if pruned is not None else prune_linear(linear, stats=stats)
    if variant == "int8_pruned":
        return Int8Linear.from_linear(pruned if pruned is not None else prune_linear(linear, stats=stats))
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
