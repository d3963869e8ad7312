"""Bring an installation to a serving state; each step runs only when its result is missing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from app.db import migrate
from app.errors import InvalidInput
from app.runtime import Runtime
from app.services.index import reindex
from app.services.training import train
from app.services.vacancies import count_labelled, ingest_csv
from app.settings import Settings

log = logging.getLogger(__name__)


def sample_sources(settings: Settings) -> list[tuple[Path, str]]:
    """The shipped labelled files and the source each is ingested as."""
    found = [(path, "sample") for path in settings.sample_paths]
    if settings.titles_path is not None:
        found.append((settings.titles_path, "title"))
    return found


def bootstrap(runtime: Runtime, say: Callable[[str], None] = log.info, *, show_progress: bool = False) -> None:
    settings = runtime.settings
    migrate(settings.db_url)
    say(f"database ready: {runtime.engine.url.render_as_string(hide_password=True)}")
    with runtime.sessions() as session:
        if count_labelled(session) == 0:
            for path, source in sample_sources(settings):
                result = ingest_csv(
                    session,
                    path,
                    runtime.taxonomy,
                    source=source,
                    clean_max_chars=settings.clean_max_chars,
                    extractor=runtime.extractor,
                    store_raw_text=settings.store_raw_text,
                )
                if result.rejected:
                    raise InvalidInput(f"sample data {path} has invalid rows: {result.rejected[:5]}")
                say(f"ingested {source}: {result.added} vacancies from {path}")
        else:
            say(f"{count_labelled(session)} labelled vacancies already in the database")
        if runtime.load_active_model() is None:
            trained = train(runtime, session, show_progress=show_progress)
            fused = trained.metrics["validation"]["fused"]
            say(
                f"trained model {trained.version}: validation accuracy {fused['accuracy']:.3f}, "
                f"macro-F1 {fused['macro_f1']:.3f}"
            )
        else:
            say(f"active model {runtime.model.version}")
        if not runtime.store.exists():
            done = reindex(runtime, session)
            say(f"indexed {done.count} vacancies into {done.collection} ({done.seconds:.1f}s)")
        else:
            runtime.check_index_compatible()
            say(f"index {runtime.store.active_collection()} holds {runtime.store.count()} vacancies")
