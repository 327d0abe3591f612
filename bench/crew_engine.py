"""What the crew engine adds to each model call, side by side in one run.

Runs a sequential crew (one agent with the calculator, `--tasks` tasks, each a tool call and an answer) on the
fake OpenAI-compatible upstream through the real engine (`agents.crew_runs.run_execute`: claiming, a step
row per call and tool result with its lease check, live events on Redis, cancel and budget checks, the
ledger), then makes exactly the same gateway calls and tool calls in a bare loop (the baseline: what any
agent loop on our gateway must do). Prints the time per run of both and the engine's overhead per model call.

    python bench/crew_engine.py [--runs 20] [--tasks 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from stack import bench_stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=3)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from saas.llm.fake_upstream import FakeUpstreamServer

    upstream = FakeUpstreamServer().start_in_thread()  # in this process: its script is set directly
    with bench_stack(LLM_OPENAI_BASE_URL=upstream.base_url, LLM_OPENAI_API_KEY="sk-bench"):
        measure(upstream, args.runs, args.tasks)
    upstream.shutdown()


def measure(upstream, runs: int, tasks: int) -> None:  # type: ignore[no-untyped-def]
    from decimal import Decimal

    from accounts.permissions import ROLE_SCOPES, Principal
    from accounts.services import organization_create, user_create
    from agents import crew_runs, services
    from agents.models import Run, RunStep
    from agents.tools import TOOLS, call_tool
    from saas.llm import gateway
    from saas.llm.models import ModelConfig
    from saas.llm.providers import ChatRequest

    ModelConfig.objects.update_or_create(alias="bench-small", defaults={
        "upstream": "openai", "upstream_model": "fake-small", "supports_tools": True, "context_window": 32000,
        "input_price_per_mtok": Decimal("0.15"), "output_price_per_mtok": Decimal("0.60"),
    })  # fmt: skip
    user = user_create(email=f"bench-{time.time_ns()}@example.com", password=None)
    org = organization_create(name="Crew bench", owner=user)
    principal = Principal(organization=org, scopes=ROLE_SCOPES["owner"], user=user)
    crew = services.crew_create(principal=principal, spec={
        "name": "Bench", "process": "sequential", "default_model": "bench-small", "budget_usd": None,
        "agents": [{"role": "mathematician", "goal": "Compute exactly.", "tools": ["calculator"]}],
        "tasks": [{"name": f"t{i}", "agent": "mathematician", "description": f"Compute {{a}} times {i + 2}."}
                  for i in range(tasks)],
    })  # fmt: skip
    crew_runs._enqueue_run = lambda run: None  # no worker here: this process runs each run, timed
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}, {"reply": "It is 42."}]

    def queue_replies() -> None:
        with upstream.state.lock:
            upstream.state.scripts["fake-small"].extend(script * tasks)

    def engine_run() -> float:
        queue_replies()
        run, _ = crew_runs.run_start(crew=crew, inputs={"a": 6})
        started = time.perf_counter()
        status = crew_runs.run_execute(org_id=org.pk, run_id=run.pk)
        elapsed = time.perf_counter() - started
        assert status == "succeeded", Run.all_orgs.get(pk=run.pk).error
        return elapsed

    def bare_run() -> float:
        """The same calls, without the engine: messages, gateway stream, tool, gateway stream, per task."""
        queue_replies()
        caller = gateway.Caller(org=org, feature="crew", user=user)
        tools = [TOOLS["calculator"].spec()]
        started = time.perf_counter()
        for i in range(tasks):
            messages: list[dict[str, Any]] = [{"role": "system", "content": "You are the mathematician."},
                        {"role": "user", "content": f"Task: Compute 6 times {i + 2}."}]  # fmt: skip
            for _ in range(2):
                *_, end = gateway.chat_stream(caller=caller, model="bench-small",
                                              request=ChatRequest(list(messages), tools=tools))  # fmt: skip
                assert isinstance(end, gateway.GatewayStreamEnd)
                if not end.tool_calls:
                    break
                call = end.tool_calls[0]
                result = call_tool(name=call.name, arguments=call.arguments, caller=caller, allowed=["calculator"])
                messages += [{"role": "assistant", "content": None, "tool_calls": [call.as_message_part()]},
                             {"role": "tool", "tool_call_id": call.id, "content": result.text}]  # fmt: skip
        return time.perf_counter() - started

    for _ in range(3):  # warm both paths (connections, imports, the registry in memory)
        engine_run()
        bare_run()
    engine, bare = [], []
    for _ in range(runs):  # interleaved, so both see the same machine
        engine.append(engine_run())
        bare.append(bare_run())
    calls = 2 * tasks
    steps = RunStep.all_orgs.filter(run__crew=crew).count() // (runs + 3)
    e50, b50 = statistics.median(engine) * 1000, statistics.median(bare) * 1000
    e95 = sorted(engine)[int(0.95 * (runs - 1))] * 1000
    b95 = sorted(bare)[int(0.95 * (runs - 1))] * 1000
    print(
        f"crew of {tasks} tasks: {calls} model calls, {tasks} tool calls, {steps} recorded steps per run; {runs} runs"
    )
    print(f"{'measure':<28}{'bare loop':>12}{'engine':>12}{'added':>12}")
    print(f"{'run time p50 (ms)':<28}{b50:>12.1f}{e50:>12.1f}{e50 - b50:>12.1f}")
    print(f"{'run time p95 (ms)':<28}{b95:>12.1f}{e95:>12.1f}{e95 - b95:>12.1f}")
    print(f"{'added per model call (ms)':<28}{'':>12}{'':>12}{(e50 - b50) / calls:>12.2f}")


if __name__ == "__main__":
    main()
