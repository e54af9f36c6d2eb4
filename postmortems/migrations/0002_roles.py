"""The three roles are Django groups; their names are what postmortems.access checks."""

from django.db import migrations

ROLES = ("engineer", "manager", "viewer")


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)


def drop_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("postmortems", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_roles, drop_roles)]
