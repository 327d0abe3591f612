"""`python manage.py eval_gate --prompt ask.system --candidate 3 [--org acme]`: the regression gate for CI.

Runs every dataset of the org that gates the prompt, with what production uses now and with version N, prints
the comparison, and exits 1 when a score falls beyond a dataset's threshold (0 when it passes, 2 when it
cannot run). Nothing is promoted; the decision is an audit event (eval.gate_passed / eval.gate_refused).
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Organization
from analytics import eval_runs, gate
from analytics.models import EvalDataset
from saas.core.tenancy import org_scope
from saas.llm import prompts
from saas.llm.prompt_models import PromptVersion


class Command(BaseCommand):
    help = "Compare a prompt version with production on the datasets that gate it; exit 1 on a drop."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--prompt", required=True, help='The prompt key, e.g. "ask.system".')
        parser.add_argument("--candidate", required=True, type=int, help="The candidate version's number.")
        parser.add_argument("--org", help="The team's slug (needed when several teams have datasets for the prompt).")
        parser.add_argument("--model", default="default", help="The model alias to answer with.")

    def _org(self, slug: str | None, key: str) -> Organization:
        if slug:
            org = Organization.objects.filter(slug=slug).first()
            if org is None:
                raise CommandError(f"No team with the slug {slug!r}.", returncode=2)
            return org
        owners = EvalDataset.all_orgs.filter(prompt_key=key).values_list("organization_id", flat=True).distinct()
        ids = list(owners[:2])
        if len(ids) != 1:
            raise CommandError(f"{'Several teams have' if ids else 'No team has'} datasets for {key}: name one with "
                               "--org.", returncode=2)  # fmt: skip
        return Organization.objects.get(pk=ids[0])

    def handle(self, *args: Any, **options: Any) -> None:
        key, number = options["prompt"], options["candidate"]
        org = self._org(options["org"], key)
        with org_scope(org):
            versions = PromptVersion.objects.for_org(org).filter(prompt__key=key, number=number)
            versions = versions.select_related("prompt")
            # The team's own version N first, else the operator default's.
            version = sorted(versions, key=lambda v: v.organization_id is None)[0] if versions else None
            if version is None:
                raise CommandError(f"{key} has no version {number} in {org.slug}.", returncode=2)
            candidate = eval_runs.run_prompt(org=org, key=key, version=version)
            production = prompts.prompt_resolve(org=org, key=key)
            decision = gate.gate_evaluate(org=org, user=None, candidate=candidate, production=production,
                                          model=options["model"])  # fmt: skip
            gate.gate_audit(org=org, decision=decision)
        for line in decision.table():
            self.stdout.write(line)
        self.stdout.write(decision.message)
        if not decision.allowed:
            raise CommandError(f"Refused: {key} v{number} scores worse than production.", returncode=1)
