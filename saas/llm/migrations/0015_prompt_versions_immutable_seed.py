from django.db import migrations

# A saved prompt version is never changed: the database refuses an UPDATE of its content (its author may still
# be cleared, when the person is erased).
IMMUTABLE = """
CREATE OR REPLACE FUNCTION llm_promptversion_immutable() RETURNS trigger AS $$
BEGIN
    IF NEW.text IS DISTINCT FROM OLD.text OR NEW.model IS DISTINCT FROM OLD.model
       OR NEW.parameters::text IS DISTINCT FROM OLD.parameters::text OR NEW.number IS DISTINCT FROM OLD.number
       OR NEW.prompt_id IS DISTINCT FROM OLD.prompt_id OR NEW.note IS DISTINCT FROM OLD.note
       OR NEW.organization_id IS DISTINCT FROM OLD.organization_id THEN
        RAISE EXCEPTION 'prompt versions are immutable: add a new version instead'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER llm_promptversion_immutable BEFORE UPDATE ON llm_promptversion
    FOR EACH ROW EXECUTE FUNCTION llm_promptversion_immutable();
"""
MUTABLE = """
DROP TRIGGER IF EXISTS llm_promptversion_immutable ON llm_promptversion;
DROP FUNCTION IF EXISTS llm_promptversion_immutable();
"""


def seed(apps, schema_editor):
    from saas.llm.prompt_defaults import BUILTINS

    Prompt = apps.get_model("llm", "Prompt")
    PromptVersion = apps.get_model("llm", "PromptVersion")
    for builtin in BUILTINS.values():
        if Prompt.objects.filter(organization__isnull=True, key=builtin.key).exists():
            continue
        prompt = Prompt.objects.create(key=builtin.key, title=builtin.title, description=builtin.description)
        version = PromptVersion.objects.create(prompt=prompt, number=1, text=builtin.text, note="Built-in prompt")
        prompt.production = prompt.staging = version
        prompt.save(update_fields=["production", "staging"])


class Migration(migrations.Migration):
    dependencies = [("llm", "0014_prompts_and_experiments")]
    operations = [
        migrations.RunSQL(IMMUTABLE, MUTABLE),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
