"""The load test's data, made in the running stack's database: TEAMS orgs on the Team plan (overage, no spend cap),
each with members signed in (session cookies for the browser users), an API key, a conversation per member, a
ready-made crew and a few documents to answer from. Prints it as JSON (run.py saves it for the locustfile).

    python deploy/loadtest/fixture.py --teams 10 --members 30 --url http://127.0.0.1:8000   (Django env set)
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent

DOCUMENT = """# Field guide {n}: the {topic} programme

The {topic} programme started in {year}. Its budget is {budget} thousand euros a year, reviewed every March.

## Who runs it
The programme lead is the operations team in office {n}. Escalations go to the on-call engineer, who answers
within 15 minutes during the day and within an hour at night.

## How to request access
Open a ticket with the title "{topic} access", name your manager, and attach the signed policy. Access is
granted within two working days and reviewed every quarter.
"""
TOPICS = ["travel", "security", "onboarding", "hardware", "expenses", "research", "support", "training"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--members", type=int, default=30)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()

    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings.local")
    import django

    django.setup()
    from django.conf import settings
    from django.test import Client

    from accounts.models import Membership, Organization, User
    from accounts.permissions import ROLE_SCOPES, Principal
    from accounts.services import api_key_create, organization_create
    from agents import starters
    from agents.models import Crew
    from agents.services import conversation_create, crew_create
    from billing.models import OrgBilling, Plan
    from documents.models import Document
    from documents.services import document_upload
    from saas.core.tenancy import org_scope

    teams = []
    for t in range(args.teams):
        owner, _ = User.objects.get_or_create(email=f"loadtest-owner-{t}@example.com")
        org = Organization.objects.filter(slug=f"loadtest-{t}").first() or organization_create(
            name=f"Load test {t}", owner=owner, slug=f"loadtest-{t}"
        )
        OrgBilling.objects.for_org(org).update_or_create(
            organization=org,
            defaults={"plan": Plan.objects.get(slug="team"), "status": "active", "spend_cap_usd": None},
        )
        owner_principal = Principal(organization=org, scopes=ROLE_SCOPES["owner"], user=owner)
        key = api_key_create(
            principal=owner_principal, name=f"loadtest {int(time.time())}",
            scopes=["read", "ask", "documents:write", "crews:run"],
        )  # fmt: skip
        with org_scope(org):
            crew = Crew.objects.filter(template="research-brief").first() or crew_create(
                principal=owner_principal,
                spec=starters.for_org(starters.STARTERS["research-brief"]),
                template="research-brief",
            )
            for n in range(3 - Document.objects.count()):
                text = DOCUMENT.format(n=n, topic=TOPICS[(t + n) % len(TOPICS)], year=2015 + n, budget=120 + 10 * t)
                document_upload(org=org, data=text.encode(), filename=f"guide-{n}.md", user=owner)
        members = []
        for m in range(args.members):
            user, created = User.objects.get_or_create(email=f"loadtest-{t}-{m}@example.com")
            if created:
                user.set_unusable_password()  # they sign in by session only: no password hashing to wait for
                user.save(update_fields=["password"])
            Membership.objects.for_org(org).get_or_create(organization=org, user=user, defaults={"role": "member"})
            browser = Client()
            browser.force_login(user)
            with org_scope(org):
                conversation = conversation_create(org=org, user=user)
            members.append({
                "cookie": f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}",
                "conversation": str(conversation.pk),
            })  # fmt: skip
        teams.append({
            "slug": org.slug, "org_id": str(org.pk), "key": key.secret, "crew": str(crew.pk),
            "topics": [TOPICS[(t + n) % len(TOPICS)] for n in range(3)], "members": members,
        })  # fmt: skip
    json.dump({"url": args.url, "teams": teams}, sys.stdout)


if __name__ == "__main__":
    main()
