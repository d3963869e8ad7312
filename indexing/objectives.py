"""The encoder fine-tuning objectives (``indexing.finetune``), importable without torch (for the API schemas)."""

from __future__ import annotations

from typing import Literal

Objective = Literal["triplets", "supcon", "softmax"]
OBJECTIVES: tuple[Objective, ...] = ("triplets", "supcon", "softmax")
