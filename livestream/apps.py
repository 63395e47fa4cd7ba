from django.apps import AppConfig


class LivestreamConfig(AppConfig):
    name = "livestream"
    verbose_name = "Live streams and drops"

    def ready(self):
        # Stock and hold changes committed by inventory become viewer events.
        from inventory import events
        from livestream import receivers

        events.subscribe(receivers.on_inventory_events)

        # Ops opening or closing a drop's allocation by hand keep the drop's rules.
        from inventory import services as inventory
        from livestream.services import DropAllocations

        inventory.allocation_owner_register(DropAllocations())

        # A user who logs out keeps no websocket rights (host, personal events).
        from django.contrib.auth.signals import user_logged_out

        user_logged_out.connect(receivers.on_user_logged_out, dispatch_uid="livestream.logout")
