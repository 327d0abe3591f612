from uuid import UUID

from accounts.models import Membership, User


def membership_org_ids(*, user: User) -> list[UUID]:
    return list(Membership.objects.filter(user=user).values_list("organization_id", flat=True))


def membership_list(*, user: User) -> list[Membership]:
    return list(
        Membership.objects.filter(user=user).select_related("organization").order_by("organization__name")
    )
