"""The model registry file and its sync into the database."""

from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
FIELDS = (
    "kind", "upstream", "upstream_model", "input_price_per_mtok", "output_price_per_mtok", "context_window", "tier",
    "supports_tools", "supports_json", "supports_vision", "streaming_usage", "fallbacks",
)  # fmt: skip
PROVIDER_FIELDS = ("kind", "base_url", "api_key_env", "api_version", "timeout_seconds")


def provider_entries(path: Path = REGISTRY_FILE) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text()).get("providers") or [])


def sync_providers(provider: Any, *, overwrite: bool = False) -> tuple[int, int]:
    """Create the file's missing providers; with overwrite, also reset existing ones (never their saved
    keys). Returns (created, updated)."""
    created = updated = 0
    for entry in provider_entries():
        values = {field: entry[field] for field in PROVIDER_FIELDS if field in entry}
        existing = provider.objects.filter(name=entry["name"]).first()
        if existing is None:
            provider.objects.create(name=entry["name"], **values)
            created += 1
        elif overwrite:
            for field, value in values.items():
                setattr(existing, field, value)
            existing.save()
            updated += 1
    return created, updated


def registry_entries(path: Path = REGISTRY_FILE) -> list[dict[str, Any]]:
    entries = yaml.safe_load(path.read_text())["models"]
    for entry in entries:
        for price in ("input_price_per_mtok", "output_price_per_mtok"):
            entry[price] = Decimal(str(entry.get(price, "0")))
        entry.setdefault("fallbacks", [])
    return entries


def sync_registry(model_config: Any, *, overwrite: bool = False) -> tuple[int, int]:
    """Create missing aliases; with overwrite, also reset existing ones to the file. Returns (created, updated)."""
    created = updated = 0
    known = {f.name for f in model_config._meta.get_fields()}
    for entry in registry_entries():
        if "kind" not in known and entry.get("kind", "chat") != "chat":
            continue  # an older schema (an early migration): later migrations add these entries
        values = {field: entry[field] for field in FIELDS if field in entry and field in known}
        existing = model_config.objects.filter(alias=entry["alias"]).first()
        if existing is None:
            model_config.objects.create(alias=entry["alias"], **values)
            created += 1
        elif overwrite:
            for field, value in values.items():
                setattr(existing, field, value)
            existing.save()
            updated += 1
    return created, updated
