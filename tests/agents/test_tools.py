"""The crew tools, called the way a model calls them: raw JSON arguments, checked, errors told back."""

import json

import pytest

from agents.tools import call_tool, local_tool_policy
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
        ("9**9**9**9", False, "Not an arithmetic expression"),  # simpleeval's power limit, not a hung worker
        ("'a' * 10", False, "does not give a number"),
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
