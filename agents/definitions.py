"""A crew's definition as one document, checked as a whole before anything is saved.

The shape (field types, lengths) is the API serializers' job; this module checks what only the whole can
tell: roles and task names unique, every task's agent and context known, no cycle, models this org can use,
known tools, valid JSON Schemas, valid cron, placeholders well formed. The same document, normalised, is
what a run keeps as its `definition`.
"""

import graphlib
import string
from decimal import Decimal
from typing import Any

import jsonschema
from croniter import croniter

from agents.tools import TOOLS
from saas.core.errors import ApplicationError
from saas.llm import gateway
from saas.llm.providers import LLMError

MAX_AGENTS = 12
MAX_TASKS = 20
MAX_ITERATIONS = 20
MAX_INPUT_CHARS = 10_000


class InvalidCrew(ApplicationError):
    code = "invalid_crew"

    def __init__(self, problems: dict[str, list[str]]) -> None:
        first_field, first = next(iter(problems.items()))
        super().__init__(f"The crew definition is not valid: {first_field}: {first[0]}", details=problems)


def placeholders(text: str) -> list[str]:
    """The `{name}` fields of a description, in order; ValueError for a malformed one."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{{{name}}} is not a placeholder: use {{name}} with letters, digits and _")
        names.append(name)
    return names


def fill(text: str, inputs: dict[str, Any]) -> str:
    return text.format_map({name: str(inputs[name]) for name in placeholders(text)})


def inputs_needed(definition: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for task in definition["tasks"]:
        for name in placeholders(task["description"]) + placeholders(task.get("expected_output", "")):
            seen.setdefault(name, None)
    return list(seen)


def check(*, org: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """The definition, normalised (defaults filled), or InvalidCrew listing every problem by field."""
    problems: dict[str, list[str]] = {}

    def problem(where: str, message: str) -> None:
        problems.setdefault(where, []).append(message)

    agents = spec.get("agents") or []
    tasks = spec.get("tasks") or []
    hierarchical = spec.get("process") == "hierarchical"
    if not agents or len(agents) > MAX_AGENTS:
        problem("agents", f"A crew has 1 to {MAX_AGENTS} agents.")
    if not tasks or len(tasks) > MAX_TASKS:
        problem("tasks", f"A crew has 1 to {MAX_TASKS} tasks.")

    _check_model(org, spec.get("default_model") or "auto", "default_model", problem)
    roles: dict[str, int] = {}
    for index, agent in enumerate(agents):
        role = agent["role"].strip()
        if role.lower() in {r.lower() for r in roles}:
            problem(f"agents[{index}].role", f"Another agent already has the role {role!r}.")
        roles[role] = index
        if agent.get("model"):
            _check_model(org, agent["model"], f"agents[{index}].model", problem)
        for tool in agent.get("tools") or []:
            if tool not in TOOLS:
                problem(f"agents[{index}].tools", f"Unknown tool {tool!r}; the tools are {', '.join(TOOLS)}.")
        if len(set(agent.get("tools") or [])) != len(agent.get("tools") or []):
            problem(f"agents[{index}].tools", "A tool is listed twice.")

    names: dict[str, int] = {}
    graph: dict[str, list[str]] = {}
    for index, task in enumerate(tasks):
        name = task["name"]
        if name in names:
            problem(f"tasks[{index}].name", f"Another task is already named {name!r}.")
        names[name] = index
        if task.get("agent"):
            if task["agent"] not in roles:
                problem(f"tasks[{index}].agent", f"No agent has the role {task['agent']!r}.")
        elif not hierarchical:
            problem(f"tasks[{index}].agent", "Name the agent that does this task (only a hierarchical crew's "
                                             "manager chooses).")  # fmt: skip
        graph[name] = list(task.get("context") or [])
        for field in ("description", "expected_output"):
            try:
                placeholders(task.get(field) or "")
            except ValueError as exc:
                problem(f"tasks[{index}].{field}", str(exc))
        _check_output(task, f"tasks[{index}]", problem)

    for index, task in enumerate(tasks):
        for ref in task.get("context") or []:
            if ref not in names:
                problem(f"tasks[{index}].context", f"No task is named {ref!r}.")
    try:
        tuple(
            graphlib.TopologicalSorter({n: [r for r in refs if r in names] for n, refs in graph.items()}).static_order()
        )
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        problem("tasks", f"The tasks' context forms a cycle: {cycle}.")
    else:
        for index, task in enumerate(tasks):
            for ref in task.get("context") or []:
                if ref in names and names[ref] >= index:
                    problem(f"tasks[{index}].context", f"{ref!r} runs after {task['name']!r}: reorder the tasks.")

    schedule = spec.get("schedule") or {}
    if schedule.get("cron") and not croniter.is_valid(schedule["cron"]):
        problem("schedule.cron", f"{schedule['cron']!r} is not a five-field cron expression.")
    if schedule.get("enabled") and not schedule.get("cron"):
        problem("schedule.cron", "A schedule needs a cron expression.")
    budget = spec.get("budget_usd")
    try:
        budget = Decimal(str(budget)) if budget is not None else None
    except ArithmeticError:
        budget = None
        problem("budget_usd", "The budget is a number of US dollars.")
    if budget is not None and (not budget.is_finite() or budget <= 0):
        problem("budget_usd", "The budget is a positive number of US dollars; leave it empty for no cap.")
    if problems:
        raise InvalidCrew(problems)
    normalised = {**spec, "default_model": spec.get("default_model") or "auto",
                  "budget_usd": str(budget) if budget is not None else None}  # fmt: skip
    _check_schedule_inputs(schedule, inputs_needed(normalised), problem)
    if problems:
        raise InvalidCrew(problems)
    return normalised


def _check_schedule_inputs(schedule: dict[str, Any], needed: list[str], problem: Any) -> None:
    """The inputs a scheduled run will start with, held to the rules of a run's inputs now, when a person is
    there to fix them, rather than failing at the scheduled time: only the tasks' placeholders, each a string
    or a number, and every one filled when the schedule is on."""
    inputs = schedule.get("inputs") or {}
    if not isinstance(inputs, dict):
        problem("schedule.inputs", "The schedule's inputs are an object of names to values.")
        return
    for name, value in inputs.items():
        if name not in needed:
            used = ", ".join(needed) or "none"
            problem(f"schedule.inputs.{name}", f"No task uses {{{name}}}; the tasks use: {used}.")
        elif not isinstance(value, str | int | float) or isinstance(value, bool) or len(str(value)) > MAX_INPUT_CHARS:
            problem(f"schedule.inputs.{name}", f"An input is a string or a number of at most {MAX_INPUT_CHARS} "
                                               "characters.")  # fmt: skip
    if schedule.get("enabled"):
        for name in needed:
            if not str(inputs.get(name, "")).strip():
                problem(f"schedule.inputs.{name}", f"A scheduled run needs this input (a task uses {{{name}}}).")


def _check_model(org: Any, alias: str, where: str, problem: Any) -> None:
    try:
        gateway.check_chat_model(org=org, alias=alias)
    except LLMError as exc:
        problem(where, exc.message)


def _check_output(task: dict[str, Any], where: str, problem: Any) -> None:
    schema = task.get("output_schema")
    if task.get("output_format") == "json":
        if not isinstance(schema, dict):
            problem(f"{where}.output_schema", "A JSON output needs a JSON Schema (an object).")
            return
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            problem(f"{where}.output_schema", f"Not a valid JSON Schema: {exc.message}.")
    elif schema is not None:
        problem(f"{where}.output_schema", "Only a task with output_format json has a schema.")
