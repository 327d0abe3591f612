"""The crew tools, called the way a model calls them: raw JSON arguments, checked, errors told back."""

import json

import pytest

from agents.tools import MAX_ARGUMENTS_CHARS, MAX_DIGITS, POLICY_SCAN_CHARS, call_tool, local_tool_policy
from documents import services as documents
from saas.llm import gateway
from tests.accounts.factories import OrganizationFactory

pytestmark = pytest.mark.django_db
ALL = ["calculator", "current_datetime", "search_documents", "recent_activity"]


@pytest.fixture
def caller(db):
    return gateway.Caller(org=OrganizationFactory(), feature="crew")


@pytest.mark.parametrize(
    ("expression", "ok", "text"),
    [
        ("6*7", True, "6*7 = 42"),
        ("(1200 * 0.15) + 3", True, "= 183"),
        ("2^10", True, "= 1024"),
        ("sqrt(16) + round(2.6)", True, "= 7"),
        ("1/0", False, "Division by zero."),
        ("__import__('os').system('ls')", False, "Not an arithmetic expression"),
        ("().__class__.__bases__", False, "Not an arithmetic expression"),
        ("9**9**9**9", False, "digits; the calculator works with numbers of up to 1,000 digits."),
        ("'a' * 10", False, "numbers only"),
    ],
)
def test_the_calculator_does_arithmetic_and_nothing_else(caller, expression, ok, text):
    result = call_tool(name="calculator", arguments=json.dumps({"expression": expression}), caller=caller,
                       allowed=ALL)  # fmt: skip
    assert result.ok is ok and text in result.text


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("calculator", "not json", "not valid JSON"),
        ("calculator", '{"expr": "1+1"}', "Invalid arguments for calculator"),
        ("calculator", '{"expression": 5}', "(expression): 5 is not of type 'string'"),
        ("shell", "{}", "Unknown tool 'shell'"),
        ("search_documents", '{"query": "x"}', "Unknown tool 'search_documents'"),  # not this agent's
    ],
)
def test_bad_calls_come_back_as_errors_the_model_can_read(caller, name, arguments, message):
    allowed = ["calculator", "current_datetime"]
    result = call_tool(name=name, arguments=arguments, caller=caller, allowed=allowed)
    assert result.ok is False and message in result.text


def test_current_datetime_in_a_time_zone_and_a_bad_one(caller):
    assert "(Europe/Paris)" in call_tool(name="current_datetime", arguments='{"timezone": "Europe/Paris"}',
                                         caller=caller, allowed=ALL).text  # fmt: skip
    bad = call_tool(name="current_datetime", arguments='{"timezone": "Mars/Olympus"}', caller=caller, allowed=ALL)
    assert bad.ok is False and "Unknown time zone" in bad.text


def test_recent_activity_lists_this_orgs_documents_only(caller):
    documents.document_upload(org=caller.org, data=b"# Ours\n\nOur refund policy.", filename="ours.md")
    documents.document_upload(org=OrganizationFactory(), data=b"# Theirs\n\nSecret plans.", filename="theirs.md")
    text = call_tool(name="recent_activity", arguments="{}", caller=caller, allowed=ALL).text
    assert "ours.md" in text and "theirs.md" not in text and "Documents added: 1" in text


def test_the_offline_policy_calls_each_useful_tool_once():
    tools = [{"name": n, "parameters": {}} for n in ("calculator", "current_datetime", "search_documents")]
    task = "Task: What is 1,200 * 3 and what do the documents say about it today?"
    assert local_tool_policy(task, tools, []) == ("calculator", {"expression": "1200 * 3"})
    assert local_tool_policy(task, tools, ["calculator"]) == ("current_datetime", {})
    assert local_tool_policy(task, tools, ["calculator", "current_datetime"]) == (
        "search_documents",
        {"query": "What is 1,200 * 3 and what do the documents say about it today?"},
    )
    assert local_tool_policy(task, tools, ["calculator", "current_datetime", "search_documents"]) is None


def _calculate(caller, expression):
    return call_tool(name="calculator", arguments=json.dumps({"expression": expression}), caller=caller, allowed=ALL)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # The audit's case: 31 s of CPU in C, then a result too long to print. Refused from an estimate.
        (
            "4000000**4000000",
            "4000000 ** 4000000 would have about 26,408,240 digits; the calculator works with "
            "numbers of up to 1,000 digits.",
        ),
        ("9**9**9", "9 ** 387420489 would have about 369,693,100 digits"),  # nested: the inner power is small
        ("2**4000000", "2 ** 4000000 would have about 1,204,120 digits"),  # under simpleeval's own power limit
        ("2**10**30", "would have far more than a thousand digits"),
        ("(10**999) ** 2", "would have about 1,998 digits"),
        ("(10**600) * (10**600)", "The product would have about 1,201 digits"),
        ("(10**999 * 9) * 9", "The result would have about 1,001 digits"),  # what the estimate lets through
        ("10**999 + 9 * 10**999", "The result would have about 1,001 digits"),
        ("2 ** 1100 / 3", "too large for a floating-point number"),  # int to float
        ("1e308 * 10", "too large for a floating-point number"),
        ("10.0 ** 400", "too large for a floating-point number"),
        ("1e999", "too large for a floating-point number"),
        ("round(5, -10**9)", "round() takes a whole number of digits between -1000 and 1000"),
        ("sqrt(-4)", "square root of a negative number"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 << 10**9", "the operator LShift is not offered"),  # shifts and bit operators are not offered
        ("'ab' * 10**9", "numbers only"),  # no strings, so no string repetition
        ("'%s' % 1", "numbers only"),
        ("f'{1:>999999999}'", "Not an arithmetic expression"),  # no f-strings (their width allocates)
        ("[1] * 10**9", "Not an arithmetic expression"),
        ("True + 1", "numbers only"),
        ("1 if 2 else 3", "Not an arithmetic expression"),
    ],
)
def test_the_calculator_refuses_what_would_blow_up_before_computing_it(caller, expression, message):
    result = _calculate(caller, expression)
    assert result.ok is False and message in result.text, result.text


def test_the_calculator_computes_up_to_the_limit_exactly(caller):
    assert _calculate(caller, "10**999").text == f"10**999 = 1{'0' * 999}"  # MAX_DIGITS digits
    assert _calculate(caller, "10**999 * 9 + (10**999 - 1)").text.endswith("= " + "9" * MAX_DIGITS)
    assert _calculate(caller, "2**3321").ok and not _calculate(caller, "2**3322").ok  # 1,000 and 1,001 digits
    assert _calculate(caller, "(-1) ** (10**30)").text.endswith("= 1")  # huge exponents of 0, 1 and -1 are small
    assert _calculate(caller, "round(2.567, 2) + min(1, 2) * max(3, 4)").text.endswith("= 6.57")


def test_a_result_python_cannot_print_is_a_tool_error(caller):
    import sys

    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)  # the lowest Python allows, below MAX_DIGITS
    try:
        result = _calculate(caller, "10**700")
    finally:
        sys.set_int_max_str_digits(before)
    assert result.ok is False and result.text == "The result has too many digits to print."


def test_arguments_are_bounded_before_they_are_parsed(caller):
    long = json.dumps({"expression": "1+" * MAX_ARGUMENTS_CHARS + "1"})
    result = call_tool(name="calculator", arguments=long, caller=caller, allowed=ALL)
    assert result.ok is False and f"longer than {MAX_ARGUMENTS_CHARS} characters" in result.text
    deep = "[" * 1999 + "]" * 1999  # under the length bound, deeper than the JSON parser's recursion
    result = call_tool(name="calculator", arguments=deep, caller=caller, allowed=ALL)
    assert result.ok is False and "not valid JSON" in result.text


def test_long_results_are_cut_with_a_mark(caller):
    for number in range(22):  # 22 lines of some 310 characters
        documents.document_upload(org=caller.org, data=f"# Doc {number}\n\nText.".encode(), filename="doc.md",
                                  title=f"{number} {'x' * 290}")  # fmt: skip
    result = call_tool(name="recent_activity", arguments="{}", caller=caller, allowed=ALL)
    assert len(result.text) == 6000 and result.text.endswith(" [...truncated]")


def test_the_offline_policy_reads_a_bounded_part_of_a_long_task():
    tools = [{"name": "calculator", "parameters": {}}]
    # Many spaced digits and no operator: the former pattern backtracked quadratically (seconds per 16 KB).
    assert local_tool_policy("Task: " + "1 " * 100_000, tools, []) is None
    late = "Task: summarise.\n" + "context " * (POLICY_SCAN_CHARS // 8) + "2 + 2"
    assert local_tool_policy(late, tools, []) is None  # arithmetic is looked for in the task, not in its context
    assert local_tool_policy("Task: what is (12.5 + 3) * 2?", tools, []) == (
        "calculator",
        {"expression": "12.5 + 3) * 2"},
    )
