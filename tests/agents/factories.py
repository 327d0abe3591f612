import factory

from agents.models import Conversation, Message
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
