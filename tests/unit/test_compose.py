"""docker/compose.yaml and docker/Dockerfile, checked without a Docker daemon (docker/check.sh adds
`docker compose config -q` where Compose is installed): the services, health checks, start order,
volumes, that every JOBCLASS_* variable is a real setting and the environment passes the settings'
own validation, and that the images install exactly as the README says."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from app.cli import cli
from app.settings import PROJECT_ROOT, Settings

DOCKER = PROJECT_ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
README = PROJECT_ROOT / "README.md"
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?(?P<op>[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, and `$$` for a literal `$`."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name} is required: {arg}")
        return arg if op == "-" else ""

    return _INTERPOLATION.sub(one, value).replace("$$", "$")


def setting_fields() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def test_services_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "qdrant", "postgres"} <= set(services)
    for name in ("api", "qdrant", "postgres"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: {check['test']}"
    depends = services["api"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["qdrant"]["condition"] == "service_healthy"
    # the one-shot setup runs first and must succeed
    assert depends["setup"]["condition"] == "service_completed_successfully"
    assert services["setup"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["qdrant"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    assert {"pgdata", "qdrant", "state"} <= declared
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if not source.startswith((".", "/", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"
    mounts = {s: compose["services"][s]["volumes"][0] for s in ("postgres", "qdrant", "api")}
    assert mounts["postgres"].endswith(":/var/lib/postgresql/data")
    assert mounts["qdrant"].endswith(":/qdrant/storage")


def test_every_jobclass_variable_is_a_setting() -> None:
    fields = setting_fields()
    text = COMPOSE.read_text()
    names = set(re.findall(r"\b(JOBCLASS_[A-Z0-9_]+)\s*:", text)) | {
        m["name"] for m in _INTERPOLATION.finditer(text) if m["name"].startswith("JOBCLASS_")
    }
    assert names, "no JOBCLASS_ variables found"
    unknown = {n for n in names if n.removeprefix("JOBCLASS_") not in fields}
    assert not unknown, f"not Settings fields: {sorted(unknown)}"


def test_the_api_environment_passes_the_settings_validation(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api_env = compose["services"]["api"]["environment"]
    with pytest.raises(KeyError, match="JOBCLASS_ADMIN_TOKEN"):  # production needs a token: compose says so
        {k: interpolate(str(v), {}) for k, v in api_env.items()}
    resolved = {k: interpolate(str(v), {"JOBCLASS_ADMIN_TOKEN": "t0ken-of-24-characters!"}) for k, v in api_env.items()}
    for key in [k for k in os.environ if k.startswith("JOBCLASS_")]:
        monkeypatch.delenv(key)
    for key, value in resolved.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.profile == "production"
    assert settings.db_url.startswith("postgresql+psycopg://jobclass:jobclass@postgres:5432/")
    assert settings.qdrant_url == "http://qdrant:6333"
    assert settings.state_dir == Path("/var/lib/jobclass")
    # the same environment for every jobclass container
    for name in ("setup", "cli"):
        assert compose["services"][name]["environment"] == api_env


def test_build_targets_and_commands_exist(compose: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.MULTILINE | re.IGNORECASE))
    assert {"base", "api", "cli"} <= stages
    for name in ("api", "setup"):
        build = compose["services"][name]["build"]
        assert build["target"] in stages
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == PROJECT_ROOT and (context / build["dockerfile"]).resolve() == DOCKERFILE
    group = typer.main.get_command(cli)
    commands = set(group.commands)  # type: ignore[attr-defined]
    assert compose["services"]["setup"]["command"][0] in commands
    assert re.search(r'CMD \["jobclass", "serve"', dockerfile)


def test_images_install_with_the_readme_commands() -> None:
    """The Dockerfile's pip steps are the README's, in the same order: torch (CPU) first, then the
    project under the constraints file."""
    runs = [m.strip() for m in re.findall(r"^RUN\s+(pip install [^\n\\]+)$", DOCKERFILE.read_text(), re.MULTILINE)]
    assert runs == ["pip install torch==2.13.0", "pip install -c constraints.txt -e ."]
    readme = README.read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.DOTALL)
    steps = next((b for b in blocks if all(r in b for r in runs)), None)
    assert steps is not None, f"the README has no code block with {runs}"
    assert steps.index(runs[0]) < steps.index(runs[1])
    assert "torch==2.13.0" in (PROJECT_ROOT / "constraints.txt").read_text()
    dockerignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in dockerignore and "var" in dockerignore
