"""What the service serves with: the model versions in the registry and the taxonomy (read-only)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from app.deps import RuntimeDep
from app.errors import ModelDamaged
from app.schemas import ModelsResponse, ModelVersionPublic, TaxonomyLabel, TaxonomyPublic
from app.services.uncertainty import summary as uncertainty_summary

router = APIRouter(prefix="/v1", tags=["admin"])
log = logging.getLogger(__name__)


def _public(m: dict[str, Any], active: str | None) -> ModelVersionPublic | None:
    try:
        return ModelVersionPublic(
            version=m["version"],
            created_at=m["created_at"],
            embedder=m["embedder"],
            active=m["version"] == active,
            parent=m.get("parent"),
            data_hash=m.get("data_hash"),
            n_train=m.get("n_train"),
            params=m.get("params", {}),
            metrics=m.get("metrics", {}),
            variant_bytes=m.get("variant_bytes", {}),
            lexical=m.get("lexical"),
            operating_point=uncertainty_summary(m.get("uncertainty")),
        )
    except (KeyError, ValidationError) as exc:
        log.warning("model %s is left out of the listing: its metadata.json does not fit (%s)", m["version"], exc)
        return None


@router.get("/models", response_model=ModelsResponse)
def list_models(runtime: RuntimeDep) -> ModelsResponse:
    """The readable versions, newest first; a damaged one (or a ``.tmp-*`` folder a crash left) is left out
    and logged, so that the listing still shows what can be activated."""
    registry = runtime.registry
    try:
        active = registry.active_marker()
    except ModelDamaged as exc:
        log.warning("%s", exc)
        active = None
    readable, damaged = registry.scan()
    for problem in damaged:
        log.warning("%s", problem)
    models = [public for m in readable if (public := _public(m, active)) is not None]
    return ModelsResponse(active=active, variant=runtime.settings.head_variant, models=models)


@router.get("/taxonomy", response_model=TaxonomyPublic)
def taxonomy(runtime: RuntimeDep) -> TaxonomyPublic:
    t = runtime.taxonomy
    tree = t.hierarchy
    return TaxonomyPublic(
        digest=t.digest,
        labels=[
            TaxonomyLabel(label=x, display_name=t.display_name(x), parent=tree.parent[x], leaf=not tree.children[x])
            for x in t.labels
        ],
    )
