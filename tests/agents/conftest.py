from tests.accounts.conftest import admin_key, make_member, org, session_client  # noqa: F401  (shared fixtures)
from tests.llm.conftest import caller, fake, models  # noqa: F401
