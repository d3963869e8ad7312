from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings
from app.taxonomy import Taxonomy
from tests.conftest import make_settings


def test_default_taxonomy_is_the_22_jobnet_categories(settings: Settings) -> None:
    taxonomy = Taxonomy.from_csv(settings.taxonomy_path)
    assert len(taxonomy.labels) == 22
    assert taxonomy.labels[0] == "Akademisk arbejde"
    assert "Bygge og anlæg" in taxonomy
    assert taxonomy.display_name("It og teleteknik") == "IT and telecommunications"


def test_taxonomy_is_swappable(tmp_path: Path) -> None:
    path = tmp_path / "isco.csv"
    path.write_text("label,display_name\nManagers,Managers (1)\nProfessionals,\n")
    settings = make_settings(tmp_path, taxonomy_path=path)
    taxonomy = Taxonomy.from_csv(settings.taxonomy_path)
    assert taxonomy.labels == ("Managers", "Professionals")
    assert taxonomy.display_name("Professionals") == "Professionals"


@pytest.mark.parametrize(
    "content",
    ["", "foo,bar\n1,2\n", "label\nA\nA\n", "label\nA\n\n,\n"],
    ids=["empty", "no-label", "dup", "blank"],
)
def test_bad_taxonomy_files_fail_clearly(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError):
        Taxonomy.from_csv(path)


def test_settings_fail_fast(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="taxonomy file not found"):
        make_settings(tmp_path, taxonomy_path=tmp_path / "missing.csv")
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        make_settings(tmp_path, profile="production")
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        make_settings(tmp_path, database_url="mysql://x")
    with pytest.raises(ValidationError):
        make_settings(tmp_path, head_variant="int4")


@pytest.mark.parametrize("profile", ["production", "dev"])
@pytest.mark.parametrize("token", ["", "   ", "short-token"])
def test_empty_or_short_tokens_refuse_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str, token: str
) -> None:
    monkeypatch.setenv("JOBCLASS_ADMIN_TOKEN", token)  # `JOBCLASS_ADMIN_TOKEN=` left admin routes open
    with pytest.raises(ValidationError, match="JOBCLASS_ADMIN_TOKEN is set but has"):
        Settings(_env_file=None, state_dir=tmp_path, profile=profile)
    with pytest.raises(ValidationError, match="JOBCLASS_API_TOKEN is set but has"):
        make_settings(tmp_path, api_token=token)
    assert make_settings(tmp_path, profile="production", admin_token="x" * 16).admin_token is not None


def test_settings_read_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLASS_HEAD_VARIANT", "int8_pruned")
    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(tmp_path))
    settings = Settings(_env_file=None)
    assert settings.head_variant == "int8_pruned"
    assert settings.db_url == f"sqlite:///{tmp_path / 'jobclass.db'}"
    assert settings.qdrant_location == str(tmp_path / "qdrant-edge")  # the embedded engine by default
