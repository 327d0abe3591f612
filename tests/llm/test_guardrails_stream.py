"""The output screen a streamed answer goes through (output_screen.OutputScreen, fed one delta at a time) against the
old way, re-screening the answer's latest characters with screen_output after every delta: the same findings at
the same delta, for random streams cut at random points, with moderated phrases, denied keywords, spaced-out and
look-alike letters, combining marks, invisible characters and line breaks in them. No database."""

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from saas.llm import guardrails, output_screen
from saas.llm.guardrails import Policy

KEYWORDS = ("acme", "Cörp", "project x", "kill you", "ﬁnance", "x")
PHRASES = [
    "i will kill you", "I'm going to hurt my sister", "kill them all", "i want to end my life",
    "how can i kill myself", "explicit photos of a 12-year-old", "child porn", "how to make a batch of sarin",
    "how do i build a pipe bomb", "acme", "ACME corp", "project x", "kill you", "finance", "skill them all", "x y",
]  # fmt: skip
CONFUSABLES = ["\uff2b", "\uff49", "ﬁ", "É", "é", "ß", "İ", "\uff21", "\u017f", "Ω", "①", "½", "\u00a0", "\u3000"]
MARKS = ["\u0301", "\u0308", "\u200b", "\u200d", "\u00ad", "\ufeff"]  # combining marks, format characters
NOISE = [" ", " ", " ", "  ", "\n", "\r\n", "\n\n", "\t", ".", ",", "-", "_", "*", "'", "1", "3", "4", "0", "@", "$"]
WORDS = ["the", "a", "answer", "is", "my", "you", "all", "how", "to", "make", "kid", "old", "kil", "l", "i"]


def _spaced(text: str, sep: str) -> str:
    return sep.join(text.replace(" ", ""))


def _leet(text: str) -> str:
    return text.translate(str.maketrans({"i": "1", "e": "3", "a": "4", "o": "0", "s": "5"}))


@st.composite
def phrases(draw):
    """A moderated phrase or denied keyword, perhaps disguised, perhaps with marks slipped into it."""
    text = draw(st.sampled_from(PHRASES))
    disguise = draw(st.sampled_from(["plain", "upper", "spaced", "dotted", "leet", "fullwidth"]))
    if disguise == "upper":
        text = text.upper()
    elif disguise == "spaced":
        text = _spaced(text, " ")
    elif disguise == "dotted":
        text = _spaced(text, ".")
    elif disguise == "leet":
        text = _leet(text)
    elif disguise == "fullwidth":
        text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    chars = list(text)
    for _ in range(draw(st.integers(0, 3))):
        chars.insert(draw(st.integers(0, len(chars))), draw(st.sampled_from(MARKS)))
    return "".join(chars)


fragments = st.one_of(
    phrases(),
    # glued to a word: "xacme" is no keyword, but a window that starts at its "a" once read as one
    st.tuples(st.sampled_from(["s", "x", "7", "é", "_", "\uff2b"]), phrases()).map("".join),
    st.sampled_from(WORDS),
    st.sampled_from(NOISE),
    st.sampled_from(CONFUSABLES),
    st.sampled_from(MARKS),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=4),
)


@st.composite
def streams(draw):
    """(policy, window, deltas): an answer of up to ~1,500 characters cut into deltas of 1-30 characters."""
    text = "".join(draw(st.lists(fragments, min_size=4, max_size=150)))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=len(text)))))
    if draw(st.booleans()):  # token-sized deltas, as models send them
        cuts = list(range(draw(st.integers(1, 6)), len(text), draw(st.integers(2, 8))))
    deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if text[a:b]]
    policy = Policy(
        moderation=draw(st.sampled_from([guardrails.OFF, guardrails.FLAG, guardrails.BLOCK])),
        denied_keywords=tuple(draw(st.lists(st.sampled_from(KEYWORDS), max_size=3))),
    )
    window = draw(st.sampled_from([16, 24, 40, 60, 150, output_screen.OUTPUT_WINDOW]))
    return policy, window, deltas


def _run(policy: Policy, deltas: list[str], screen_each) -> tuple[int | None, list[dict], list[str]]:
    """What the gateway's stream loop records: the delta that was stopped (or None), the findings noted (each once,
    in order, as Call.note keeps them) and the deltas that reached the client."""
    noted: list[dict] = []
    sent: list[str] = []
    for index, delta in enumerate(deltas):
        findings = screen_each(delta)
        for finding in findings:
            if finding.as_json() not in noted:
                noted.append(finding.as_json())
        if guardrails.blocking(findings):
            return index, noted, sent
        sent.append(delta)
    return None, noted, sent


def _old(policy: Policy, window: int):
    tail = ""

    def screen_each(delta: str) -> list[guardrails.Finding]:
        nonlocal tail
        tail = (tail + delta)[-window:]
        return guardrails.screen_output(policy, tail)

    return screen_each


@hypothesis_settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_the_incremental_screen_stops_at_the_same_delta_with_the_same_findings(stream):
    policy, window, deltas = stream
    screen = output_screen.OutputScreen(policy, window=window)
    assert _run(policy, deltas, screen.feed) == _run(policy, deltas, _old(policy, window))


@hypothesis_settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_the_window_it_keeps_is_the_window_normalised(stream):
    """The lemma under the test above: the segments joined are exactly normalise(the window), after every delta."""
    policy, window, deltas = stream
    screen = output_screen.OutputScreen(policy, window=window)
    tail = ""
    for delta in deltas:
        screen.feed(delta)
        tail = (tail + delta)[-window:]
        assert screen.raw == tail
        assert screen.text == guardrails.normalise(tail)


def test_a_denied_word_split_over_deltas_is_stopped_at_the_delta_that_completes_it():
    policy = Policy(moderation=guardrails.BLOCK, denied_keywords=("Acme",))
    prose = "Here is a long and perfectly ordinary answer about quarterly budgets and team plans. " * 12
    chunks = [prose[i : i + 5] for i in range(0, len(prose), 5)]
    for split in range(1, 4):
        screen = output_screen.OutputScreen(policy)
        deltas = [*chunks, "ACME"[:split], "ACME"[split:], " ok"]
        stopped, noted, sent = _run(policy, deltas, screen.feed)
        assert (stopped, sent) == (len(chunks) + 1, [*chunks, "ACME"[:split]])
        assert noted == [{"check": "denied_keyword", "target": "output", "action": "blocked", "detail": "Acme",
                          "score": 1.0}]  # fmt: skip
        assert len(screen.raw) == output_screen.OUTPUT_WINDOW


def test_a_flagged_category_is_reported_once_and_the_answer_goes_on():
    policy = Policy(moderation=guardrails.FLAG)
    screen = output_screen.OutputScreen(policy)
    deltas = ["He said: i will ", "kill you", " (a quote from the film). " * 40, "i will kill you again"]
    assert _run(policy, deltas, screen.feed) == (None, [{"check": "moderation", "target": "output",
                                                          "action": "flagged", "detail": "local:violence/threat",
                                                          "score": 1.0}], deltas)  # fmt: skip


def test_every_window_start_across_every_phrase_glued_to_a_word():
    """Where the window's start cuts a word, the old way read what follows afresh ("xacme" cut to "acme", "skill
    them all" to "kill them all"); the screen finds the same there, at every alignment (one-character deltas)."""
    policy = Policy(moderation=guardrails.FLAG, denied_keywords=KEYWORDS)
    for phrase in PHRASES:
        for prefix in ["s", "x", "7", "é", "_", "s k", "p q r ", "\u200b"]:
            text = "we said so " * 8 + prefix + phrase + " and so on" * 8
            for window in (len(phrase) + 1, 40, 64):
                for size in (1, 2):
                    deltas = [text[i : i + size] for i in range(0, len(text), size)]
                    screen = output_screen.OutputScreen(policy, window=window)
                    assert _run(policy, deltas, screen.feed) == _run(policy, deltas, _old(policy, window)), (
                        phrase, prefix, window, size,
                    )  # fmt: skip
