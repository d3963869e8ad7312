"""Request schemas (app.schemas): every string field of every request body refuses lone surrogates."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel, ValidationError

from app import schemas


def _request_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    stack: list[type[BaseModel]] = [schemas._In]
    while stack:
        sub: type[BaseModel]
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


def _string_fields(model: type[BaseModel]) -> list[tuple[str, object]]:
    """(field, a value with a lone surrogate in a string position) for every field that holds text."""
    out: list[tuple[str, object]] = []
    for name, info in model.model_fields.items():
        shown = repr(info.annotation)
        if "str" in shown and "Literal" not in shown:
            is_list = typing.get_origin(info.annotation) is list or "list[" in shown
            out.append((name, ["\ud800"] if is_list else "x\ud800"))
    return out


CASES = [(m, f, v) for m in _request_models() for f, v in _string_fields(m)]


def test_the_request_schemas_have_string_fields() -> None:
    fields = {(m.__name__, f) for m, f, _ in CASES}
    assert {("ClassifyRequest", "text"), ("SearchFilterIn", "source"), ("FeedbackCreate", "comment")} <= fields


@pytest.mark.parametrize(("model", "field", "value"), CASES, ids=[f"{m.__name__}.{f}" for m, f, _ in CASES])
def test_every_string_field_refuses_a_lone_surrogate(model: type[BaseModel], field: str, value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        model.model_validate({field: value})
    errors = [e for e in raised.value.errors() if e["loc"] and e["loc"][0] == field]
    assert errors and "surrogate" in errors[0]["msg"]
