from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        from agents.tools import local_tool_policy
        from saas.llm import local_engine

        # The offline engine cannot choose tools by reasoning; it follows the policy of the tools' owner.
        local_engine.register_tool_policy(local_tool_policy)
