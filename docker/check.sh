#!/usr/bin/env bash
# Validate docker/compose.yaml (and the images' install steps against the README).
# With a working Docker Compose v2: `docker compose config -q` (no daemon needed); otherwise the
# schema checks of tests/unit/test_compose.py, which run in every test run anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
  # a placeholder token: the file requires one, `config` only interpolates it
  JOBCLASS_ADMIN_TOKEN="${JOBCLASS_ADMIN_TOKEN:-config-check-token-0123}" docker compose -f docker/compose.yaml config -q
  echo "docker/check.sh: docker compose config: ok"
else
  echo "docker/check.sh: Docker Compose v2 is not available; checking the YAML with tests/unit/test_compose.py"
fi
"${PYTHON:-.venv/bin/python}" -m pytest -q -p no:cacheprovider tests/unit/test_compose.py
