"""The tools a crew's agents may call, as OpenAI function specs, and what each one does.

Arguments come from a model: they are checked against the tool's JSON Schema before the tool runs, and any
failure (bad arguments, an unknown tool, a tool that fails) becomes an `error` result that the model sees and
can act on, never an exception that ends the run.
"""

import ast
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
from django.conf import settings
from django.utils import timezone as dj_timezone
from simpleeval import OperatorNotDefined, SimpleEval

from saas.llm import gateway

MAX_EXPRESSION_CHARS = 200
MAX_ARGUMENTS_CHARS = 4000  # a model's arguments for any tool here fit in well under this (a query is 500 at most)
MAX_RESULT_CHARS = 6000
TRUNCATED = " [...truncated]"


@dataclass
class ToolResult:
    text: str
    ok: bool = True
    citations: list[dict[str, Any]] = field(default_factory=list)
    llm_call_id: str | None = None  # the ledger row of a tool that called the gateway (an embedding)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[..., ToolResult]

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


# --- search_documents --------------------------------------------------------------------------------------


def _search_documents(*, caller: gateway.Caller, query: str, top_k: int = 5) -> ToolResult:
    from documents import selectors  # agents sits above documents: searching is one of their tools

    embedded = gateway.embed(caller=caller, model=settings.DOCUMENTS_EMBEDDING_MODEL, texts=[query])
    hits = selectors.chunk_search(org=caller.org, query=query, top_k=top_k, query_vector=embedded.vectors[0])
    if not hits:
        return ToolResult("No passage of the org's documents matches this query.", llm_call_id=embedded.call_id)
    lines, citations = [], []
    for number, hit in enumerate(hits, start=1):
        where = f"{hit.title}, page {hit.page}" if hit.page else hit.title
        if hit.heading:
            where += f" > {hit.heading}"
        lines += [f"[{number}] {where}:", " ".join(hit.text.split())]
        citations.append({"source": number, "document_id": hit.document_id, "chunk_id": hit.chunk_id,
                          "title": hit.title, "page": hit.page, "heading": hit.heading})  # fmt: skip
    return ToolResult("\n".join(lines), citations=citations, llm_call_id=embedded.call_id)


# --- calculator --------------------------------------------------------------------------------------------

# Every number the calculator makes, on the way and at the end, has at most this many digits. The size of a
# result is estimated *before* the operations that can blow it up (** and *) run, so an expression of 200
# characters finishes in microseconds or is refused. A thousand digits is far beyond any sum a crew needs, below
# Python's int-to-str limit (4,300 digits by default, never under 640... but a refused print is caught too) and
# fits MAX_RESULT_CHARS with the expression. The other operators cannot outgrow their operands by more than a
# digit (+ -) or at all (/ // % and the functions); << >> & | ^ are not offered.
MAX_DIGITS = 1000
_LIMIT = 10**MAX_DIGITS  # the smallest number with too many digits
_LOG10_2 = math.log10(2)


class CalculationRefused(Exception):
    """Why an expression is not computed, in words the model can act on."""


def _digits(number: int) -> int:
    """How many decimal digits `number` has, from its size in bits: exact or one more, never fewer."""
    return int(number.bit_length() * _LOG10_2) + 1


def _too_big(digits: float, what: str) -> CalculationRefused:
    about = f"about {digits:,.0f}" if digits < 1e15 else "far more than a thousand"
    return CalculationRefused(f"{what} would have {about} digits; the calculator works with numbers of up to "
                              f"{MAX_DIGITS:,} digits.")  # fmt: skip


def _power(base: Any, exponent: Any) -> Any:
    # Only an integer raised to a whole power grows without bound; with a float on either side (or a negative
    # exponent) Python computes in floats, which overflow at once with an OverflowError.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent.bit_length() > 64:
            raise _too_big(math.inf, f"{base} ** {exponent}")
        digits = exponent * math.log10(abs(base))  # the result has floor(digits) + 1 digits
        if digits > MAX_DIGITS + 1:  # surely too big (the exact check follows the computation)
            raise _too_big(digits, f"{base} ** {exponent}")
    return base**exponent


def _multiply(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and left and right:
        digits = _digits(left) + _digits(right)  # the product has this many digits or up to 3 fewer
        if digits > MAX_DIGITS + 3:  # surely too big (the exact check follows the computation)
            raise _too_big(digits - 1, "The product")
    return left * right


def _sqrt(x: Any) -> float:
    if x < 0:
        raise CalculationRefused("The square root of a negative number is not a real number.")
    return math.sqrt(x)


def _round(x: Any, ndigits: Any = None) -> Any:
    # round(5, -10**9) would compute 10**1000000000 first.
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > MAX_DIGITS):
        raise CalculationRefused(f"round() takes a whole number of digits between -{MAX_DIGITS} and {MAX_DIGITS}.")
    return round(x, ndigits)


def _number(value: Any) -> int | float:
    """Every value the evaluator makes passes here: numbers only, finite, and of a printable size."""
    if isinstance(value, complex):
        raise CalculationRefused("The result is not a real number (a fractional power of a negative number?).")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculationRefused("The calculator works with numbers only (no text, lists or comparisons).")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationRefused("The result is too large for a floating-point number (over about 1.8e308).")
    if isinstance(value, int) and abs(value) >= _LIMIT:
        raise _too_big(_digits(value), "The result")
    return value


_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _multiply, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power, ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}  # fmt: skip
_FUNCTIONS: dict[str, Callable[..., Any]] = {"sqrt": _sqrt, "abs": abs, "round": _round, "min": min, "max": max}


class _Calculator(SimpleEval):
    """Arithmetic only: numbers, + - * / // % ** and parentheses, a few functions and two constants; no
    strings, names, attributes, comparisons, subscripts or f-strings. Every intermediate value is checked."""

    def __init__(self) -> None:
        super().__init__(operators=dict(_OPERATORS), functions=dict(_FUNCTIONS), names={"pi": math.pi, "e": math.e})
        self.nodes = {
            ast.Expr: self._eval_expr, ast.UnaryOp: self._eval_unaryop, ast.BinOp: self._eval_binop,
            ast.Call: self._eval_call, ast.keyword: self._eval_keyword, ast.Name: self._eval_name,
            ast.Constant: self._eval_constant,
        }  # fmt: skip

    def _eval(self, node: ast.AST) -> Any:
        value = super()._eval(node)
        return value if isinstance(node, ast.keyword) else _number(value)


CALCULATOR_OFFERS = "numbers, + - * / // % ** and parentheses, sqrt, abs, round, min, max, pi and e"


def _calculator(*, caller: gateway.Caller, expression: str) -> ToolResult:
    if len(expression) > MAX_EXPRESSION_CHARS:
        return ToolResult(f"The expression is longer than {MAX_EXPRESSION_CHARS} characters.", ok=False)
    try:
        value = _Calculator().eval(expression.replace("^", "**"))
    except CalculationRefused as exc:
        return ToolResult(str(exc), ok=False)
    except ZeroDivisionError:
        return ToolResult("Division by zero.", ok=False)
    except OverflowError:
        return ToolResult("The result is too large for a floating-point number (over about 1.8e308).", ok=False)
    except OperatorNotDefined as exc:
        return ToolResult(f"Not an arithmetic expression: the operator {type(exc.attr).__name__} is not offered; "
                          f"use {CALCULATOR_OFFERS}.", ok=False)  # fmt: skip
    except Exception as exc:  # simpleeval raises many types for what it refuses: all mean "not arithmetic"
        return ToolResult(f"Not an arithmetic expression ({type(exc).__name__}): use {CALCULATOR_OFFERS}.", ok=False)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    try:
        return ToolResult(f"{expression} = {value}")
    except ValueError:  # Python's int-to-str limit (sys.set_int_max_str_digits), should it be set below MAX_DIGITS
        return ToolResult("The result has too many digits to print.", ok=False)


# --- current_datetime --------------------------------------------------------------------------------------


def _current_datetime(*, caller: gateway.Caller, timezone: str = "UTC") -> ToolResult:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ToolResult(f"Unknown time zone {timezone!r}; use an IANA name such as Europe/Paris.", ok=False)
    now = datetime.now(UTC).astimezone(zone)
    return ToolResult(f"It is {now:%A %d %B %Y, %H:%M} ({timezone}); ISO 8601: {now.isoformat(timespec='seconds')}.")


# --- recent_activity ---------------------------------------------------------------------------------------


def _recent_activity(*, caller: gateway.Caller, days: int = 7) -> ToolResult:
    from agents.models import Run
    from documents.models import Document  # agents sits above documents

    since = dj_timezone.now() - timedelta(days=days)
    documents = Document.objects.for_org(caller.org).filter(created_at__gte=since).order_by("-created_at")[:50]
    runs = Run.objects.for_org(caller.org).filter(created_at__gte=since).order_by("-created_at")[:50]
    lines = [f"Activity of the last {days} days:", f"Documents added: {len(documents)}"]
    lines += [f"- {d.title} ({d.kind}, {d.created_at:%Y-%m-%d}, {d.status})" for d in documents]
    lines.append(f"Crew runs: {len(runs)}")
    lines += [f"- {r.definition.get('name', 'crew')} ({r.created_at:%Y-%m-%d}, {r.status})" for r in runs]
    return ToolResult("\n".join(lines))


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in [
        Tool(
            "search_documents",
            "Search the org's documents (hybrid semantic and keyword search). Returns numbered passages with "
            "their document and page; cite them as [n].",
            {"type": "object", "additionalProperties": False, "required": ["query"], "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 500},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 10}}},
            _search_documents,
        ),
        Tool(
            "calculator",
            "Evaluate an arithmetic expression exactly: + - * / // % ** and parentheses, sqrt, abs, round, "
            f"min, max, pi, e; numbers of up to {MAX_DIGITS:,} digits.",
            {"type": "object", "additionalProperties": False, "required": ["expression"], "properties": {
                "expression": {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION_CHARS}}},
            _calculator,
        ),
        Tool(
            "current_datetime",
            "The current date and time, in UTC or in the IANA time zone given.",
            {"type": "object", "additionalProperties": False, "properties": {
                "timezone": {"type": "string", "maxLength": 64}}},
            _current_datetime,
        ),
        Tool(
            "recent_activity",
            "What happened in the org recently: documents added and crew runs, with dates and status.",
            {"type": "object", "additionalProperties": False, "properties": {
                "days": {"type": "integer", "minimum": 1, "maximum": 90}}},
            _recent_activity,
        ),
    ]
}  # fmt: skip


def call_tool(*, name: str, arguments: str, caller: gateway.Caller, allowed: list[str]) -> ToolResult:
    """Run a call a model asked for, or say why not, in words the model can act on."""
    if name not in allowed or name not in TOOLS:
        offered = ", ".join(allowed) or "none"
        return ToolResult(f"Unknown tool {name!r}. The tools you can use are: {offered}.", ok=False)
    tool = TOOLS[name]
    if len(arguments or "") > MAX_ARGUMENTS_CHARS:
        return ToolResult(f"The arguments of {name} are longer than {MAX_ARGUMENTS_CHARS} characters.", ok=False)
    try:
        parsed = json.loads(arguments or "{}")
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return ToolResult(f"The arguments of {name} are not valid JSON: {arguments[:200]!r}.", ok=False)
    try:
        jsonschema.validate(parsed, tool.parameters)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
        return ToolResult(f"Invalid arguments for {name} ({where}): {exc.message}.", ok=False)
    result = tool.run(caller=caller, **parsed)
    if len(result.text) > MAX_RESULT_CHARS:
        result.text = result.text[: MAX_RESULT_CHARS - len(TRUNCATED)] + TRUNCATED
    return result


# --- The local engine's policy for these tools -------------------------------------------------------------

# Bounded, possessive quantifiers: no backtracking, so the search is linear in the task's length (the former
# `\d[\d.,\s]*...` took seconds on a task of many spaced digits and no operator), and only the beginning of a
# long task (which carries earlier tasks' outputs) is searched.
ARITHMETIC = re.compile(r"\d[\d.,\s]{0,40}+(?:[-+*/^%]\s{0,5}+\(?\s{0,5}+\d[\d.,]{0,40}+\s{0,5}+\)?\s{0,5}+)+")
POLICY_SCAN_CHARS = 4000
ABOUT_TIME = re.compile(r"\b(today|tonight|now|current (?:date|time)|this (?:week|month|year)|date)\b", re.I)
MANAGER_TOOLS = ("delegate_work", "review_work")


def local_tool_policy(task: str, tools: list[dict[str, Any]], called: list[str]) -> tuple[str, dict[str, Any]] | None:
    """What Crewdesk's offline engine calls, being unable to reason: each useful tool once, in this order.
    The manager's tools (engine.py) are answered here too: delegate to the member whose role and goal are
    closest to the task, and accept the work."""
    offered = {t["name"]: t for t in tools}
    focus = task.split("\n", 1)[0].removeprefix("Task:").strip() or task[:500]
    if "delegate_work" in offered:
        roles = offered["delegate_work"]["parameters"]["properties"]["member"]["enum"]
        # The tool's description lists "- role: goal" for each member: match the task against the goals.
        lines = offered["delegate_work"].get("description", "").splitlines()
        labels = [next((ln[2:] for ln in lines if ln.startswith(f"- {role}:")), role) for role in roles]
        return "delegate_work", {"member": _closest(focus, roles, labels), "instructions": focus}
    if "review_work" in offered:
        return "review_work", {"verdict": "accept", "feedback": ""}
    if (
        "calculator" in offered
        and "calculator" not in called
        and (found := ARITHMETIC.search(task[:POLICY_SCAN_CHARS]))
    ):
        return "calculator", {"expression": found.group(0).strip().replace(",", "")}
    if "current_datetime" in offered and "current_datetime" not in called and ABOUT_TIME.search(task):
        return "current_datetime", {}
    if "recent_activity" in offered and "recent_activity" not in called:
        return "recent_activity", {"days": 7}
    if "search_documents" in offered and "search_documents" not in called:
        return "search_documents", {"query": focus[:500]}
    return None


def _closest(text: str, options: list[str], labels: list[str]) -> str:
    from saas.llm.embeddings import embed_local

    vectors = embed_local([text, *labels])
    scores = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
    return options[max(range(len(options)), key=scores.__getitem__)]
