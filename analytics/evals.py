"""Eval datasets and their cases: written by hand, made in one click from a thumbs-down or a request-log row,
or imported from CSV / JSONL (all or nothing). Runs and the gate: analytics/eval_runs.py, analytics/gate.py.

A case made from a member's answer copies the question as the ledger stored it (personal data masked as the
team's policy had it), so it needs what the request log needs to show it: the team's prompt-visibility policy
must let the admin read stored prompts (saas.llm.selectors.prompt_visible).
"""

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from accounts.permissions import Principal
from agents.models import Feedback, Message
from analytics import scorers
from analytics.models import EvalCase, EvalDataset
from documents.models import Collection, Document
from saas.core.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from saas.core.text import unstorable
from saas.llm import selectors as llm_selectors
from saas.llm.models import LLMCall

MAX_INPUT = 4000  # characters of a question, as ask takes them (documents.services.MAX_QUESTION_CHARS)
MAX_EXPECTED = 4000
MAX_RUBRIC = 2000
MAX_NOTE = 2000
MAX_SCHEMA_BYTES = 20_000
MAX_CASES = 500  # per dataset: a gate runs them all while an admin waits
IMPORT_MAX_BYTES = 2 * 1024 * 1024
IMPORT_MAX_ROWS = MAX_CASES
IMPORT_FIELDS = (
    "input", "collection", "expected_answer", "match", "expected_document", "json_schema", "rubric", "note",
)  # fmt: skip
MAX_REPORTED_ERRORS = 20
# The prompts a dataset can gate: its cases are answered through the ask path, which ask.system drives (chat over
# collections too). Chat and crew prompts need runners of their own.
GATEABLE = ("ask.system",)


class ImportRefused(ApplicationError):
    """A file that is not imported, with every line that is wrong (details.lines: [{line, message}])."""

    code = "import_refused"


# --- Datasets ----------------------------------------------------------------------------------------------


def dataset_get(*, org: Any, dataset_id: Any) -> EvalDataset:
    dataset = EvalDataset.objects.for_org(org).filter(pk=dataset_id).first()
    if dataset is None:
        raise NotFound("No such dataset.")
    return dataset


def _dataset_fields(name: str | None, description: str | None, max_drop: Any, prompt_key: str | None,
                    judge_model: str | None) -> dict[str, Any]:  # fmt: skip
    fields: dict[str, Any] = {}
    if name is not None:
        name = " ".join(name.split())
        if not name or len(name) > 100:
            raise ApplicationError("A dataset's name is 1 to 100 characters.", code="invalid")
        fields["name"] = name
    if description is not None:
        fields["description"] = description.strip()[:500]
    if max_drop is not None:
        try:
            drop = float(max_drop)
        except (TypeError, ValueError):
            drop = -1.0
        if not 0 <= drop <= 1:
            raise ApplicationError("The largest allowed drop is a number from 0 to 1 (0.05 is five points).",
                                   code="invalid")  # fmt: skip
        fields["max_drop"] = drop
    if prompt_key is not None:
        if prompt_key.strip() not in GATEABLE:
            raise ApplicationError(f"A dataset gates one of: {', '.join(GATEABLE)}.", code="invalid")
        fields["prompt_key"] = prompt_key.strip()
    if judge_model is not None:
        fields["judge_model"] = judge_model.strip()[:64]
    return fields


def dataset_create(
    *, org: Any, user: Any, name: str, description: str = "", max_drop: Any = 0.05, prompt_key: str = "ask.system",
    judge_model: str = "",
) -> EvalDataset:  # fmt: skip
    fields = _dataset_fields(name, description, max_drop, prompt_key, judge_model)
    datasets = EvalDataset.objects.for_org(org)
    if datasets.filter(name__iexact=fields["name"]).exists():
        raise Conflict(f"There is already a dataset named {fields['name']!r}.", code="duplicate_dataset")
    try:
        with transaction.atomic():
            return datasets.create(organization=org, created_by=user, **fields)
    except IntegrityError as exc:  # the same name created at the same moment
        raise Conflict(f"There is already a dataset named {fields['name']!r}.", code="duplicate_dataset") from exc


def dataset_update(
    *, org: Any, dataset_id: Any, name: str | None = None, description: str | None = None, max_drop: Any = None,
    prompt_key: str | None = None, judge_model: str | None = None,
) -> EvalDataset:  # fmt: skip
    dataset = dataset_get(org=org, dataset_id=dataset_id)
    fields = _dataset_fields(name, description, max_drop, prompt_key, judge_model)
    if (
        "name" in fields
        and EvalDataset.objects.for_org(org).filter(name__iexact=fields["name"]).exclude(pk=dataset.pk).exists()
    ):
        raise Conflict(f"There is already a dataset named {fields['name']!r}.", code="duplicate_dataset")
    for name_, value in fields.items():
        setattr(dataset, name_, value)
    dataset.save(update_fields=[*fields, "updated_at"])
    return dataset


def dataset_delete(*, org: Any, dataset_id: Any) -> None:
    dataset_get(org=org, dataset_id=dataset_id).delete()


def inbox_dataset(*, org: Any, user: Any, name: str) -> EvalDataset:
    """The dataset a one-click case lands in when none is chosen ("Thumbs-down", "From the request log")."""
    found = EvalDataset.objects.for_org(org).filter(name__iexact=name).first()
    if found is not None:
        return found
    try:
        about = "Cases made in one click; give each an expected answer or document."
        return dataset_create(org=org, user=user, name=name, description=about)
    except Conflict:
        return EvalDataset.objects.for_org(org).get(name__iexact=name)


# --- Cases -------------------------------------------------------------------------------------------------


@dataclass
class CaseFields:
    """A case's fields, checked (services, the API, the import all go through `case_fields`)."""

    input: str
    collection: Collection | None = None
    expected_answer: str = ""
    match: str = EvalCase.Match.CONTAINS
    expected_document: Document | None = None
    json_schema: Any = None
    rubric: str = ""
    note: str = ""
    problems: list[str] = field(default_factory=list)


def _collection(org: Any, value: Any) -> Collection | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    found = None
    if llm_selectors.is_uuid(text):
        found = Collection.objects.for_org(org).filter(pk=text).first()
    found = found or Collection.objects.for_org(org).filter(name__iexact=text).first()
    if found is None:
        raise ValueError("no collection of this team has that id or name")
    return found


def _document(org: Any, value: Any) -> Document | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if llm_selectors.is_uuid(text):
        found = Document.objects.for_org(org).filter(pk=text).first()
    else:  # a title or a file name, when it names one document only
        matches = list(Document.objects.for_org(org).filter(title__iexact=text)[:2]) or list(
            Document.objects.for_org(org).filter(filename__iexact=text)[:2]
        )
        found = matches[0] if len(matches) == 1 else None
        if len(matches) > 1:
            raise ValueError("several documents have that title: give the document's id")
    if found is None:
        raise ValueError("no document of this team has that id or title")
    return found


def case_fields(*, org: Any, data: dict[str, Any]) -> CaseFields:
    """Checks a case's fields (strings as a form or a file gives them, or JSON values); every problem found is
    listed in `problems`, in words, so an import can say them all."""
    problems: list[str] = []

    def text(name: str, limit: int) -> str:
        value = data.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            problems.append(f"{name} must be text")
            return ""
        if len(value) > limit:
            problems.append(f"{name} is longer than {limit} characters")
        if unstorable(value) is not None:
            problems.append(f"{name} holds a NUL character or an unpaired surrogate")
            return ""
        return value.strip()[:limit]

    fields = CaseFields(input=text("input", MAX_INPUT))
    if not fields.input:
        problems.append("input (the question) is empty")
    fields.expected_answer = text("expected_answer", MAX_EXPECTED)
    fields.rubric = text("rubric", MAX_RUBRIC)
    fields.note = text("note", MAX_NOTE)
    match = text("match", 10).lower() or EvalCase.Match.CONTAINS
    if match not in EvalCase.Match.values:
        problems.append("match is one of contains, exact, regex")
    fields.match = match
    if match == EvalCase.Match.REGEX and fields.expected_answer:
        try:
            scorers.check_pattern(fields.expected_answer)
        except ValueError as exc:
            problems.append(f"expected_answer: {exc}")
    for name, find in (("collection", _collection), ("expected_document", _document)):
        try:
            setattr(fields, name, find(org, data.get(name)))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    schema = data.get("json_schema")
    if isinstance(schema, str):
        if schema.strip():
            try:
                schema = json.loads(schema)
            except ValueError:
                problems.append("json_schema is not JSON")
                schema = None
        else:
            schema = None
    if schema is not None:
        if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
            problems.append(f"json_schema is larger than {MAX_SCHEMA_BYTES} bytes")
        else:
            try:
                scorers.check_schema(schema)
                fields.json_schema = schema
            except ValueError as exc:
                problems.append(f"json_schema: {exc}")
    if unknown := sorted(set(data) - set(IMPORT_FIELDS)):
        problems.append(f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(map(str, unknown))[:200]}")
    fields.problems = problems
    return fields


def _room(dataset: EvalDataset, adding: int) -> None:
    count = EvalCase.objects.for_org(dataset.organization_id).filter(dataset=dataset).count()
    if count + adding > MAX_CASES:
        raise ApplicationError(f"A dataset holds at most {MAX_CASES} cases; this one has {count}.",
                               code="dataset_full")  # fmt: skip


def _new_case(dataset: EvalDataset, fields: CaseFields, **extra: Any) -> EvalCase:
    case = EvalCase(
        organization_id=dataset.organization_id, dataset=dataset, collection=fields.collection, match=fields.match,
        expected_document=fields.expected_document, json_schema=fields.json_schema, rubric=fields.rubric, **extra,
    )  # fmt: skip
    case.input, case.expected_answer, case.note = fields.input, fields.expected_answer, fields.note
    return case


@transaction.atomic
def case_create(*, org: Any, user: Any, dataset_id: Any, data: dict[str, Any]) -> EvalCase:
    dataset = dataset_get(org=org, dataset_id=dataset_id)
    fields = case_fields(org=org, data=data)
    if fields.problems:
        raise ApplicationError("The case is not valid: " + "; ".join(fields.problems) + ".", code="invalid",
                               details={"problems": fields.problems})  # fmt: skip
    _room(dataset, 1)
    case = _new_case(dataset, fields, created_by=user)
    case.save()
    return case


def case_get(*, org: Any, case_id: Any, dataset_id: Any = None) -> EvalCase:
    cases = EvalCase.objects.for_org(org).select_related("dataset", "collection", "expected_document")
    if dataset_id is not None:
        cases = cases.filter(dataset_id=dataset_id)
    case = cases.filter(pk=case_id).first()
    if case is None:
        raise NotFound("No such case.")
    return case


@transaction.atomic
def case_update(*, org: Any, case_id: Any, data: dict[str, Any], dataset_id: Any = None) -> EvalCase:
    """Replaces the fields given (the others stay as they are)."""
    case = case_get(org=org, case_id=case_id, dataset_id=dataset_id)
    current = {
        "input": case.input, "collection": str(case.collection_id or ""), "expected_answer": case.expected_answer,
        "match": case.match, "expected_document": str(case.expected_document_id or ""),
        "json_schema": case.json_schema, "rubric": case.rubric, "note": case.note,
    }  # fmt: skip
    fields = case_fields(org=org, data={**current, **data})
    if fields.problems:
        raise ApplicationError("The case is not valid: " + "; ".join(fields.problems) + ".", code="invalid",
                               details={"problems": fields.problems})  # fmt: skip
    for name in ("input", "collection", "expected_answer", "match", "expected_document", "json_schema", "rubric",
                 "note"):  # fmt: skip
        setattr(case, name, getattr(fields, name))
    case.save()
    return case


def case_delete(*, org: Any, case_id: Any, dataset_id: Any = None) -> None:
    case_get(org=org, case_id=case_id, dataset_id=dataset_id).delete()


# --- One click: from a thumbs-down, from the request log ------------------------------------------------------


def question_of(call: LLMCall | None) -> str:
    """The question of a stored call: its last user message, as the ledger stored it (masked)."""
    if call is None:
        return ""
    content = llm_selectors.llm_call_content(call=call)
    users = [m for m in content.messages or [] if m.get("role") == "user" and isinstance(m.get("content"), str)]
    return users[-1]["content"].strip() if users else ""


def _may_read_prompts(principal: Principal) -> None:
    if not llm_selectors.prompt_visible(principal=principal):
        raise PermissionDenied("The team's policy does not let you read stored questions, so you cannot make a "
                               "case from one. An owner can change it in the settings.",
                               code="prompt_not_visible")  # fmt: skip


def _single_collection(message: Message) -> Collection | None:
    collections = list(message.conversation.collections.all()[:2])
    return collections[0] if len(collections) == 1 else None


@transaction.atomic
def case_from_feedback(*, principal: Principal, feedback_id: Any, dataset_id: Any = None) -> tuple[EvalCase, bool]:
    """A thumbs-down becomes a case: the question it answered, its collection when the chat had one, and the
    comment as the case's note. Into the given dataset, or the "Thumbs-down" one. Twice: the same case
    (returned with False)."""
    org = principal.organization
    _may_read_prompts(principal)
    feedback = (
        Feedback.objects.for_org(org).select_related("message__conversation", "message__llm_call", "llm_call")
        .filter(pk=feedback_id).first()
    )  # fmt: skip
    if feedback is None:
        raise NotFound("No such feedback.")
    if feedback.rating != Feedback.Rating.DOWN:
        raise ApplicationError("Only a thumbs-down becomes an eval case.", code="not_thumbs_down")
    dataset = (dataset_get(org=org, dataset_id=dataset_id) if dataset_id
               else inbox_dataset(org=org, user=principal.user, name="Thumbs-down"))  # fmt: skip
    existing = EvalCase.objects.for_org(org).filter(dataset=dataset, feedback=feedback).first()
    if existing is not None:
        return existing, False
    call = feedback.llm_call or (feedback.message.llm_call if feedback.message else None)
    question = question_of(call)
    if not question:
        raise ApplicationError("The question of this answer is no longer stored (erased or past retention).",
                               code="question_gone")  # fmt: skip
    collection = _single_collection(feedback.message) if feedback.message else None
    _room(dataset, 1)
    case = EvalCase(
        organization=org, dataset=dataset, collection=collection, source=EvalCase.Source.FEEDBACK, feedback=feedback,
        llm_call=call if call is not None and not EvalCase.objects.for_org(org).filter(
            dataset=dataset, llm_call=call).exists() else None,
        created_by=principal.user,
    )  # fmt: skip
    case.input, case.note = question[:MAX_INPUT], feedback.comment[:MAX_NOTE]
    case.save()
    return case, True


@transaction.atomic
def case_from_call(*, principal: Principal, call_id: Any, dataset_id: Any = None) -> tuple[EvalCase, bool]:
    """A request-log row (an ask or a chat turn) becomes a case: its question, and a thumbs-down's comment if
    the answer got one. Into the given dataset, or "From the request log". Twice: the same case."""
    org = principal.organization
    _may_read_prompts(principal)
    call = llm_selectors.llm_call_get(org=org, call_id=call_id)
    if call.feature not in ("ask", "chat"):
        raise ApplicationError("Only the question of an ask or a chat turn becomes an eval case.",
                               code="not_a_question")  # fmt: skip
    dataset = (dataset_get(org=org, dataset_id=dataset_id) if dataset_id
               else inbox_dataset(org=org, user=principal.user, name="From the request log"))  # fmt: skip
    existing = EvalCase.objects.for_org(org).filter(dataset=dataset, llm_call=call).first()
    if existing is not None:
        return existing, False
    question = question_of(call)
    if not question:
        raise ApplicationError("This request's question is not stored (erased, past retention, or not a chat "
                               "request).", code="question_gone")  # fmt: skip
    message = Message.objects.for_org(org).select_related("conversation").filter(llm_call=call).first()
    on_answer = Q(llm_call=call) | Q(message=message) if message is not None else Q(llm_call=call)
    down = Feedback.objects.for_org(org).filter(on_answer, rating=Feedback.Rating.DOWN).order_by("created_at")
    comment = next((f.comment for f in down if f.comment), "")
    _room(dataset, 1)
    case = EvalCase(
        organization=org, dataset=dataset, collection=_single_collection(message) if message else None,
        source=EvalCase.Source.REQUEST, llm_call=call, created_by=principal.user,
    )  # fmt: skip
    case.input, case.note = question[:MAX_INPUT], comment[:MAX_NOTE]
    case.save()
    return case, True


# --- Import ------------------------------------------------------------------------------------------------


def _rows_jsonl(text: str) -> list[tuple[int, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            rows.append((number, ValueError(f"not JSON ({exc.msg} at column {exc.colno})")))
        except (ValueError, RecursionError):  # a number too long to read, or nesting too deep
            rows.append((number, ValueError("not JSON that can be read (too deep or too long)")))
    return rows


def _rows_csv(text: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "input" not in [f.strip() for f in reader.fieldnames]:
        raise ImportRefused("A CSV file starts with a header row naming its columns, and one of them is input.",
                            details={"lines": [{"line": 1, "message": "no input column in the header"}]})  # fmt: skip
    rows: list[tuple[int, Any]] = []
    try:
        for row in reader:
            number = reader.line_num
            if None in row:
                rows.append((number, ValueError("more cells than the header has columns")))
                continue
            cleaned = {k.strip(): v for k, v in row.items() if k is not None}
            if all(not (v or "").strip() for v in cleaned.values()):
                continue
            rows.append((number, {k: v for k, v in cleaned.items() if v is not None and v != ""}))
    except csv.Error as exc:
        raise ImportRefused(f"The CSV cannot be read: {exc}.",
                            details={"lines": [{"line": reader.line_num, "message": str(exc)}]}) from exc  # fmt: skip
    return rows


def import_kind(filename: str, data: bytes) -> str:
    name = filename.lower()
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    return "jsonl" if data.lstrip()[:1] == b"{" else "csv"


@transaction.atomic
def cases_import(*, org: Any, user: Any, dataset_id: Any, data: bytes, filename: str = "") -> list[EvalCase]:
    """Every row of a CSV (with a header row) or JSONL file (one JSON object a line) becomes a case, or none
    does: a file with any wrong line is refused with every wrong line named (the first 20)."""
    dataset = dataset_get(org=org, dataset_id=dataset_id)
    if len(data) > IMPORT_MAX_BYTES:
        raise ImportRefused(f"The file is larger than {IMPORT_MAX_BYTES // (1024 * 1024)} MB.", code="too_large",
                            status=413)  # fmt: skip
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused("The file is not UTF-8 text.", code="not_text") from exc
    kind = import_kind(filename, data)
    rows = _rows_jsonl(text) if kind == "jsonl" else _rows_csv(text)
    if not rows:
        raise ImportRefused("The file holds no cases.", code="empty")
    if len(rows) > IMPORT_MAX_ROWS:
        raise ImportRefused(f"A file holds at most {IMPORT_MAX_ROWS} cases; this one has {len(rows)}.",
                            code="too_many_rows")  # fmt: skip
    errors: list[dict[str, Any]] = []
    good: list[CaseFields] = []
    for number, row in rows:
        if isinstance(row, ValueError):
            errors.append({"line": number, "message": str(row)})
            continue
        if not isinstance(row, dict):
            errors.append({"line": number, "message": "not a JSON object"})
            continue
        fields = case_fields(org=org, data=row)
        if fields.problems:
            errors.append({"line": number, "message": "; ".join(fields.problems)})
        else:
            good.append(fields)
    if errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        summary = "; ".join(f"line {e['line']}: {e['message']}" for e in shown[:3])
        raise ImportRefused(f"Nothing was imported: {len(errors)} line{'s are' if len(errors) != 1 else ' is'} "
                            f"wrong{more}. {summary}.", details={"lines": shown, "wrong": len(errors)})  # fmt: skip
    _room(dataset, len(good))
    cases = [_new_case(dataset, fields, source=EvalCase.Source.IMPORT, created_by=user) for fields in good]
    return EvalCase.objects.for_org(org).bulk_create(cases)
