from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0005_allocation_gate_version"),
    ]

    operations = [
        migrations.RenameField(model_name="allocation", old_name="gate_version", new_name="version"),
    ]
