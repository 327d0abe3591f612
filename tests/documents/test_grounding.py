"""Groundedness means support (#17): a sentence on the passage's topic that changes a number, a date, a name
or the polarity is flagged; its correct twin passes. The pairs below were written for this test, not taken from
the code's examples."""

import pytest

from documents.grounding import missing_facts

PASSAGES = [
    "Refunds are issued within 30 days of the request. Annual plans cost $1,200 per year and renew on 1 March. "
    "Support is not available on Sundays. Priya Raman leads the billing team.",
    "The Amsterdam office opened in May 2019 with 14 engineers. Customers can export their data at any time. "
    "Refund requests are reviewed by a person, never by a bot.",
]

# (wrong sentence, its correct twin)
PAIRS = [
    ("Refunds are issued within 90 days of the request.", "Refunds are issued within 30 days of the request."),
    ("Annual plans cost $1,500 per year.", "Annual plans cost $1200 per year."),
    ("Annual plans renew on 1 April.", "Annual plans renew on 1 March."),
    ("The Amsterdam office opened in May 2018.", "The Amsterdam office opened in May 2019."),
    ("The Amsterdam office opened in June 2019.", "The Amsterdam office opened in 2019, in May."),
    ("The office opened with 40 engineers.", "The office opened with 14 engineers."),
    ("Support is available on Sundays.", "Support is not available on Sundays."),
    ("Customers cannot export their data at any time.", "Customers can export their data at any time."),
    ("Refund requests are reviewed by a bot.", "Refund requests are never reviewed by a bot."),
    ("Daniel Okafor leads the billing team.", "Priya Raman leads the billing team."),
    ("The Berlin office opened in May 2019.", "The Amsterdam office opened in May 2019."),
]


@pytest.mark.parametrize(("wrong", "right"), PAIRS)
def test_a_changed_fact_is_flagged_and_its_correct_twin_passes(wrong, right):
    assert missing_facts(wrong, PASSAGES), wrong
    assert missing_facts(right, PASSAGES) == [], right


def test_it_says_what_is_missing():
    assert missing_facts("Refunds are issued within 90 days.", PASSAGES) == ["the number 90"]
    assert missing_facts("Support is available on Sundays.", PASSAGES) == ["a missing negation"]


def test_sentences_without_facts_pass():
    assert missing_facts("Refunds are handled by people.", PASSAGES) == []
