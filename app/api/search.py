from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.deps import RuntimeDep, SessionDep
from app.schemas import SearchHit, SearchRequest, SearchResponse
from app.services.search import search_text, similar_to
from indexing.store import Hit, SearchFilter

router = APIRouter(prefix="/v1", tags=["search"])


def _hits(hits: list[Hit]) -> SearchResponse:
    return SearchResponse(
        hits=[
            SearchHit(
                vacancy_id=h.vacancy_id,
                label=h.label,
                score=h.score,
                rank_score=h.rank_score,
                source=h.source,
                snippet=h.snippet,
                created_at=h.created_at,
            )
            for h in hits
        ]
    )


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, runtime: RuntimeDep) -> SearchResponse:
    f = body.filter
    flt = SearchFilter(labels=f.labels, source=f.source, since=f.since, until=f.until) if f else None
    return _hits(search_text(runtime, body.text, body.k, flt))


@router.get("/vacancies/{vacancy_id}/similar", response_model=SearchResponse)
def similar(
    vacancy_id: Annotated[str, Path(min_length=1, max_length=128)],
    runtime: RuntimeDep,
    session: SessionDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SearchResponse:
    return _hits(similar_to(runtime, session, vacancy_id, k))
