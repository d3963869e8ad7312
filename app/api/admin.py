from __future__ import annotations

from fastapi import APIRouter

from app.deps import AdminDep, RuntimeDep, SessionDep
from app.schemas import ModelsResponse, ModelVersionPublic, ReindexPublic, TaxonomyLabel, TaxonomyPublic
from app.services.index import reindex

router = APIRouter(prefix="/v1", tags=["admin"])


@router.post("/admin/reindex", response_model=ReindexPublic, dependencies=[AdminDep])
def admin_reindex(runtime: RuntimeDep, session: SessionDep) -> ReindexPublic:
    done = reindex(runtime, session)
    return ReindexPublic(collection=done.collection, previous=done.previous, count=done.count, seconds=done.seconds)


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
                n_train=m.get("n_train"),
                params=m.get("params", {}),
                metrics=m.get("metrics", {}),
                variant_bytes=m.get("variant_bytes", {}),
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
