"""Helpers of the bulk tests (tests/integration/test_bulk*.py), importable by a child process and by Ray
workers: a seeded state folder, a runtime on it with the fake encoder, and a ``classify-file`` run in its
own process for the crash test (the fake encoder slowed down by ``DELAY`` seconds a batch):

``python -m tests.bulk_child STATE IN OUT DELAY``
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from app.db import migrate
from app.runtime import Runtime
from app.services.bulk import BulkOptions, classify_file, file_format
from tests.conftest import make_settings
from tests.factories import seed
from tests.fakes import FakeEncoder, SlowEncoder


def make_state(state: Path) -> Path:
    """A state folder (SQLite file, index folder, models) with a trained model (fake encoder)."""
    settings = make_settings(state, qdrant_path=str(state / "index"))
    migrate(settings.db_url)
    rt = Runtime(settings, encoder=FakeEncoder())
    try:
        seed(rt, state.parent)
    finally:
        rt.close()
    return state


def open_state(state: Path, index: str | None = None, **kw: Any) -> Runtime:
    """A runtime on ``state`` (its index folder, or the copy at ``index``) with the fake encoder."""
    rt = Runtime(make_settings(state, qdrant_path=index or str(state / "index")), encoder=FakeEncoder(), **kw)
    rt.load_active_model()
    return rt


def main(state: Path, source: Path, out: Path, delay: float) -> None:
    encoder = SlowEncoder()
    encoder.delay = delay
    runtime = Runtime(make_settings(state, qdrant_path=str(state / "index")), encoder=encoder)
    try:
        runtime.load_active_model()
        options = BulkOptions(source, out, file_format(source), file_format(out), batch_size=5, part_rows=10)
        summary = classify_file(runtime, options)
    finally:
        runtime.close()
    print(f"done {summary.records} resumed_from={summary.resumed_from}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
