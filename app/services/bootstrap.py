"""Bring an installation to a serving state; each step runs only when its result is missing."""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.db import migrate
from app.errors import InvalidInput
from app.runtime import Runtime
from app.services.index import reindex
from app.services.training import train
from app.services.vacancies import count_labelled, ingest_csv

log = logging.getLogger(__name__)


def bootstrap(runtime: Runtime, say: Callable[[str], None] = log.info, *, show_progress: bool = False) -> None:
    settings = runtime.settings
    migrate(settings.db_url)
    say(f"database ready: {runtime.engine.url.render_as_string(hide_password=True)}")
    with runtime.sessions() as session:
        if count_labelled(session) == 0:
            result = ingest_csv(
                session,
                settings.sample_path,
                runtime.taxonomy,
                source="sample",
                clean_max_chars=settings.clean_max_chars,
                extractor=runtime.extractor,
                store_raw_text=settings.store_raw_text,
            )
            if result.rejected:
                raise InvalidInput(f"sample data has invalid rows: {result.rejected[:5]}")
            say(f"ingested sample: {result.added} vacancies from {settings.sample_path}")
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
