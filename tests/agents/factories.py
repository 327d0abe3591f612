import factory

from agents.models import Conversation, Crew, Feedback, Message, Run, RunStep
from tests.accounts.factories import OrgOwnedFactory, UserFactory


class ConversationFactory(OrgOwnedFactory):
    class Meta:
        model = Conversation

    user = factory.SubFactory(UserFactory)


class MessageFactory(OrgOwnedFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory, organization=factory.SelfAttribute("..organization"))
    role = Message.Role.ASSISTANT


class CrewFactory(OrgOwnedFactory):
    class Meta:
        model = Crew

    name = factory.Sequence(lambda n: f"Crew {n}")


class RunFactory(OrgOwnedFactory):
    class Meta:
        model = Run

    crew = factory.SubFactory(CrewFactory, organization=factory.SelfAttribute("..organization"))
    definition = factory.LazyAttribute(lambda run: {"name": run.crew.name, "agents": [], "tasks": []})


class RunStepFactory(OrgOwnedFactory):
    class Meta:
        model = RunStep

    run = factory.SubFactory(RunFactory, organization=factory.SelfAttribute("..organization"))
    seq = factory.Sequence(lambda n: n + 1)
    kind = RunStep.Kind.MESSAGE


class FeedbackFactory(OrgOwnedFactory):
    class Meta:
        model = Feedback

    message = factory.SubFactory(MessageFactory, organization=factory.SelfAttribute("..organization"))
    rating = Feedback.Rating.UP
