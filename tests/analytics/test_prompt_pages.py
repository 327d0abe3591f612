"""The Prompts and Experiments pages: members read, admins edit; the editor previews a diff before saving."""

import pytest

from accounts.models import Membership
from saas.llm import prompts
from saas.llm.models import Prompt, PromptVersion
from tests.accounts.factories import MembershipFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(client):
    admin = MembershipFactory(role=Membership.Role.ADMIN)
    member = MembershipFactory(role=Membership.Role.MEMBER, organization=admin.organization)
    return admin, member


def _client(client, membership):
    client.force_login(membership.user)
    return client


def test_the_editor_shows_the_diff_then_saves_a_version(client, team):
    admin, _ = team
    org = admin.organization
    c = _client(client, admin)
    edit = f"/o/{org.slug}/prompts/ask.system/edit/"
    page = c.get(edit).content.decode()
    assert "Answer the question using only the numbered sources below." in page  # starts from the default
    text = "Answer the question using only the numbered sources below.\nKeep it to three sentences. <b>bold</b>"
    preview = c.post(edit, {"text": text, "note": "shorter", "action": "preview"}).content.decode()
    assert 'class="diff-added"' in preview and "Keep it to three sentences. &lt;b&gt;bold&lt;/b&gt;" in preview
    assert "<b>bold</b>" not in preview  # a prompt is text, never HTML
    assert not PromptVersion.all_orgs.filter(organization=org).exists()  # a preview saves nothing
    saved = c.post(edit, {"text": text, "note": "shorter", "action": "save"})
    version = PromptVersion.all_orgs.get(organization=org)
    assert saved.status_code == 302 and saved["Location"] == f"/o/{org.slug}/prompts/ask.system/v/{version.pk}/"
    assert (version.number, version.note, version.author) == (1, "shorter", admin.user)
    shown = c.get(saved["Location"]).content.decode()
    assert "Keep it to three sentences." in shown and 'class="diff-removed"' in shown
    labelled = c.post(f"/o/{org.slug}/prompts/versions/{version.pk}/label/", {"label": "production"})
    assert labelled.status_code == 302
    assert Prompt.all_orgs.get(organization=org, key="ask.system").production == version
    assert "your version 1" in c.get(f"/o/{org.slug}/prompts/").content.decode()


def test_members_read_but_do_not_edit(client, team):
    admin, member = team
    org = admin.organization
    c = _client(client, member)
    detail = c.get(f"/o/{org.slug}/prompts/ask.system/")
    assert detail.status_code == 200 and "New version" not in detail.content.decode()
    assert c.get(f"/o/{org.slug}/prompts/ask.system/edit/").status_code == 403
    default = Prompt.all_orgs.get(organization__isnull=True, key="ask.system").production
    assert c.post(f"/o/{org.slug}/prompts/versions/{default.pk}/label/", {"label": "staging"}).status_code == 403
    assert c.get(f"/o/{org.slug}/experiments/new/").status_code == 403
    assert Prompt.all_orgs.filter(organization=org).count() == 0


def test_an_unknown_key_is_a_404(client, team):
    admin, _ = team
    assert _client(client, admin).get(f"/o/{admin.organization.slug}/prompts/no.such/").status_code == 404


def test_an_experiment_page_says_when_there_is_not_enough_data(client, team):
    admin, _ = team
    org = admin.organization
    c = _client(client, admin)
    mine = prompts.prompt_version_create(org=org, key="chat.system", text="Be brief.")
    default = Prompt.all_orgs.get(organization__isnull=True, key="chat.system").production
    started = c.post(f"/o/{org.slug}/experiments/new/", {
        "key": "chat.system", "name": "Brief chat", "min_samples": "30", "action": "start",
        "version": [str(default.pk), str(mine.pk)],
    })  # fmt: skip
    assert started.status_code == 302, started.content
    page = c.get(started["Location"]).content.decode()
    assert "Not enough data yet" in page and "30 rated answers" in page
    ended = c.post(started["Location"] + "end/", {"winner": ""})
    assert ended.status_code == 302
    assert "ended" in c.get(started["Location"]).content.decode()


def test_the_diff_marks_the_words_that_changed():
    from analytics.prompt_diff import text_diff

    lines = text_diff("Answer using only the sources. Do not use outside knowledge.\nBe kind.",
                      "Answer using only the sources.\nKeep it short.\nBe kind.")  # fmt: skip
    assert [(line.kind, line.text) for line in lines] == [
        ("removed", "Answer using only the sources. Do not use outside knowledge."),
        ("added", "Answer using only the sources."), ("added", "Keep it short."), ("same", "Be kind."),
    ]  # fmt: skip
    assert [piece for piece, changed in lines[0].segments if changed] == ["Do not use outside knowledge"]
    assert [piece for piece, changed in lines[2].segments if changed] == ["Keep it short"]
    assert not any(changed for _, changed in lines[1].segments)
