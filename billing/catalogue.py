"""The plan catalogue at launch: seeded by a migration (and again after a test flushes the database), then
edited by operators in the admin, where Stripe prices are linked."""

from decimal import Decimal
from typing import Any

PLANS: list[dict[str, Any]] = [
    {"slug": "free", "name": "Free", "monthly_price_usd": Decimal(0), "included_requests": 200, "hard_cap": True,
     "members_limit": 3, "storage_limit_mb": 100, "is_default": True, "position": 0},
    {"slug": "pro", "name": "Pro", "monthly_price_usd": Decimal(10), "included_requests": 1000, "hard_cap": False,
     "price_per_extra_request": Decimal("0.01"), "members_limit": 10, "storage_limit_mb": 2000, "position": 1},
    {"slug": "team", "name": "Team", "monthly_price_usd": Decimal(50), "included_requests": 10000,
     "hard_cap": False, "price_per_extra_request": Decimal("0.008"), "members_limit": 50,
     "storage_limit_mb": 20000, "api_rate_limit": "10000/minute", "position": 2,
     "endpoint_rate_limits": {
         "ask": {"org": "3000/minute", "key": "600/minute"}, "generate": {"org": "3000/minute", "key": "600/minute"},
         "chat_completions": {"org": "6000/minute", "key": "1500/minute"},
         "embeddings": {"org": "15000/minute", "key": "3000/minute"},
         "upload": {"org": "600/minute", "key": "150/minute"},
     }},
]  # fmt: skip


def sync_plans(plan_model: Any) -> None:
    """Create the catalogue's plans that are missing (never changes existing ones). Only the fields the model
    has: an early migration seeds through its historical model, which lacks the fields added later."""
    fields = {field.name for field in plan_model._meta.get_fields()}
    for plan in PLANS:
        plan_model.objects.get_or_create(slug=plan["slug"], defaults={k: v for k, v in plan.items() if k in fields})
