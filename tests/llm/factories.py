from saas.llm.models import LLMCall
from tests.accounts.factories import OrgOwnedFactory


class LLMCallFactory(OrgOwnedFactory):
    class Meta:
        model = LLMCall

    feature = "ask"
    model_requested = "local"
    model_used = "local"
    upstream = "local"
    status = LLMCall.Status.OK
    user = None
