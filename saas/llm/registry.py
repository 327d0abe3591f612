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


def _upsert(model: Any, key: str, rows: list[tuple[str, dict[str, Any]]], *, overwrite: bool) -> tuple[int, int]:
    """Create the rows whose `key` value is missing; with overwrite, reset existing ones to `values`."""
    created = updated = 0
    for name, values in rows:
        existing = model.objects.filter(**{key: name}).first()
        if existing is None:
            model.objects.create(**{key: name}, **values)
            created += 1
        elif overwrite:
            for field, value in values.items():
                setattr(existing, field, value)
            existing.save()
            updated += 1
    return created, updated


def sync_providers(provider: Any, *, overwrite: bool = False) -> tuple[int, int]:
    """Create the file's missing providers; with overwrite, also reset existing ones (never their saved
    keys). Returns (created, updated)."""
    rows = [(e["name"], {f: e[f] for f in PROVIDER_FIELDS if f in e}) for e in provider_entries()]
    return _upsert(provider, "name", rows, overwrite=overwrite)


def registry_entries(path: Path = REGISTRY_FILE) -> list[dict[str, Any]]:
    entries = yaml.safe_load(path.read_text())["models"]
    for entry in entries:
        for price in ("input_price_per_mtok", "output_price_per_mtok"):
            entry[price] = Decimal(str(entry.get(price, "0")))
        entry.setdefault("fallbacks", [])
    return entries


def sync_registry(model_config: Any, *, overwrite: bool = False) -> tuple[int, int]:
    """Create missing aliases; with overwrite, also reset existing ones to the file. Returns (created, updated)."""
    known = {f.name for f in model_config._meta.get_fields()}
    rows = [
        (entry["alias"], {field: entry[field] for field in FIELDS if field in entry and field in known})
        for entry in registry_entries()
        # an older schema (an early migration) has no `kind`: later migrations add the other entries
        if "kind" in known or entry.get("kind", "chat") == "chat"
    ]
    return _upsert(model_config, "alias", rows, overwrite=overwrite)
