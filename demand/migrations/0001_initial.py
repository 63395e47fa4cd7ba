# DropDemand moved here from livestream (livestream/migrations/0003 lets it go) with its
# table, livestream_dropdemand, which livestream/migrations/0002 created and which stays
# as it is: state only, no SQL.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('livestream', '0003_dropdemand_moves_to_demand'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='DropDemand',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('supply', models.IntegerField(default=0, help_text='Units the drop put on sale.')),
                        ('sold', models.IntegerField(default=0, help_text='Units sold.')),
                        ('held', models.IntegerField(default=0, help_text='Units in holds at the last flush.')),
                        ('attempts', models.IntegerField(default=0, help_text='Reserve requests decided.')),
                        ('viewers_tried', models.IntegerField(default=0, help_text='Distinct viewers who tried.')),
                        ('admitted', models.IntegerField(default=0, help_text='Requests admitted.')),
                        ('admitted_units', models.IntegerField(default=0)),
                        ('buyers', models.IntegerField(default=0, help_text='Distinct viewers admitted.')),
                        ('turned_away_sold_out', models.IntegerField(default=0, help_text='Requests turned away sold out.')),
                        ('viewers_turned_away', models.IntegerField(default=0, help_text='Distinct viewers turned away sold out and never admitted.')),
                        ('turned_away_limit', models.IntegerField(default=0, help_text='Requests turned away at the per-viewer limit.')),
                        ('turned_away_not_live', models.IntegerField(default=0, help_text='Requests before the sale opened or after it closed.')),
                        ('waitlist_joined', models.IntegerField(default=0, help_text='Distinct viewers who queued.')),
                        ('waitlist_only', models.IntegerField(default=0, help_text='Viewers who queued without having been turned away first.')),
                        ('waitlist_waiting', models.IntegerField(default=0, help_text='Viewers still in line.')),
                        ('waitlist_offers', models.IntegerField(default=0)),
                        ('waitlist_claimed', models.IntegerField(default=0)),
                        ('viewers_at_pin', models.IntegerField(blank=True, null=True)),
                        ('peak_viewers', models.IntegerField(default=0)),
                        ('pinned_at', models.DateTimeField(blank=True, help_text='First pinned.', null=True)),
                        ('opened_at', models.DateTimeField(blank=True, null=True)),
                        ('sold_out_at', models.DateTimeField(blank=True, help_text='First sold out.', null=True)),
                        ('closed_at', models.DateTimeField(blank=True, null=True)),
                        ('counter_epoch', models.CharField(blank=True, max_length=40)),
                        ('counter_base', models.JSONField(blank=True, default=dict)),
                        ('flushed_at', models.DateTimeField(blank=True, null=True)),
                        ('final', models.BooleanField(default=False, help_text='Flushed after the drop closed.')),
                        ('drop', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='demand', to='livestream.drop')),
                    ],
                    options={
                        'db_table': 'livestream_dropdemand',
                        'ordering': ['-drop_id'],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
