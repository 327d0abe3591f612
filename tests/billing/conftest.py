from tests.llm.conftest import fake, models  # noqa: F401  (fixtures)
