from datetime import datetime
from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from saas.core.models import BaseModel
from saas.core.tenancy import OrgOwnedModel


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra: Any) -> "User":
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> "User":
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> "User":
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    """People sign in with their email address; there is no username."""

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    class Meta:
        constraints: ClassVar = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.email


class MemberContent(models.TextChoices):
    DELETE = "delete", "Deleted with their account"
    TRANSFER = "transfer", "Kept by the team"


class Organization(BaseModel):
    """A team: the owner of every row of customer data."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    # Retention (saas/core/retention.py): days to keep; empty: until deleted.
    retain_conversations_days = models.PositiveIntegerField(null=True, blank=True)
    retain_ledger_content_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Prompts and answers in the AI ledger; the rows (cost, tokens) stay."
    )
    retain_exports_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Data exports; empty: settings.DATA_EXPORT_KEEP_DAYS."
    )
    # What happens to a member's documents and crews when they erase their account (accounts/erasure.py).
    member_content_on_erasure = models.CharField(
        max_length=10, choices=MemberContent.choices, default=MemberContent.DELETE
    )
    # Set when an owner deletes the org: from then on it is gone for everyone, while the erasure job runs.
    deletion_requested_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.slug


class Membership(OrgOwnedModel):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"
        VIEWER = "viewer", "Viewer"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    onboarding_dismissed_at = models.DateTimeField(
        null=True, blank=True, help_text="When this member hid the Overview's getting-started checklist."
    )

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["organization", "user"], name="accounts_membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class Invitation(OrgOwnedModel):
    """An invitation to join an org. Only a hash of its token is stored; the token travels in the email."""

    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        constraints: ClassVar = [
            # At most one open invitation per address and org: re-inviting renews it instead.
            models.UniqueConstraint(
                "organization",
                Lower("email"),
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="accounts_invitation_one_open_per_email",
            ),
        ]

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class ApiKey(OrgOwnedModel):
    """An org's API key. The secret is shown once; only its SHA-256 is stored (it has 256 bits of entropy,
    so a slow hash buys nothing). `prefix` is the public part that identifies the key in lists and logs."""

    class Scope(models.TextChoices):
        READ = "read", "Read"
        ASK = "ask", "Ask questions"
        DOCUMENTS_WRITE = "documents:write", "Upload and manage documents"
        CREWS_RUN = "crews:run", "Run crews"
        ADMIN = "admin", "Administer the org"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=32, unique=True)
    secret_hash = models.CharField(max_length=64, unique=True)
    scopes = ArrayField(models.CharField(max_length=20, choices=Scope.choices), default=list)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    # Networks (CIDR) the key may be used from; empty: from anywhere. Checked at every authentication.
    allowed_networks = ArrayField(models.CharField(max_length=43), default=list, blank=True)
    replaced_by = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces"
    )

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_active(self, at: datetime | None = None) -> bool:
        at = at or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        if self.replaced_by_id:
            return "rotating"
        return "active"


class AuditEvent(OrgOwnedModel):
    """Append-only: a database trigger refuses UPDATE and DELETE (see migration 0003) unless a maintenance
    job (GDPR pseudonymisation, org erasure) sets `crewdesk.audit_maintenance` for its transaction."""

    actor_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=255, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [models.Index(fields=["organization", "-created_at"], name="accounts_audit_org_time")]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_label}"


class Notification(OrgOwnedModel):
    """Something a member should see in the app (a scheduled crew run finished, ...); read or not."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    title = models.CharField(max_length=200)
    url = models.CharField(max_length=300, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta(OrgOwnedModel.Meta):
        indexes: ClassVar = [models.Index(fields=["organization", "user", "-created_at"], name="accounts_notif_user")]


def _export_path(export: "DataExport", filename: str) -> str:
    return f"exports/{export.pk}.zip"


class DataExport(BaseModel):
    """A zip of someone's data (`personal`, across their orgs) or of a whole org (`organization`, for owners).
    Only the person who asked may download it, until it expires; then the file is deleted."""

    class Kind(models.TextChoices):
        PERSONAL = "personal", "Personal data"
        ORGANIZATION = "organization", "Whole team"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="data_exports")
    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    file = models.FileField(upload_to=_export_path, max_length=200, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    download_count = models.PositiveIntegerField(default=0)

    class Meta:
        indexes: ClassVar = [models.Index(fields=["user", "-created_at"], name="accounts_export_user")]


class ErasureRecord(BaseModel):
    """What an erasure removed, store by store (counts only, never content), and where a killed job resumes.
    `plan` is fixed when the erasure is asked for: the orgs concerned and, for a person, each org's policy for
    their content, as shown to them before they confirmed."""

    class Kind(models.TextChoices):
        USER = "user", "Account"
        ORGANIZATION = "organization", "Team"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    subject_id = models.CharField(max_length=64, db_index=True)  # the user's or the org's id: no name, no email
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    plan = models.JSONField(default=list)  # [{"org": id, "transfer": bool}]
    counts = models.JSONField(default=dict)  # {"documents": 3, "documents/files": 3, ...}
    runs = models.PositiveSmallIntegerField(default=0)  # job runs started (a rerun after a kill adds one)
    finished_at = models.DateTimeField(null=True, blank=True)
