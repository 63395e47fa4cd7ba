"""What demand each drop met: one ``DropDemand`` row per drop, written by
``demand.capture`` only and read by the reports and the readiness estimator."""

from django.db import models

from livestream.models import Drop


class DropDemand(models.Model):
    """What demand a drop met: supply, sales, and the demand sales alone hide (viewers
    turned away after the sell-out, the waitlist), with the audience and the timing.

    Written only by ``demand.capture`` (flushed from the counters kept next to the
    gate, or from the database path's rows), never on the purchase path itself. Counts of
    viewers are distinct customers and exact; request counts are requests.
    """

    drop = models.OneToOneField(Drop, on_delete=models.PROTECT, related_name="demand")
    supply = models.IntegerField(default=0, help_text="Units the drop put on sale.")
    sold = models.IntegerField(default=0, help_text="Units sold.")
    held = models.IntegerField(default=0, help_text="Units in holds at the last flush.")
    attempts = models.IntegerField(default=0, help_text="Reserve requests decided.")
    viewers_tried = models.IntegerField(default=0, help_text="Distinct viewers who tried.")
    admitted = models.IntegerField(default=0, help_text="Requests admitted.")
    admitted_units = models.IntegerField(default=0)
    buyers = models.IntegerField(default=0, help_text="Distinct viewers admitted.")
    turned_away_sold_out = models.IntegerField(
        default=0, help_text="Requests turned away sold out."
    )
    viewers_turned_away = models.IntegerField(
        default=0, help_text="Distinct viewers turned away sold out and never admitted."
    )
    turned_away_limit = models.IntegerField(
        default=0, help_text="Requests turned away at the per-viewer limit."
    )
    turned_away_not_live = models.IntegerField(
        default=0, help_text="Requests before the sale opened or after it closed."
    )
    waitlist_joined = models.IntegerField(default=0, help_text="Distinct viewers who queued.")
    waitlist_only = models.IntegerField(
        default=0, help_text="Viewers who queued without having been turned away first."
    )
    waitlist_waiting = models.IntegerField(default=0, help_text="Viewers still in line.")
    waitlist_offers = models.IntegerField(default=0)
    waitlist_claimed = models.IntegerField(default=0)
    # A drop sold by draw: its entrants wanted it (one entry per viewer), its winners
    # got it; refused entries (the entry rules' bots and drive-by accounts) are not
    # demand, and are kept apart.
    entries = models.IntegerField(default=0, help_text="Viewers who entered the draw.")
    entry_units = models.IntegerField(default=0, help_text="Units the entrants asked for.")
    entry_winners = models.IntegerField(default=0, help_text="Entrants the draw chose.")
    entries_refused = models.IntegerField(
        default=0, help_text="Entries refused (closed, or by an entry rule)."
    )
    viewers_at_pin = models.IntegerField(null=True, blank=True)
    peak_viewers = models.IntegerField(default=0)
    pinned_at = models.DateTimeField(null=True, blank=True, help_text="First pinned.")
    opened_at = models.DateTimeField(null=True, blank=True)
    sold_out_at = models.DateTimeField(null=True, blank=True, help_text="First sold out.")
    closed_at = models.DateTimeField(null=True, blank=True)
    # Redis counters are cumulative; when Redis loses them (a new epoch) the figures
    # flushed so far become the base the new counters add to.
    counter_epoch = models.CharField(max_length=40, blank=True)
    counter_base = models.JSONField(default=dict, blank=True)
    flushed_at = models.DateTimeField(null=True, blank=True)
    final = models.BooleanField(default=False, help_text="Flushed after the drop closed.")

    class Meta:
        # The table it always had: the model moved here from livestream, its rows did not.
        db_table = "livestream_dropdemand"
        ordering = ["-drop_id"]

    def __str__(self) -> str:
        return f"demand of drop #{self.drop_id}"

    @property
    def unmet_demand(self) -> int:
        """Viewers who wanted the drop and did not get it: turned away, queued only, or
        entered its draw and not drawn."""
        return self.viewers_turned_away + self.waitlist_only + self.entries - self.entry_winners

    @property
    def total_demand(self) -> int:
        """Viewers who wanted the drop: those who got it and those who did not."""
        return self.buyers + self.entry_winners + self.unmet_demand

    @property
    def units_per_buyer(self) -> float:
        """Units a viewer who wanted the drop asked for, on average (1 when unknown)."""
        viewers = self.buyers + self.entries
        units = self.admitted_units + self.entry_units
        return max(1.0, units / viewers) if viewers and units else 1.0

    @property
    def seconds_to_sell_out(self) -> float | None:
        start = self.opened_at or self.pinned_at
        if start is None or self.sold_out_at is None:
            return None
        return max(0.0, (self.sold_out_at - start).total_seconds())
