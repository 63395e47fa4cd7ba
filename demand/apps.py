from django.apps import AppConfig


class DemandConfig(AppConfig):
    """What each drop's demand was, and whether the stock of the next drops will last:
    per-drop demand captured from the live side's events and the gate's counters, the
    readiness estimator, the demand and readiness reports, the ops warnings, and the
    demo data. It sits above every other app and may import any of them (``livestream``
    above all: its models and events); none of them imports it."""

    name = "demand"
    verbose_name = "Demand and readiness"

    def ready(self):
        # The live side's moments of sale (a pin, a sell-out, a viewer count, a close)
        # become each drop's demand figures. Imported here: this module loads before the
        # app registry is ready, and capture imports models.
        from demand import capture
        from livestream import events

        events.subscribe(capture.on_live_event)
