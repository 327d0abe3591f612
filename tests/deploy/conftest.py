from pathlib import Path
from typing import Any

import pytest

from tests.deploy import kustomize

BASE_DIR = Path(__file__).resolve().parent.parent.parent
K8S = BASE_DIR / "deploy" / "k8s"
TARGETS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "production": K8S / "overlays" / "production"}


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomization rendered once per session: {"base": [...], "dev": [...], "production": [...]}."""
    return {name: kustomize.render(path) for name, path in TARGETS.items()}
