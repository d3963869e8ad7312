"""Domain errors raised by services; the API maps each to one HTTP status."""

from __future__ import annotations


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
    """A dependency (database, vector store, model) cannot serve the request right now."""

    status_code = 503
