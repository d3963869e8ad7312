"""A ``classify-file`` run in its own process, for the crash test (tests/integration/test_bulk.py): the
state folder seeded by the test, the fake encoder slowed down by ``DELAY`` seconds a batch.

``python -m tests.bulk_child STATE IN OUT DELAY``
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.runtime import Runtime
from app.services.bulk import BulkOptions, classify_file, file_format
from tests.conftest import make_settings
from tests.fakes import SlowEncoder


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
