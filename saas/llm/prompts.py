"""Prompts as versioned data: which system prompt a call uses, and the writes that change it.

Reads (every ask, chat turn and crew agent call):
    prompt_resolve(*, org, key, subject="", label="production") -> ResolvedPrompt
        1. a running experiment of the org on `key` (label production, with a subject): the subject's variant;
        2. the org's own prompt for `key`, at its label;
        3. the operator's default for `key`, at its label;
        4. for a key without a prompt of its own (crew.agent.writer), the same for its parent key (crew.agent).
    The rows come from a process-local copy (saas/core/memo.py), so a resolve costs a Redis GET, not queries.

Writes (each in one transaction, each an audit event when an org is concerned):
    prompt_version_create(*, org, key, text, ...) -> PromptVersion     (org None: the operator's default)
    prompt_label_set(*, org, version, label="production", ...) -> Prompt
    Experiments start and end in saas/llm/prompt_experiments.py (experiment_start, experiment_end: the winner is
    promoted through the gate); which variant a member or key gets is decided here, by prompt_resolve (assign).

The gate: `register_promotion_check(check)` (the one registry here, used by analytics' regression gate).
Before a version becomes `production`, each check is called with the org, the version and the acting principal,
and may raise PromotionRefused (an ApplicationError, a 409) with the failing cases in `details`; the refusal is
an audit event, and nothing changes.

Assignment is a hash of (experiment id, subject) into [0, 1) against the cumulative weights: the same member
or key always lands on the same variant, with no table to write on the hot path; weights cannot change once an
experiment runs (a new experiment is started instead), so assignments never move.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from saas.core import on_loop
from saas.core.errors import ApplicationError, Conflict, NotFound
from saas.core.memo import Memo, register
from saas.llm.prompt_defaults import BUILTINS, builtin_for
from saas.llm.prompt_models import Experiment, ExperimentVariant, Prompt, PromptVersion

logger = logging.getLogger(__name__)

LABELS = (Prompt.Label.PRODUCTION, Prompt.Label.STAGING)
KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_-]+)+$")
MAX_TEXT_CHARS = 20_000
PARAMETERS = {"temperature": (float, 0.0, 2.0), "max_tokens": (int, 1, 32_000), "top_p": (float, 0.0, 1.0)}


class PromotionRefused(Conflict):
    """The regression gate (or another promotion check) refused to make a version production."""

    code = "promotion_refused"


# --- What a call uses --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedPrompt:
    """The prompt version a call uses, as the gateway records it (ledger row, cache keys)."""

    key: str
    text: str
    version_id: uuid.UUID | None = None
    number: int = 0
    model: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    source: str = "default"  # "org", "default", or "builtin" (no row in the database: should not happen)
    experiment_id: uuid.UUID | None = None
    variant_id: uuid.UUID | None = None
    variant_name: str = ""

    @property
    def cache_version(self) -> str:
        """What the caches key on: the version's id (text, model and parameters are fixed with it)."""
        if self.version_id:
            return str(self.version_id)
        return "builtin:" + hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def render(self, **values: Any) -> str:
        return render(self.text, **values)

    def request_options(self) -> dict[str, Any]:
        """ChatRequest keyword arguments from the version's parameters."""
        options: dict[str, Any] = {}
        if "temperature" in self.parameters:
            options["temperature"] = self.parameters["temperature"]
        if "max_tokens" in self.parameters:
            options["max_tokens"] = self.parameters["max_tokens"]
        if "top_p" in self.parameters:
            options["options"] = {"top_p": self.parameters["top_p"]}
        return options

    def model_for(self, requested: str) -> str:
        """The version's model when it names one and the caller left the choice to the gateway."""
        return self.model if self.model and requested in ("", "default", "auto") else requested


PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def render(text: str, **values: Any) -> str:
    """Fill `{name}` placeholders that are given; every other brace stays as written (prompts are edited by
    people, and may show JSON)."""
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


def subject_of(*, user: Any = None, api_key: Any = None) -> str:
    """Who an experiment assigns: the member, else the API key; "" (no assignment) for neither."""
    if user is not None:
        return f"user:{user.pk}"
    if api_key is not None:
        return f"key:{api_key.pk}"
    return ""


def assignment_point(experiment_id: Any, subject: str) -> float:
    """A subject's place in [0, 1) for one experiment: stable, and independent between experiments."""
    digest = hashlib.sha256(f"{experiment_id}:{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment_id: Any, subject: str, weights: Sequence[int]) -> int:
    """The index of the variant a subject gets, by the variants' weights."""
    total = sum(weights)
    if total <= 0:
        return 0
    point = assignment_point(experiment_id, subject) * total
    upto = 0.0
    for index, weight in enumerate(weights):
        upto += weight
        if point < upto:
            return index
    return len(weights) - 1


# --- The copy in memory ------------------------------------------------------------------------------------


@dataclass
class _Arm:
    variant_id: uuid.UUID
    name: str
    weight: int
    version: PromptVersion


@dataclass
class _Running:
    experiment_id: uuid.UUID
    arms: list[_Arm]


@dataclass
class _OrgPrompts:
    prompts: dict[str, Prompt]
    experiments: dict[str, _Running]


@dataclass
class Snapshot:
    defaults: dict[str, Prompt]
    _orgs: dict[Any, _OrgPrompts] = field(default_factory=dict)

    def org(self, org_id: Any) -> _OrgPrompts:
        found = self._orgs.get(org_id)
        if found is None:
            found = on_loop.blocking(_org_prompts, org_id)
            if len(self._orgs) < 10_000:
                self._orgs[org_id] = found
        return found


def _org_prompts(org_id: Any) -> _OrgPrompts:
    prompts = Prompt.all_orgs.filter(organization_id=org_id).select_related("production", "staging")
    running: dict[str, _Running] = {}
    variants = (
        ExperimentVariant.all_orgs.filter(organization_id=org_id, experiment__status=Experiment.Status.RUNNING)
        .select_related("experiment", "version")
        .order_by("experiment_id", "position")
    )
    for variant in variants:
        running.setdefault(variant.experiment.key, _Running(variant.experiment_id, [])).arms.append(
            _Arm(variant.pk, variant.name, variant.weight, variant.version)
        )
    return _OrgPrompts({p.key: p for p in prompts}, running)


def _load() -> Snapshot:
    defaults = Prompt.all_orgs.filter(organization__isnull=True).select_related("production", "staging")
    return Snapshot({p.key: p for p in defaults})


memo = register(Memo("llm-prompts", _load, max_age=lambda: settings.LLM_CONFIG_CACHE_SECONDS))


def _resolved(key: str, version: PromptVersion, source: str, arm: _Arm | None = None,
              experiment_id: Any = None) -> ResolvedPrompt:  # fmt: skip
    return ResolvedPrompt(
        key=key, text=version.text, version_id=version.pk, number=version.number, model=version.model,
        parameters=dict(version.parameters or {}), source=source, experiment_id=experiment_id,
        variant_id=arm.variant_id if arm else None, variant_name=arm.name if arm else "",
    )  # fmt: skip


def prompt_resolve(*, org: Any, key: str, subject: str = "", label: str = "production") -> ResolvedPrompt:
    """The version of `key` a call in `org` uses (see the module's docstring for the order)."""
    snapshot = memo.current()
    if builtin_for(key) is not None and builtin_for(key).key not in snapshot.defaults:  # type: ignore[union-attr]
        prompt_defaults_sync()  # a flushed database (tests), or a key added since the last migrate
        snapshot = memo.current()
    org_id = getattr(org, "pk", org)
    mine = snapshot.org(org_id) if org_id is not None else _OrgPrompts({}, {})
    tried = key
    while tried:
        if label == Prompt.Label.PRODUCTION and subject and (running := mine.experiments.get(tried)):
            index = assign(running.experiment_id, subject, [arm.weight for arm in running.arms])
            arm = running.arms[index]
            return _resolved(tried, arm.version, "experiment", arm, running.experiment_id)
        for prompt, source in ((mine.prompts.get(tried), "org"), (snapshot.defaults.get(tried), "default")):
            version = getattr(prompt, label, None) if prompt is not None else None
            if version is not None:
                return _resolved(tried, version, source)
        if tried in BUILTINS:
            break
        tried = tried.rpartition(".")[0]
    builtin = builtin_for(key)
    if builtin is None:
        raise NotFound(f"No prompt {key!r}.")
    logger.warning("Prompt %s has no %s version in the database; using the built-in text", key, label)
    return ResolvedPrompt(key=builtin.key, text=builtin.text, source="builtin")


# --- Reads for pages and the API ---------------------------------------------------------------------------


def prompt_list(*, org: Any) -> list[dict[str, Any]]:
    """Every key the org sees: the operator's defaults and the org's own, each with what it uses now."""
    prompts = list(Prompt.objects.for_org(org).select_related("production", "staging").order_by("key"))
    by_key: dict[str, dict[str, Any]] = {}
    for prompt in prompts:
        entry = by_key.setdefault(prompt.key, {"key": prompt.key, "default": None, "override": None})
        entry["override" if prompt.organization_id else "default"] = prompt
    rows = []
    for _key, entry in sorted(by_key.items()):
        effective = entry["override"] if entry["override"] and entry["override"].production_id else entry["default"]
        rows.append({**entry, "effective": effective, "title": (entry["default"] or entry["override"]).title})
    return rows


def prompt_get(*, org: Any, key: str) -> tuple[Prompt | None, Prompt | None]:
    """(the operator's default, the org's override) for a key; NotFound when the org sees neither."""
    prompts = list(Prompt.objects.for_org(org).filter(key=key).select_related("production", "staging"))
    default = next((p for p in prompts if p.organization_id is None), None)
    override = next((p for p in prompts if p.organization_id is not None), None)
    if default is None and override is None:
        raise NotFound("No such prompt.")
    return default, override


def prompt_versions(*, org: Any, key: str) -> list[PromptVersion]:
    """The versions the org may use for a key, newest first: its own, then the operator default's."""
    return list(
        PromptVersion.objects.for_org(org).filter(prompt__key=key)
        .select_related("prompt", "author").order_by("organization_id", "-number")
    )  # fmt: skip


def prompt_version_get(*, org: Any, version_id: Any) -> PromptVersion:
    try:
        return PromptVersion.objects.for_org(org).select_related("prompt", "author").get(pk=uuid.UUID(str(version_id)))
    except (PromptVersion.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such prompt version.") from None


# --- Writes ------------------------------------------------------------------------------------------------

PromotionCheck = Callable[..., None]
_promotion_checks: list[PromotionCheck] = []


def register_promotion_check(check: PromotionCheck) -> None:
    """Called as check(org=..., version=..., principal=...) before `version` becomes production; raises
    PromotionRefused to refuse. analytics registers the regression gate here."""
    if check not in _promotion_checks:
        _promotion_checks.append(check)


def promotion_checks() -> list[PromotionCheck]:
    return list(_promotion_checks)


def prompt_audit(
    org: Any, action: str, principal: Any, target: Any, metadata: dict[str, Any], origin: Any = None
) -> None:
    if org is None:
        return
    from accounts.services import audit_record  # accounts is below saas/llm: a plain import would do, kept lazy

    audit_record(org=org, action=action, principal=principal, target=target, metadata=metadata, origin=origin)


def _clean(*, key: str, text: str, model: str, parameters: dict[str, Any] | None, note: str) -> dict[str, Any]:
    if not KEY.match(key) or len(key) > 100:
        raise ApplicationError("A prompt key is lowercase words joined by dots, e.g. ask.system.", code="invalid")
    if builtin_for(key) is None:
        raise ApplicationError(f"There is no prompt {key!r} to version.", code="invalid")
    if len(text) > MAX_TEXT_CHARS:
        raise ApplicationError(f"A prompt is at most {MAX_TEXT_CHARS} characters.", code="invalid")
    if "\x00" in text or "\x00" in note:
        raise ApplicationError("A prompt cannot contain NUL characters.", code="invalid")
    clean: dict[str, Any] = {}
    for name, value in (parameters or {}).items():
        if name not in PARAMETERS or value is None or isinstance(value, bool):
            raise ApplicationError(f"Unknown or invalid parameter {name!r}; known: {', '.join(PARAMETERS)}.",
                                   code="invalid")  # fmt: skip
        kind, low, high = PARAMETERS[name]
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ApplicationError(f"{name} must be a number.", code="invalid") from None
        if not low <= number <= high or (kind is int and number != value):
            raise ApplicationError(f"{name} must be between {low} and {high}.", code="invalid")
        clean[name] = number
    if len(model) > 64 or len(note) > 300:
        raise ApplicationError("A model alias is at most 64 characters, a note at most 300.", code="invalid")
    if model:
        from saas.llm import config

        if config.current().model(model) is None:
            raise ApplicationError(f"Unknown model {model!r}.", code="invalid")
    return {"text": text, "model": model, "parameters": clean, "note": note.strip()}


def _prompt_for(org: Any, key: str) -> Prompt:
    """The org's (or with org None, the operator's) prompt row for a key, created on first use; locked."""
    manager = Prompt.all_orgs.select_for_update()
    prompt = manager.filter(organization=org, key=key).first()
    if prompt is None:
        builtin = builtin_for(key)
        try:
            with transaction.atomic():
                Prompt.all_orgs.create(organization=org, key=key, title=builtin.title if builtin else "",
                                       description=builtin.description if builtin else "")  # fmt: skip
        except IntegrityError:
            pass  # created meanwhile
        prompt = manager.get(organization=org, key=key)
    return prompt


@transaction.atomic
def prompt_version_create(
    *, org: Any, key: str, text: str, model: str = "", parameters: dict[str, Any] | None = None, note: str = "",
    author: Any = None, principal: Any = None, origin: Any = None,
) -> PromptVersion:  # fmt: skip
    """A new version of the org's prompt for `key` (the org's override is created with its first version; org
    None: the operator's default). It is labelled nothing: set a label to use it."""
    fields = _clean(key=key, text=text, model=model, parameters=parameters, note=note)
    prompt = _prompt_for(org, key)
    number = (PromptVersion.all_orgs.filter(prompt=prompt).aggregate(n=Max("number"))["n"] or 0) + 1
    author = author if author is not None else (principal.user if principal is not None else None)
    version = PromptVersion.all_orgs.create(prompt=prompt, organization=org, number=number, author=author, **fields)
    prompt_audit(org, "prompt.version_created", principal, version,
           {"key": key, "number": number, "note": fields["note"]}, origin)  # fmt: skip
    return version


def prompt_label_set(
    *, org: Any, version: PromptVersion, label: str = Prompt.Label.PRODUCTION, principal: Any = None,
    origin: Any = None, checked: bool = True,
) -> Prompt:  # fmt: skip
    """Point the org's `label` for the version's key at `version` (one of the org's own or of the operator
    default's). Production goes through the promotion checks first (the regression gate); a refusal is an
    audit event and raises PromotionRefused. `checked=False` skips the checks (operator tools only)."""
    if label not in LABELS:
        raise ApplicationError(f"A label is one of: {', '.join(LABELS)}.", code="invalid")
    if version.organization_id not in (None, getattr(org, "pk", org)):
        raise NotFound("No such prompt version.")
    if org is None and version.organization_id is not None:
        raise NotFound("No such prompt version.")
    if label == Prompt.Label.PRODUCTION and checked:
        for check in promotion_checks():
            try:
                check(org=org, version=version, principal=principal)
            except PromotionRefused as refused:
                with transaction.atomic():
                    prompt_audit(org, "prompt.promotion_refused", principal, version,
                           {"key": version.prompt.key, "number": version.number, "reason": refused.message,
                            "details": refused.details or {}}, origin)  # fmt: skip
                raise
    with transaction.atomic():
        prompt = _prompt_for(org, version.prompt.key)
        previous = getattr(prompt, f"{label}_id")
        setattr(prompt, label, version)
        prompt.save(update_fields=[label, "updated_at"])
        prompt_audit(org, "prompt.label_set", principal, version,
               {"key": prompt.key, "label": label, "number": version.number,
                "default": version.organization_id is None,
                "previous": str(previous) if previous else None}, origin)  # fmt: skip
    return prompt


@transaction.atomic
def prompt_label_clear(*, org: Any, key: str, label: str = Prompt.Label.PRODUCTION, principal: Any = None,
                       origin: Any = None) -> None:  # fmt: skip
    """Remove the org's label for a key: the operator's default applies again."""
    prompt = Prompt.all_orgs.select_for_update().filter(organization=org, key=key).first()
    if org is None or prompt is None or getattr(prompt, f"{label}_id") is None:
        return
    setattr(prompt, label, None)
    prompt.save(update_fields=[label, "updated_at"])
    prompt_audit(org, "prompt.label_cleared", principal, prompt, {"key": key, "label": label}, origin)


def prompt_defaults_sync() -> int:
    """Create the operator's default of each built-in key that has none, as version 1 labelled production and
    staging. Never touches an existing default (an operator may have versioned it). Returns how many it made."""
    made = 0
    for builtin in BUILTINS.values():
        if Prompt.all_orgs.filter(organization__isnull=True, key=builtin.key).exists():
            continue
        try:
            with transaction.atomic():
                prompt = Prompt.all_orgs.create(key=builtin.key, title=builtin.title, description=builtin.description)
                version = PromptVersion.all_orgs.create(prompt=prompt, number=1, text=builtin.text,
                                                        note="Built-in prompt")  # fmt: skip
                prompt.production = prompt.staging = version
                prompt.save(update_fields=["production", "staging", "updated_at"])
                made += 1
        except IntegrityError:
            continue  # made by another process meanwhile
    return made
