from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = "Inventory: stock, allocations, holds, ledger"

    def ready(self):
        # The services have pending holds settled by the tasks, which import the
        # services: the tasks are plugged in here, not imported by the services.
        # (Imported here, not at the top: the app's models are not loaded until now.)
        from inventory import settle_queue, tasks

        settle_queue.register(tasks)
