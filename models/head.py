"""Multinomial logistic regression on embeddings, as a torch ``nn.Linear``.

``fit`` uses full-batch AdamW with weight decay, optional class weighting for unbalanced taxonomies, and
either a fixed number of epochs or early stopping on a validation split; ``validation_curve`` gives the
held-out loss after every epoch, from which ``models.training.cv_epochs`` picks the epoch count by k-fold
cross-validation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.compress import PRUNE_AMOUNT, FeatureStats, Variant, compress_linear, prune_linear, refit_pruned


@dataclass
class HeadConfig:
    dim: int
    n_classes: int
    lr: float = 0.05
    weight_decay: float = 1e-4
    max_epochs: int = 500
    patience: int = 25
    class_weighted: bool = True
    seed: int = 0


class LinearHead(nn.Module):
    """Logistic regression: ``softmax(x W^T + b)``."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.linear: nn.Module = nn.Linear(config.dim, config.n_classes)
        self.best_epoch = 0
        # Statistics of the training embeddings, for activation-aware pruning (see models.compress).
        self.stats: FeatureStats | None = None
        # The pruned layer, refit on the training embeddings when the head is fit (a submodule, so it is
        # saved with the head; None for heads saved before it existed: they are pruned on demand).
        self.pruned: nn.Linear | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        self.eval()
        logits = self.forward(torch.as_tensor(x, dtype=torch.float32))
        return torch.softmax(logits / temperature, dim=-1).numpy().astype(np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        *,
        prune: bool = True,
    ) -> LinearHead:
        """Train; with a validation split, keep the weights of the epoch with the lowest val loss.
        ``prune``: also compute the refit pruned layer (``False`` for throwaway heads, e.g. cross-fitting)."""
        cfg = self.config
        xt = torch.as_tensor(x, dtype=torch.float32)
        self.stats = FeatureStats(mean=xt.mean(dim=0), rms=xt.pow(2).mean(dim=0).sqrt())
        has_val = x_val is not None and y_val is not None and len(y_val) > 0
        xv = torch.as_tensor(x_val, dtype=torch.float32) if has_val else None
        yv = torch.as_tensor(y_val, dtype=torch.long) if has_val else None
        val_loss_fn = nn.CrossEntropyLoss()
        best = float("inf")
        best_state = {k: v.clone() for k, v in self.state_dict().items()}
        stale = 0
        for epoch in self._steps(xt, y):
            if xv is None or yv is None:
                self.best_epoch = epoch
                continue
            with torch.no_grad():
                current = float(val_loss_fn(self.forward(xv), yv))
            if current < best - 1e-5:
                best, stale, self.best_epoch = current, 0, epoch
                best_state = {k: v.clone() for k, v in self.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        if has_val:
            self.load_state_dict(best_state)
        self.eval()
        if prune:
            linear = self.linear
            assert isinstance(linear, nn.Linear)
            self.pruned = refit_pruned(linear, prune_linear(linear, PRUNE_AMOUNT, self.stats), xt)
        return self

    def validation_curve(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> np.ndarray:
        """Train for ``max_epochs`` epochs (no early stopping) and return the summed cross-entropy on
        (x_val, y_val) after each: element ``e`` is the loss after ``e + 1`` epochs. Summed over the folds of
        a cross-validation, its argmin is the epoch count to train for (see ``models.training.cv_epochs``)."""
        xv = torch.as_tensor(x_val, dtype=torch.float32)
        yv = torch.as_tensor(y_val, dtype=torch.long)
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        curve = np.zeros(self.config.max_epochs, dtype=np.float64)
        for epoch in self._steps(torch.as_tensor(x, dtype=torch.float32), y):
            with torch.no_grad():
                curve[epoch - 1] = float(loss_fn(self.forward(xv), yv))
        self.eval()
        return curve

    def _steps(self, xt: torch.Tensor, y: np.ndarray) -> Iterator[int]:
        """Full-batch AdamW from the seed's initial weights: one step per epoch, yielding the epoch number
        (1, 2, …, ``max_epochs``) with the module in eval mode; the caller may stop early."""
        cfg = self.config
        # Start from weights drawn from the config's seed, whatever ran before: the same data and config
        # give the same head (the global RNG is left as it was).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.linear.reset_parameters()  # type: ignore[operator]
        yt = torch.as_tensor(y, dtype=torch.long)
        weight = None
        if cfg.class_weighted:
            counts = np.bincount(y, minlength=cfg.n_classes).astype(np.float64)
            w = np.where(counts > 0, len(y) / (cfg.n_classes * np.maximum(counts, 1)), 0.0)
            weight = torch.as_tensor(w, dtype=torch.float32)
        loss_fn = nn.CrossEntropyLoss(weight=weight)
        opt = torch.optim.AdamW(self.linear.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        for epoch in range(1, cfg.max_epochs + 1):
            self.train()
            opt.zero_grad()
            loss = loss_fn(self.forward(xt), yt)
            loss.backward()
            opt.step()
            self.eval()
            yield epoch

    def compressed(self, variant: Variant) -> nn.Module:
        """The layer of a head variant (float32, int8, pruned, int8 + pruned)."""
        linear = self.linear
        assert isinstance(linear, nn.Linear)
        return compress_linear(linear, variant, self.stats, self.pruned)

    # ---- persistence ----------------------------------------------------------------------
    def save(self, directory: Path | str) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}  # with pruned.* once fit
        if self.stats is not None:
            tensors |= {"stats.mean": self.stats.mean.contiguous(), "stats.rms": self.stats.rms.contiguous()}
        save_file(tensors, str(directory / "head.safetensors"))
        meta = {"config": asdict(self.config), "best_epoch": self.best_epoch}
        (directory / "head.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path | str) -> LinearHead:
        directory = Path(directory)
        meta = json.loads((directory / "head.json").read_text())
        head = cls(HeadConfig(**meta["config"]))
        tensors = load_file(str(directory / "head.safetensors"))
        if "stats.mean" in tensors and "stats.rms" in tensors:  # heads saved before stats existed lack them
            head.stats = FeatureStats(mean=tensors.pop("stats.mean"), rms=tensors.pop("stats.rms"))
        if "pruned.weight" in tensors:  # heads saved before the refit lack it
            head.pruned = nn.Linear(head.config.dim, head.config.n_classes)
        head.load_state_dict(tensors)
        head.best_epoch = int(meta.get("best_epoch", 0))
        head.eval()
        return head
