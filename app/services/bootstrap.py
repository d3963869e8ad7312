"""Bring an installation to a serving state; each step runs only when its result is missing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from app.db import migrate
from app.errors import InvalidInput, RegistryError
from app.runtime import Runtime
from app.services.index import drop_abandoned_collections, reindex
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
    """Migrate, ingest the samples into an empty database, train a model if none was ever activated, build
    the index if there is none. A damaged active model (``ModelDamaged``: an unreadable file, a marker
    naming a missing version) or versions without an active one stop it with the fix: a new model is never
    trained over them."""
    settings = runtime.settings
    migrate(settings.db_url)
    say(f"database ready: {runtime.engine.url.render_as_string(hide_password=True)}")
    loaded = runtime.load_active_model()  # damaged: ModelDamaged here, before anything is written
    if loaded is None:
        _require_no_versions(runtime)
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
        if loaded is None:
            trained = train(runtime, session, show_progress=show_progress)
            fused = trained.metrics["validation"]["fused"]
            say(
                f"trained model {trained.version}: validation accuracy {fused['accuracy']:.3f}, "
                f"macro-F1 {fused['macro_f1']:.3f}"
            )
        else:
            say(f"active model {loaded.version}")
        drop_abandoned_collections(runtime)
        if not runtime.store.exists():
            done = reindex(runtime, session)
            say(f"indexed {done.count} vacancies into {done.collection} ({done.seconds:.1f}s)")
        else:
            runtime.check_index_compatible()
            say(f"index {runtime.store.active_collection()} holds {runtime.store.count()} vacancies")


def _require_no_versions(runtime: Runtime) -> None:
    """No version is active: train one only if the registry holds none (a fresh installation). Versions
    without an ``ACTIVE`` marker (a marker that was deleted, an activation that failed) are the user's call."""
    registry = runtime.registry
    readable, damaged = registry.scan()
    if readable:
        newest = readable[0]["version"]
        raise RegistryError(
            f"no model is active, but {registry.root} holds {len(readable)} version(s) (newest {newest}): "
            f"run `jobclass models activate {newest}` to serve one, or `jobclass train` for a new one"
        )
    if damaged:
        raise damaged[0]
