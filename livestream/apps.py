from django.apps import AppConfig


class LivestreamConfig(AppConfig):
    name = "livestream"
    verbose_name = "Live streams and drops"

    def ready(self):
        # Stock and hold changes committed by inventory become viewer events.
        from inventory import events
        from livestream import broadcast

        events.subscribe(broadcast.on_inventory_events)
