"""What the service serves with: the model versions in the registry and the taxonomy (read-only)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import RuntimeDep
from app.schemas import ModelsResponse, ModelVersionPublic, TaxonomyLabel, TaxonomyPublic

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/models", response_model=ModelsResponse)
def list_models(runtime: RuntimeDep) -> ModelsResponse:
    active = runtime.registry.active_version()
    return ModelsResponse(
        active=active,
        variant=runtime.settings.head_variant,
        models=[
            ModelVersionPublic(
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
            )
            for m in runtime.registry.versions()
        ],
    )


@router.get("/taxonomy", response_model=TaxonomyPublic)
def taxonomy(runtime: RuntimeDep) -> TaxonomyPublic:
    t = runtime.taxonomy
    return TaxonomyPublic(
        digest=t.digest, labels=[TaxonomyLabel(label=x, display_name=t.display_name(x)) for x in t.labels]
    )
