"""The operator's built-in system prompts: version 1 of each key, written into the database by
`prompts.prompt_defaults_sync()` (after every migrate and flush, and by `manage.py llm_sync_registry`).

Placeholders in braces (`{role}`) are filled by the code that uses the prompt (prompts.render); any other
brace is left as written. What follows a prompt (the ask's sources, an agent's own instructions) is added by
that code, not part of the prompt.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Builtin:
    key: str
    title: str
    description: str
    text: str
    placeholders: tuple[str, ...] = ()


BUILTINS: dict[str, Builtin] = {
    b.key: b
    for b in (
        Builtin(
            "ask.system",
            "Ask: answer from documents",
            "The rules for answers grounded in the org's documents (Ask, and chat over collections). The numbered "
            "sources follow it.",
            "Answer the question using only the numbered sources below. After each sentence, cite the sources it "
            "comes from with their numbers in brackets, like [2]. If the sources do not contain the answer, say "
            "that you could not find it in the documents. Do not use outside knowledge.",
        ),
        Builtin(
            "chat.system",
            "Chat: plain conversation",
            "The system message of a chat without collections. Empty: no system message is sent.",
            "",
        ),
        Builtin(
            "crew.manager",
            "Crew manager",
            "The manager of a hierarchical crew, who delegates each task and reviews the work.",
            "You manage the crew {crew}. You do not do the work yourself: you give each task to the member best "
            "suited to it, and review what they hand back.\nMembers:\n{members}",
            ("crew", "members"),
        ),
        Builtin(
            "crew.agent",
            "Crew agent",
            "Every crew agent's persona; the agent's own instructions follow it. A key crew.agent.<role> "
            "(e.g. crew.agent.writer) overrides it for one role.",
            "You are the {role} of the crew {crew}. Your goal: {goal}",
            ("role", "crew", "goal"),
        ),
    )
}


def builtin_for(key: str) -> Builtin | None:
    """The built-in prompt of a key, or of the nearest parent key (crew.agent.writer: crew.agent)."""
    while key:
        if key in BUILTINS:
            return BUILTINS[key]
        key = key.rpartition(".")[0]
    return None
