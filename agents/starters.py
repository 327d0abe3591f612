"""Ready-made crews, created in one click (or `POST /api/v1/crews/from-starter`), then edited like any other."""

import copy
from typing import Any

STARTERS: dict[str, dict[str, Any]] = {
    "research-brief": {
        "title": "Research brief",
        "summary": "A researcher searches your documents, a writer drafts a brief, an editor tightens it.",
        "name": "Research brief",
        "description": "A one-page brief on a topic, from the org's documents, with citations.",
        "process": "sequential",
        "agents": [
            {"role": "researcher", "goal": "Find what the org's documents say about the topic, with sources.",
             "instructions": "Search before answering. Quote passages and keep their [n] citations.",
             "tools": ["search_documents"]},
            {"role": "writer", "goal": "Turn research notes into a clear, well-structured brief.",
             "instructions": "Use only facts from the research notes; keep their citations."},
            {"role": "editor", "goal": "Make the brief accurate, short and easy to read.",
             "instructions": "Cut repetition, keep every citation, flag any claim without a source."},
        ],
        "tasks": [
            {"name": "research", "agent": "researcher",
             "description": "Research {topic} in the org's documents.",
             "expected_output": "The relevant facts about {topic}, each with its [n] citation."},
            {"name": "draft", "agent": "writer", "context": ["research"],
             "description": "Write a one-page brief about {topic} from the research notes.",
             "expected_output": "A brief with a title, a summary and the key points, with citations."},
            {"name": "edit", "agent": "editor", "context": ["draft"],
             "description": "Edit the brief about {topic}.",
             "expected_output": "The final brief."},
        ],
    },
    "podcast-script": {
        "title": "Podcast script",
        "summary": "From a topic to a two-host podcast script grounded in your documents.",
        "name": "Podcast script",
        "description": "A short podcast episode about a topic, with lines for two hosts.",
        "process": "sequential",
        "agents": [
            {"role": "researcher", "goal": "Collect facts and quotable details about the topic from the documents.",
             "tools": ["search_documents"]},
            {"role": "scriptwriter", "goal": "Write a lively, accurate podcast script for two hosts.",
             "instructions": "Write each line as 'HOST A:' or 'HOST B:' followed by what they say."},
        ],
        "tasks": [
            {"name": "research", "agent": "researcher",
             "description": "Gather facts about {topic} for a podcast episode.",
             "expected_output": "Facts about {topic} with their citations."},
            {"name": "script", "agent": "scriptwriter", "context": ["research"],
             "description": "Write a podcast script about {topic} for two hosts.",
             "expected_output": "An intro, a conversation in HOST A / HOST B lines, and an outro."},
        ],
    },
    "weekly-report": {
        "title": "Weekly report",
        "summary": "What happened this week: new documents, crew runs and what they say. Schedulable.",
        "name": "Weekly report",
        "description": "A summary of the org's recent documents and activity.",
        "process": "sequential",
        "schedule": {"cron": "0 8 * * 1", "inputs": {}, "enabled": False},
        "agents": [
            {"role": "analyst", "goal": "Find out what changed in the org this week.",
             "tools": ["recent_activity", "search_documents", "current_datetime"]},
            {"role": "writer", "goal": "Write a short, skimmable weekly report.",
             "instructions": "Group by theme; start with the three most important points."},
        ],
        "tasks": [
            {"name": "activity", "agent": "analyst",
             "description": "List the org's activity of the last 7 days: new documents and crew runs.",
             "expected_output": "The new documents and runs, with what the documents are about."},
            {"name": "report", "agent": "writer", "context": ["activity"],
             "description": "Write this week's report from the activity notes.",
             "expected_output": "A weekly report in a few short sections."},
        ],
    },
}  # fmt: skip


def for_org(starter: dict[str, Any]) -> dict[str, Any]:
    """A crew definition from a starter (a copy, without the catalogue's own fields)."""
    spec = copy.deepcopy({k: v for k, v in starter.items() if k not in ("title", "summary")})
    spec.setdefault("default_model", "auto")
    spec.setdefault("budget_usd", None)
    for agent in spec["agents"]:
        agent.setdefault("instructions", "")
        agent.setdefault("tools", [])
        agent.setdefault("model", "")
        agent.setdefault("max_iterations", 5)
    for task in spec["tasks"]:
        task.setdefault("context", [])
        task.setdefault("output_format", "text")
        task.setdefault("output_schema", None)
    return spec
