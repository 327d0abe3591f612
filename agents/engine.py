"""The crew engine: runs one claimed Run to its end, on the gateway, recording and publishing every step.

Sequential: the tasks in order, each by its agent, each receiving the outputs of the tasks named in its
`context`. Hierarchical: a manager (on the crew's default model) delegates each task to a member by calling
`delegate_work` (the member must exist; one correction is allowed, then the run fails), the member does it,
and the manager reviews it with `review_work`: accept, or send it back once with feedback.

An agent works in turns: each turn is one streamed gateway call offering its tools; tool calls are run and
their results given back, until the model answers (or its `max_iterations` are used up). A JSON task's answer
is validated against its schema and asked for once more with the validation error.

Between tokens and between steps the engine checks for a cancel request (closing the stream cancels the call
upstream) and for its lease (a run taken over by another delivery stops here). Before each call it checks the
budget, and after each call it adds the call's cost from the ledger row. A resumed run (after its worker died)
skips the tasks whose output was recorded.
"""

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jsonschema
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents import definitions, run_events
from agents.models import Run, RunStep
from agents.tools import TOOLS, call_tool
from saas.core import crypto
from saas.core.redis import get_redis
from saas.llm import gateway, local_engine, tracing
from saas.llm.models import LLMCall
from saas.llm.providers import ChatRequest, LLMError
from saas.llm.tool_protocol import ToolCall

CANCEL_POLL_SECONDS = 0.25
MANAGER = "manager"
# How an answer says it has none: the offline engine's two replies, and the wording the agents are asked to use.
NO_ANSWER_OPENINGS = (local_engine.NOTHING_FOUND, local_engine.NO_CONTEXT, "I could not find")


def usable(text: str) -> bool:
    """Whether a task's output answers anything: not empty, and not a reply that found nothing to answer with."""
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith(NO_ANSWER_OPENINGS)


def cancel_key(run_id: Any) -> str:
    return f"crewdesk:run-cancel:{run_id}"


class RunStopped(Exception):
    """Ends a run early: failed with a code and a reason, or cancelled."""

    def __init__(self, code: str, message: str, *, status: str = Run.Status.FAILED, output: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.output = code, message, status, output


class LeaseLost(Exception):
    """Another delivery of the task owns the run now: stop without touching it."""


@dataclass
class Reply:
    text: str
    tool_calls: list[ToolCall]


@dataclass
class Engine:
    run: Run
    lease: uuid.UUID
    definition: dict[str, Any] = field(init=False)
    caller: gateway.Caller = field(init=False)
    seq: int = field(init=False)
    _cancel_checked: float = 0.0
    _last_role: str = ""  # who produced the output being recorded
    # The system prompt version each role uses (saas/llm/prompts.py), resolved once per run: crew.manager, and
    # crew.agent.<role> (or crew.agent).
    _prompts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.definition = self.run.definition
        self.caller = gateway.Caller(
            org=self.run.organization, feature="crew", user=self.run.started_by, api_key=self.run.api_key,
            trace_id=str(self.run.pk),
        )  # fmt: skip
        last = RunStep.objects.for_org(self.run.organization).filter(run=self.run).order_by("-seq").first()
        self.seq = last.seq + 1 if last else 1

    # --- The run -------------------------------------------------------------------------------------------

    def execute(self) -> str:
        """The final output; raises RunStopped or LeaseLost. The run is one trace (saas/llm/tracing.py), under
        the run's id: a span per task, with its model and tool calls inside."""
        with tracing.trace(**tracing.for_caller(
            self.caller, "crew_run", f"Crew run: {self.definition.get('name', '')}", subject_id=str(self.run.pk),
            trace_id=self.run.pk, resumable=True,
        )):  # fmt: skip
            return self._execute()

    def _execute(self) -> str:
        outputs = self._recorded_outputs()
        agents = {agent["role"]: agent for agent in self.definition["agents"]}
        hierarchical = self.definition.get("process") == "hierarchical"
        if not outputs:
            plan = [f"{t['name']}: {t.get('agent') or 'the manager decides'}" for t in self.definition["tasks"]]
            self._step(RunStep.Kind.PLAN, MANAGER if hierarchical else "", "", f"{len(plan)} tasks, "
                       f"{'delegated by a manager' if hierarchical else 'in order'}:\n" + "\n".join(plan))  # fmt: skip
        for task in self.definition["tasks"]:
            if task["name"] in outputs:
                continue  # finished before this run's worker was lost
            with tracing.span("step", f"Task {task['name']}", task=task["name"]) as span:
                if hierarchical:
                    output = self._managed(task, agents, outputs)
                else:
                    output = self._work(agents[task["agent"]], task, outputs)
                if span is not None:
                    span.attributes["agent"] = self._last_role
                self._step(RunStep.Kind.OUTPUT, self._last_role, task["name"], output)
            outputs[task["name"]] = output
            if (recorder := tracing.current()) is not None:
                recorder.flush()  # a long run's trace shows each task as it ends
        return self._delivered(outputs)

    def _delivered(self, outputs: dict[str, str]) -> str:
        """The last task's output is what the run delivers: when it answers nothing, the run fails and says
        which tasks found nothing (a JSON output that matched its schema is an answer)."""
        last = self.definition["tasks"][-1]
        final = outputs[last["name"]]
        if last.get("output_format") == "json" or usable(final):
            return final
        empty = [name for name, text in outputs.items() if not usable(text)]
        if len(empty) == len(outputs):
            reason = (f"No task produced a usable answer: {_listed(empty)} found nothing in the documents or "
                      "context to answer with.")  # fmt: skip
        else:
            reason = (f"The final task {last['name']!r} produced no usable answer ({_listed(empty)} found nothing "
                      "to answer with).")  # fmt: skip
        hint = " Add documents that cover the inputs, or connect a model provider, and run it again."
        raise RunStopped("no_answer", reason + hint, output=final)

    def _recorded_outputs(self) -> dict[str, str]:
        steps = RunStep.objects.for_org(self.run.organization).filter(run=self.run, kind=RunStep.Kind.OUTPUT)
        return {step.task_name: crypto.decrypt(step.content_encrypted) for step in steps.order_by("seq")}

    # --- Hierarchical: delegate, work, review ----------------------------------------------------------------

    def _managed(self, task: dict[str, Any], agents: dict[str, Any], outputs: dict[str, str]) -> str:
        member, instructions = self._delegate(task, agents)
        output = self._work(agents[member], task, outputs, instructions=instructions)
        verdict, feedback = self._review(task, member, output)
        if verdict == "revise":
            output = self._work(agents[member], task, outputs, instructions=instructions, feedback=feedback)
        return output

    def _prompt(self, role: str, key: str) -> Any:
        if role not in self._prompts:
            self._prompts[role] = gateway.resolve_prompt(caller=self.caller, key=key)
        return self._prompts[role]

    def _manager_messages(self, agents: dict[str, Any], ask: str) -> list[dict[str, Any]]:
        members = "\n".join(f"- {role}: {agent['goal']}" for role, agent in agents.items())
        prompt = self._prompt(MANAGER, "crew.manager")
        return [
            {"role": "system", "content": prompt.render(crew=repr(self.definition["name"]), members=members)},
            {"role": "user", "content": ask},
        ]

    def _delegate(self, task: dict[str, Any], agents: dict[str, Any]) -> tuple[str, str]:
        roles = list(agents)
        members = "\n".join(f"- {role}: {agents[role]['goal']}" for role in roles)
        tool = {"type": "function", "function": {
            "name": "delegate_work",
            "description": f"Give the task to one member of the crew, with instructions. Members:\n{members}",
            "parameters": {"type": "object", "required": ["member", "instructions"], "properties": {
                "member": {"type": "string", "enum": roles},
                "instructions": {"type": "string"}}},
        }}  # fmt: skip
        ask = self._task_text(task, with_expected=True)
        if task.get("agent"):
            ask += f"\nSuggested member: {task['agent']}"
        messages = self._manager_messages(agents, ask)
        problem = ""
        for _ in range(2):
            reply = self._call(messages, [tool], MANAGER, task["name"], self.definition["default_model"])
            call = next((c for c in reply.tool_calls if c.name == "delegate_work"), None)
            arguments = _json_object(call.arguments) if call else None
            if call is None:
                problem = "the manager answered without calling delegate_work"
            elif arguments is None:
                problem = f"the arguments of delegate_work are not a JSON object: {call.arguments[:200]!r}"
            elif arguments.get("member") not in agents:
                problem = f"the manager delegated to {arguments.get('member')!r}, who is not in the crew"
            else:
                member, instructions = arguments["member"], str(arguments.get("instructions") or "")
                self._step(RunStep.Kind.PLAN, MANAGER, task["name"], f"Delegated to {member}: {instructions}",
                           {"action": "delegate", "member": member})  # fmt: skip
                return member, instructions
            correction = f"That is not valid: {problem}. Call delegate_work with one of: {', '.join(roles)}."
            self._step(RunStep.Kind.PLAN, MANAGER, task["name"], correction, {"action": "delegate", "error": problem})
            messages += _tool_exchange(reply, correction)
        raise RunStopped("invalid_delegation", f"Task {task['name']!r} could not be delegated: {problem}.")

    def _review(self, task: dict[str, Any], member: str, output: str) -> tuple[str, str]:
        tool = {"type": "function", "function": {
            "name": "review_work",
            "description": "Accept the member's work, or send it back once with what to change.",
            "parameters": {"type": "object", "required": ["verdict"], "properties": {
                "verdict": {"type": "string", "enum": ["accept", "revise"]},
                "feedback": {"type": "string"}}},
        }}  # fmt: skip
        agents = {agent["role"]: agent for agent in self.definition["agents"]}
        task_text = self._task_text(task, with_expected=True)
        ask = f"{task_text}\n\n{member} handed back:\n{output}\n\nReview it with review_work."
        reply = self._call(self._manager_messages(agents, ask), [tool], MANAGER, task["name"],
                           self.definition["default_model"])  # fmt: skip
        call = next((c for c in reply.tool_calls if c.name == "review_work"), None)
        arguments = _json_object(call.arguments) if call else None
        verdict = arguments.get("verdict") if arguments else None
        if verdict not in ("accept", "revise"):
            # A malformed review does not throw the work away: it is accepted, and the step says why.
            self._step(RunStep.Kind.PLAN, MANAGER, task["name"], "The review was not valid; the work is accepted.",
                       {"action": "review", "verdict": "accept", "error": "invalid review"})  # fmt: skip
            return "accept", ""
        feedback = str((arguments or {}).get("feedback") or "")
        text = "Accepted." if verdict == "accept" else f"Sent back to {member}: {feedback}"
        self._step(RunStep.Kind.PLAN, MANAGER, task["name"], text, {"action": "review", "verdict": verdict})
        return verdict, feedback

    # --- An agent's work on a task -----------------------------------------------------------------------

    def _task_text(self, task: dict[str, Any], *, with_expected: bool = False) -> str:
        inputs = self.run.inputs or {}
        text = f"Task: {definitions.fill(task['description'], inputs)}"
        if with_expected and task.get("expected_output"):
            text += f"\nExpected output: {definitions.fill(task['expected_output'], inputs)}"
        return text

    def _work(
        self, agent: dict[str, Any], task: dict[str, Any], outputs: dict[str, str], *, instructions: str = "",
        feedback: str = "",
    ) -> str:  # fmt: skip
        self._last_role = agent["role"]
        key = "crew.agent." + re.sub(r"[^a-z0-9_-]+", "-", agent["role"].lower()).strip("-")
        persona = self._prompt(agent["role"], key).render(role=agent["role"], crew=repr(self.definition["name"]),
                                                           goal=agent["goal"])  # fmt: skip
        if agent.get("instructions"):
            persona += f"\n{agent['instructions']}"
        if task.get("expected_output"):
            persona += f"\nExpected output: {definitions.fill(task['expected_output'], self.run.inputs or {})}"
        json_task = task.get("output_format") == "json"
        if json_task:
            persona += ("\nAnswer with only a JSON value (no prose, no code fence) that matches this JSON Schema: "
                        + json.dumps(task["output_schema"]))  # fmt: skip
        messages: list[dict[str, Any]] = [{"role": "system", "content": persona}]
        for name in task.get("context") or []:
            messages.append({"role": "user", "content": f"Output of the earlier task {name!r}:\n{outputs[name]}"})
        ask = self._task_text(task)
        if instructions and instructions.strip() not in ask:  # a manager repeating the task adds nothing
            ask += f"\nInstructions from the manager: {instructions}"
        if feedback:
            ask += f"\nYour previous answer was sent back with this feedback: {feedback}"
        messages.append({"role": "user", "content": ask})
        tools = [TOOLS[name].spec() for name in agent.get("tools") or []]
        model = agent.get("model") or self.definition["default_model"]
        text = self._converse(agent, task, messages, tools, model, agent.get("max_iterations") or 5)
        if not json_task:
            return text
        problem = _json_problem(text, task["output_schema"])
        if problem is None:
            return _unfenced(text)
        self._step(RunStep.Kind.MESSAGE, agent["role"], task["name"], f"The output is not valid JSON for the "
                   f"task's schema: {problem}. Asking once more.", {"error": "invalid_output"})  # fmt: skip
        messages += [
            {"role": "assistant", "content": text},
            {"role": "user", "content": f"That output is not valid: {problem}. Reply with only the corrected JSON."},
        ]
        text = self._converse(agent, task, messages, [], model, 1)
        problem = _json_problem(text, task["output_schema"])
        if problem is not None:
            raise RunStopped("invalid_output", f"Task {task['name']!r} gave output that does not match its JSON "
                                               f"Schema, twice: {problem}")  # fmt: skip
        return _unfenced(text)

    def _converse(
        self, agent: dict[str, Any], task: dict[str, Any], messages: list[dict[str, Any]], tools: list[dict[str, Any]],
        model: str, iterations: int,
    ) -> str:  # fmt: skip
        allowed = [t["function"]["name"] for t in tools]
        for turn in range(iterations):
            if tools and turn == iterations - 1:
                messages.append({"role": "user", "content": "This is your last turn: give your final answer now, "
                                                            "without calling a tool."})  # fmt: skip
            reply = self._call(messages, tools, agent["role"], task["name"], model)
            if not reply.tool_calls:
                return reply.text
            if turn == iterations - 1:
                break
            messages.append({"role": "assistant", "content": reply.text or None,
                             "tool_calls": [c.as_message_part() for c in reply.tool_calls]})  # fmt: skip
            for call in reply.tool_calls:
                if self._cancel_requested(throttled=False):  # the lease is checked when the step is written
                    raise RunStopped("cancelled", "Cancelled.", status=Run.Status.CANCELLED)
                self._step(RunStep.Kind.TOOL_CALL, agent["role"], task["name"], f"{call.name}({call.arguments})",
                           {"tool": call.name, "call_id": call.id})  # fmt: skip
                started = time.perf_counter()
                with tracing.span("tool", call.name, tool=call.name, agent=agent["role"]) as span:
                    result = call_tool(name=call.name, arguments=call.arguments, caller=self.caller, allowed=allowed)
                    if span is not None:
                        span.status = "ok" if result.ok else "error"
                        span.attributes["citations"] = len(result.citations or [])
                self._step(
                    RunStep.Kind.TOOL_RESULT, agent["role"], task["name"], result.text,
                    {"tool": call.name, "call_id": call.id, "ok": result.ok, "citations": result.citations},
                    llm_call_id=result.llm_call_id, latency_ms=round((time.perf_counter() - started) * 1000),
                )  # fmt: skip
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.text})
        raise RunStopped("max_iterations", f"The {agent['role']} used its {iterations} turns on task "
                                           f"{task['name']!r} without giving an answer.")  # fmt: skip

    # --- One gateway call --------------------------------------------------------------------------------

    def _call(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], role: str, task: str,
              model: str) -> Reply:  # fmt: skip
        self._check_in()
        self._check_budget()
        call_id = uuid.uuid4()
        prompt = self._prompts.get(role)
        request = ChatRequest(list(messages), tools=tools or None, **(prompt.request_options() if prompt else {}))
        model = prompt.model_for(model) if prompt else model
        parts: list[str] = []
        end: gateway.GatewayStreamEnd | None = None
        started = time.perf_counter()
        cancelled = False
        try:
            stream = gateway.chat_stream(caller=self.caller, model=model, request=request, call_id=call_id,
                                         prompt=prompt)  # fmt: skip
            try:
                for item in stream:
                    if isinstance(item, gateway.GatewayStreamEnd):
                        end = item
                        break
                    parts.append(item)
                    run_events.publish(self.run.pk, {"type": "token", "agent": role, "task": task, "text": item})
                    if self._cancel_requested(throttled=True):
                        cancelled = True
                        break
            finally:
                stream.close()  # a stream closed early is cancelled upstream and recorded as such
        except LLMError as error:
            self._step(RunStep.Kind.MESSAGE, role, task, "".join(parts), {"error": error.kind, "model": model},
                       llm_call_id=str(call_id), latency_ms=round((time.perf_counter() - started) * 1000))  # fmt: skip
            raise RunStopped(error.kind, f"The model call for task {task!r} failed: {error.message}") from error
        latency = round((time.perf_counter() - started) * 1000)
        if cancelled or end is None:
            self._step(RunStep.Kind.MESSAGE, role, task, "".join(parts), {"cancelled": True, "model": model},
                       llm_call_id=str(call_id), latency_ms=latency)  # fmt: skip
            raise RunStopped("cancelled", "Cancelled.", status=Run.Status.CANCELLED)
        self._step(RunStep.Kind.MESSAGE, role, task, end.text,
                   {"model": end.model, "engine": end.engine, "tool_calls": [c.name for c in end.tool_calls]},
                   llm_call_id=end.call_id, latency_ms=latency,
                   usage=(end.usage.prompt_tokens, end.usage.completion_tokens, end.cost_usd))  # fmt: skip
        self._check_budget()
        return Reply(end.text, end.tool_calls)

    # --- Bookkeeping -------------------------------------------------------------------------------------

    def _step(
        self, kind: str, role: str, task: str, content: str, data: dict[str, Any] | None = None, *,
        llm_call_id: str | None = None, latency_ms: int = 0, usage: tuple[int, int, Decimal] | None = None,
    ) -> RunStep:  # fmt: skip
        """`usage` (prompt tokens, completion tokens, cost) as the ledger row holds them; without it, they are read
        from the row (a failed or cancelled call, a tool's embedding)."""
        org = self.run.organization
        if usage is None and llm_call_id:
            call = LLMCall.objects.for_org(org).filter(pk=llm_call_id).first()
            usage = (call.prompt_tokens, call.completion_tokens, call.cost_usd) if call else None
            llm_call_id = llm_call_id if call else None
        prompt_tokens, completion_tokens, cost = usage or (0, 0, Decimal(0))
        tokens = (prompt_tokens, completion_tokens)
        with transaction.atomic():  # the step and the run's totals together, and only while the run is ours
            updated = Run.objects.for_org(org).filter(pk=self.run.pk, lease=self.lease).update(
                heartbeat_at=timezone.now(), prompt_tokens=F("prompt_tokens") + tokens[0],
                completion_tokens=F("completion_tokens") + tokens[1], cost_usd=F("cost_usd") + cost,
            )  # fmt: skip
            if not updated:
                raise LeaseLost
            step = RunStep.objects.for_org(org).create(
                organization=org, run=self.run, seq=self.seq, attempt=self.run.attempts, agent_role=role[:64],
                task_name=task[:64], kind=kind, content_encrypted=crypto.encrypt(content), data=data or {},
                llm_call_id=llm_call_id, prompt_tokens=tokens[0], completion_tokens=tokens[1], cost_usd=cost,
                latency_ms=latency_ms,
            )  # fmt: skip
        self.seq += 1
        self.run.cost_usd += cost
        self.run.prompt_tokens += tokens[0]
        self.run.completion_tokens += tokens[1]
        run_events.publish(self.run.pk, {"type": "step", "step": step_json(step, content)})
        return step

    def _check_in(self) -> None:
        """Between steps: still ours, and not cancelled."""
        run = Run.objects.for_org(self.run.organization).filter(pk=self.run.pk).only("lease", "cancel_requested_at")
        current = run.first()
        if current is None or current.lease != self.lease:
            raise LeaseLost
        if current.cancel_requested_at is not None or self._cancel_requested(throttled=False):
            raise RunStopped("cancelled", "Cancelled.", status=Run.Status.CANCELLED)

    def _cancel_requested(self, *, throttled: bool) -> bool:
        now = time.monotonic()
        if throttled and now - self._cancel_checked < CANCEL_POLL_SECONDS:
            return False
        self._cancel_checked = now
        try:
            return bool(get_redis().exists(cancel_key(self.run.pk)))
        except Exception:
            return False  # Redis down: the database check between steps still sees a cancel

    def _check_budget(self) -> None:
        budget = self.definition.get("budget_usd")
        if budget is not None and self.run.cost_usd >= Decimal(str(budget)):
            raise RunStopped("budget_exceeded", f"Budget exceeded: this run has cost ${self.run.cost_usd:f} of its "
                                                f"${Decimal(str(budget)):f} cap.")  # fmt: skip


def step_json(step: RunStep, content: str | None = None) -> dict[str, Any]:
    return {
        "seq": step.seq, "attempt": step.attempt, "kind": step.kind, "agent": step.agent_role, "task": step.task_name,
        "content": crypto.decrypt(step.content_encrypted) if content is None else content, "data": step.data,
        "llm_call_id": str(step.llm_call_id) if step.llm_call_id else None, "prompt_tokens": step.prompt_tokens,
        "completion_tokens": step.completion_tokens, "cost_usd": f"{step.cost_usd:f}", "latency_ms": step.latency_ms,
        "created_at": step.created_at.isoformat(),
    }  # fmt: skip


def _listed(names: list[str]) -> str:
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _unfenced(text: str) -> str:
    return text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()


def _json_problem(text: str, schema: dict[str, Any]) -> str | None:
    try:
        value = json.loads(_unfenced(text))
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at character {exc.pos})"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the value"
        return f"{where}: {exc.message}"
    return None


def _tool_exchange(reply: Reply, correction: str) -> list[dict[str, Any]]:
    """The manager's invalid reply and the correction, as messages: a tool result when it called a tool."""
    if not reply.tool_calls:
        return [{"role": "assistant", "content": reply.text}, {"role": "user", "content": correction}]
    calls = [c.as_message_part() for c in reply.tool_calls]
    return [
        {"role": "assistant", "content": reply.text or None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": c.id, "content": correction} for c in reply.tool_calls),
    ]
