# DropDemand moved to the demand app (demand/migrations/0001_initial.py takes it into
# its state). Its table, livestream_dropdemand, stays as it is: state only, no SQL.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('livestream', '0002_demand_and_timed_drops'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='DropDemand',
                ),
            ],
            database_operations=[],
        ),
    ]
