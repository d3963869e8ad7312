"""Typed dependencies for the routers: the runtime, a database session, the active model, auth."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from sqlalchemy.orm import Session

from app.metrics import Metrics
from app.runtime import LoadedModel, Runtime
from app.settings import Settings

_bearer = HTTPBearer(auto_error=False)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings_dep(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_model(runtime: RuntimeDep) -> LoadedModel:
    return runtime.model  # raises Unavailable (503) when no model is active


ModelDep = Annotated[LoadedModel, Depends(get_model)]


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[Metrics, Depends(get_metrics)]

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _check_token(expected: SecretStr | None, credentials: HTTPAuthorizationCredentials | None) -> None:
    if expected is None:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_admin(settings: SettingsDep, credentials: Credentials) -> None:
    _check_token(settings.admin_token, credentials)


def require_api_token(settings: SettingsDep, credentials: Credentials) -> None:
    """Feedback changes the index: it takes the API token, or the admin token, when one is set."""
    if settings.api_token is None:
        _check_token(settings.admin_token, credentials)
        return
    try:
        _check_token(settings.api_token, credentials)
    except HTTPException:
        if settings.admin_token is None:
            raise
        _check_token(settings.admin_token, credentials)


def may_read_submitted_texts(settings: SettingsDep, credentials: Credentials) -> bool:
    """Whether the request may read the texts users submitted (corrected vacancies): always without
    tokens (the dev default); with tokens set, only with the feedback (API) or admin token."""
    try:
        require_api_token(settings, credentials)
    except HTTPException:
        return False
    return True


SubmittedTextsDep = Annotated[bool, Depends(may_read_submitted_texts)]
AdminDep = Depends(require_admin)
ApiTokenDep = Depends(require_api_token)
