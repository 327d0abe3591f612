"""Model providers: the interface and errors (base.py), one module per protocol (openai.py, anthropic.py,
gemini.py); the local engine is saas/llm/local_engine.py. The old `saas.llm.providers` names stay importable."""

from saas.llm.providers.base import (
    BadRequest,
    Cancelled,
    ChatRequest,
    ChatResult,
    CircuitOpen,
    ContentFiltered,
    ContextTooLong,
    EmbeddingResult,
    LLMError,
    PaymentOverdue,
    QuotaExceeded,
    RateLimited,
    StreamEnd,
    Timeout,
    Upstream,
    UpstreamUnavailable,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)
from saas.llm.providers.openai import OpenAIProvider

__all__ = [
    "BadRequest", "Cancelled", "ChatRequest", "ChatResult", "CircuitOpen", "ContentFiltered", "ContextTooLong",
    "EmbeddingResult", "LLMError", "OpenAIProvider", "PaymentOverdue", "QuotaExceeded", "RateLimited", "StreamEnd",
    "Timeout", "Upstream", "UpstreamUnavailable", "Usage", "estimate_prompt_tokens", "estimate_tokens",
]  # fmt: skip
