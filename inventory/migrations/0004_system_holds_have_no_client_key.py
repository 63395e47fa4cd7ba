from django.db import migrations, models


def clear_system_keys(apps, schema_editor):
    """Waitlist offers used to carry a key of their own making in the clients' key space;
    they are linked from their waitlist entry and need none."""
    Reservation = apps.get_model("inventory", "Reservation")
    Reservation.objects.filter(waitlist_entry__isnull=False).update(idempotency_key=None)


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0003_waitlist_and_demand"),
    ]

    operations = [
        migrations.AlterField(
            model_name="reservation",
            name="idempotency_key",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.RunPython(clear_system_keys, migrations.RunPython.noop),
    ]
