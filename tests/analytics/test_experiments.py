"""A/B tests of prompt versions: sticky assignment, an even split, the figures per variant and their
significance (checked against scipy), and ending with a winner through the promotion gate."""

import uuid
from decimal import Decimal

import pytest
from scipy import stats

from agents.models import Feedback
from analytics import experiments
from saas.llm import prompt_experiments, prompts
from saas.llm.models import Experiment, ExperimentVariant, LLMCall, Prompt
from tests.accounts.factories import OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db


def _default(key="ask.system"):
    return Prompt.all_orgs.get(organization__isnull=True, key=key).production


@pytest.fixture
def experiment(db):
    org = OrganizationFactory()
    mine = prompts.prompt_version_create(org=org, key="ask.system", text="Shorter rules. Cite [n].")
    return prompt_experiments.experiment_start(org=org, key="ask.system", name="Shorter rules",
                                               versions=[_default(), mine], min_samples=50)  # fmt: skip


def test_members_are_assigned_stickily_and_split_close_to_even(experiment):
    org = experiment.organization
    members = [f"user:{uuid.uuid5(uuid.NAMESPACE_URL, f'member-{n}')}" for n in range(1000)]
    first = [prompts.prompt_resolve(org=org, key="ask.system", subject=s).variant_name for s in members]
    again = [prompts.prompt_resolve(org=org, key="ask.system", subject=s).variant_name for s in reversed(members)]
    assert first == list(reversed(again))  # sticky: the same member always gets the same variant
    share = first.count("A") / len(first)
    assert 0.45 <= share <= 0.55, share
    # A binomial test of the split against 50/50 does not reject it.
    assert stats.binomtest(first.count("A"), len(first), 0.5).pvalue > 0.01
    # Another experiment assigns independently (not the same halves).
    other_org = OrganizationFactory()
    mine = prompts.prompt_version_create(org=other_org, key="ask.system", text="Other. Cite [n].")
    other = prompt_experiments.experiment_start(
        org=other_org, key="ask.system", name="Other", versions=[_default(), mine]
    )
    second = [prompts.assign(other.pk, s, [50, 50]) for s in members]
    agree = sum((a == "A") == (b == 0) for a, b in zip(first, second, strict=True)) / len(members)
    assert 0.4 < agree < 0.6, agree


def test_weights_shape_the_split():
    shares = [prompts.assign("exp", f"key:{n}", [80, 20]) for n in range(1000)]
    assert 0.75 <= shares.count(0) / 1000 <= 0.85


def test_without_a_subject_or_after_the_end_production_applies(experiment):
    org = experiment.organization
    assert prompts.prompt_resolve(org=org, key="ask.system").source == "default"
    prompt_experiments.experiment_end(experiment=experiment)
    assert prompts.prompt_resolve(org=org, key="ask.system", subject="user:1").variant_id is None


def _answers(experiment, variant_name, *, ups, downs, unrated=0, latency=100, cost="0.001", groundedness=0.9):
    """Ledger rows of one variant, with thumbs on ask answers (on the row) and on chat answers (on the
    message), as members give them."""
    from agents.models import Message
    from tests.agents.factories import ConversationFactory

    org = experiment.organization
    variant = ExperimentVariant.all_orgs.get(experiment=experiment, name=variant_name)
    conversation = ConversationFactory(organization=org)
    for n, rating in enumerate([1] * ups + [-1] * downs + [0] * unrated):
        call = LLMCall.all_orgs.create(
            organization=org, feature="ask", model_requested="local", model_used="local", latency_ms=latency + n,
            cost_usd=Decimal(cost), groundedness=groundedness, experiment_variant=variant,
            prompt_version=variant.version,
        )  # fmt: skip
        if not rating:
            continue
        user = UserFactory()
        if n % 2:  # a chat answer: the thumbs are on the message the row answered
            message = Message.all_orgs.create(organization=org, conversation=conversation, role="assistant",
                                              llm_call=call)  # fmt: skip
            Feedback.all_orgs.create(organization=org, message=message, user=user, rating=rating)
        else:
            Feedback.all_orgs.create(organization=org, llm_call=call, user=user, rating=rating)


def test_figures_per_variant_and_the_significance_match_scipy(experiment):
    _answers(experiment, "A", ups=70, downs=50, unrated=5, latency=100, cost="0.002", groundedness=0.8)
    _answers(experiment, "B", ups=95, downs=35, latency=300, cost="0.001", groundedness=0.9)
    report = experiments.experiment_report(experiment=experiment)
    a, b = report.variants
    assert (a.variant.name, a.calls, a.ups, a.downs, a.rated) == ("A", 125, 70, 50, 120)
    assert (b.calls, b.ups, b.downs) == (130, 95, 35)
    assert a.groundedness == 0.8 and b.groundedness == 0.9
    assert a.latency_p50 == pytest.approx(162) and b.latency_p50 == pytest.approx(364.5)
    assert a.cost_usd == pytest.approx(0.25) and b.cost_per_call == pytest.approx(0.001)
    # The reference: a chi-square test of the 2x2 table without continuity correction is the pooled
    # two-proportion z-test (chi2 = z^2, the same two-sided p-value).
    chi2, p_value, _, _ = stats.chi2_contingency([[70, 50], [95, 35]], correction=False)
    assert b.comparison.p_value == pytest.approx(p_value, rel=1e-9)
    assert b.comparison.z**2 == pytest.approx(chi2, rel=1e-9)
    assert b.comparison.z > 0 and b.comparison.significant
    # The Wald interval of the difference, from scipy's normal quantile.
    p_a, p_b = 70 / 120, 95 / 130
    half = stats.norm.ppf(0.975) * ((p_a * (1 - p_a) / 120 + p_b * (1 - p_b) / 130) ** 0.5)
    assert (b.comparison.ci_low, b.comparison.ci_high) == (
        pytest.approx(p_b - p_a - half, rel=1e-9), pytest.approx(p_b - p_a + half, rel=1e-9)
    )  # fmt: skip
    assert report.enough_data and report.leader is b
    body = report.as_json()
    assert body["variants"][1]["versus_control"]["p_value"] == pytest.approx(p_value, rel=1e-9)


def test_a_difference_that_is_not_significant_leaves_the_control_leading(experiment):
    _answers(experiment, "A", ups=30, downs=25)
    _answers(experiment, "B", ups=33, downs=22)
    report = experiments.experiment_report(experiment=experiment)
    _, p_value, _, _ = stats.chi2_contingency([[30, 25], [33, 22]], correction=False)
    assert report.variants[1].comparison.p_value == pytest.approx(p_value, rel=1e-9)
    assert not report.variants[1].comparison.significant and report.leader is report.variants[0]


def test_it_says_when_there_is_not_enough_data_yet(experiment):
    _answers(experiment, "A", ups=30, downs=10)
    _answers(experiment, "B", ups=49, downs=0)
    report = experiments.experiment_report(experiment=experiment)
    assert not report.enough_data and report.leader is None  # 40 and 49 rated, 50 needed each
    assert report.as_json()["enough_data"] is False


def test_ending_with_a_winner_promotes_it_through_the_gate(experiment):
    org = experiment.organization
    winner = ExperimentVariant.all_orgs.get(experiment=experiment, name="B")

    def gate(*, org, version, principal):
        if "Shorter" in version.text:
            raise prompts.PromotionRefused("Citation hit rate dropped from 1.0 to 0.5.", details={"failing": [1]})

    prompts.register_promotion_check(gate)
    try:
        with pytest.raises(prompts.PromotionRefused):
            prompt_experiments.experiment_end(experiment=experiment, winner=winner)
        experiment.refresh_from_db()
        assert experiment.status == Experiment.Status.RUNNING  # a refusal leaves it running
        assert prompts.prompt_resolve(org=org, key="ask.system").source == "default"
    finally:
        prompts._promotion_checks.remove(gate)
    ended = prompt_experiments.experiment_end(experiment=experiment, winner=winner)
    assert ended.status == Experiment.Status.ENDED and ended.winner == winner
    resolved = prompts.prompt_resolve(org=org, key="ask.system", subject="user:anyone")
    assert resolved.version_id == winner.version_id and resolved.variant_id is None
    from accounts.models import AuditEvent

    actions = list(AuditEvent.all_orgs.filter(organization=org).order_by("created_at").values_list("action", flat=True))
    assert actions == ["prompt.version_created", "experiment.started", "prompt.promotion_refused", "prompt.label_set",
                       "experiment.ended"]  # fmt: skip


def test_one_running_experiment_per_key(experiment):
    from saas.core.errors import Conflict

    org = experiment.organization
    mine = prompts.prompt_version_create(org=org, key="ask.system", text="Third. Cite [n].")
    with pytest.raises(Conflict):
        prompt_experiments.experiment_start(org=org, key="ask.system", name="Again", versions=[_default(), mine])


def test_an_experiment_only_takes_versions_the_org_may_use(experiment):
    stranger = OrganizationFactory()
    theirs = prompts.prompt_version_create(org=stranger, key="ask.system", text="Theirs.")
    with pytest.raises(prompts.NotFound):
        prompt_experiments.experiment_start(org=experiment.organization, key="chat.system", name="X",
                                 versions=[_default("chat.system"), theirs])  # fmt: skip


def test_the_version_in_production_is_the_control_whatever_the_order():
    org = OrganizationFactory()
    mine = prompts.prompt_version_create(org=org, key="crew.agent", text="You are {role}.")
    started = prompt_experiments.experiment_start(
        org=org, key="crew.agent", name="Terse", versions=[mine, _default("crew.agent")], weights=[30, 70]
    )
    arms = list(ExperimentVariant.all_orgs.filter(experiment=started).order_by("position"))
    assert [(a.name, a.version_id, a.weight) for a in arms] == [("A", _default("crew.agent").pk, 70),
                                                                ("B", mine.pk, 30)]  # fmt: skip
