"""Domain errors raised by services; the API maps each to one HTTP status (``app.api.errors``).

The vector store's errors are one ``indexing.store.StoreError`` (re-exported here): classification falls
back to the head alone on it, search answers 503. Anything else the store raises is a bug: a 500.

The model registry's errors are one ``models.registry.RegistryError`` (re-exported here, with
``ModelDamaged``, a version or the ``ACTIVE`` marker that cannot be read): the message names the file and
the fix; the API answers 503 with it, the CLI exits 2 with it."""

from __future__ import annotations

from indexing.store import StoreError
from models.registry import ModelDamaged, RegistryError

__all__ = [
    "Conflict",
    "DatabaseUnavailable",
    "IncompatibleModelError",
    "InvalidInput",
    "ModelDamaged",
    "NotFound",
    "RegistryError",
    "ServiceError",
    "StoreError",
    "Unavailable",
]

RETRY_AFTER_SECONDS = 5  # the hint sent with every 503: a dependency is expected back soon


class IncompatibleModelError(RuntimeError):
    """A model version or an index built for other embeddings (or labels) than the settings give: the fix is
    `jobclass reindex` / `jobclass train`, not a retry. (A ``RuntimeError`` for the CLI's error report.)"""


class ServiceError(Exception):
    status_code = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    status_code = 422


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Unavailable(ServiceError):
    """A dependency (database, vector store, model) cannot serve the request right now (503 with a
    ``Retry-After`` header)."""

    status_code = 503

    def __init__(self, message: str, *, field: str | None = None, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached: nothing was written, try again later."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the database is unavailable; nothing was written, retry later" + (f" ({detail})" if detail else "")
        )
