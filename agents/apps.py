from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from agents.services import conversations_purge
        from agents.tools import local_tool_policy
        from saas.core.retention import register_purger
        from saas.llm import local_engine

        # The offline engine cannot choose tools by reasoning; it follows the policy of the tools' owner.
        local_engine.register_tool_policy(local_tool_policy)

        from agents.selectors import llm_call_origins
        from saas.llm.selectors import register_call_origins

        register_call_origins(llm_call_origins)  # the request log links a call to its run or conversation
        register_purger(store="conversations", setting="retain_conversations_days", purge=conversations_purge)

        from agents.privacy import STORE
        from saas.core.privacy import register_store

        register_store(STORE)
