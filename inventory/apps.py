from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = "Inventory: stock, allocations, holds, ledger"

    def ready(self):
        # The services have pending holds settled by the tasks, which import the
        # services: the tasks are plugged in here, not imported by the services.
        # (Imported here, not at the top: the app's models are not loaded until now.)
        from inventory import events, settle_queue, tasks
        from inventory.services import gate_sync

        settle_queue.register(tasks)
        # The gate mirrors the units the services move: it learns of them from their
        # events, inside the transaction that makes them (its version is stamped there).
        events.subscribe_in_transaction(gate_sync.on_unit_events)
