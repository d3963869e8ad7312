from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.deps import RuntimeDep, SessionDep, SubmittedTextsDep
from app.schemas import SearchHit, SearchRequest, SearchResponse
from app.services.search import search_text, similar_to, without_submitted_texts
from indexing.store import Hit, SearchFilter

router = APIRouter(prefix="/v1", tags=["search"])


def _hits(hits: list[Hit], submitted_texts: bool) -> SearchResponse:
    """The hits; without ``submitted_texts`` the snippets of user-submitted vacancies are empty."""
    if not submitted_texts:
        hits = without_submitted_texts(hits)
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
def search(body: SearchRequest, runtime: RuntimeDep, submitted_texts: SubmittedTextsDep) -> SearchResponse:
    f = body.filter
    flt = SearchFilter(labels=f.labels, source=f.source, since=f.since, until=f.until) if f else None
    return _hits(search_text(runtime, body.text, body.k, flt), submitted_texts)


@router.get("/vacancies/{vacancy_id}/similar", response_model=SearchResponse)
def similar(
    vacancy_id: Annotated[str, Path(min_length=1, max_length=128)],
    runtime: RuntimeDep,
    session: SessionDep,
    submitted_texts: SubmittedTextsDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SearchResponse:
    return _hits(similar_to(runtime, session, vacancy_id, k), submitted_texts)
