from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring: the live event's figures for Prometheus"

    def ready(self):
        # Counted from what the other apps announce, never by calls into them: the
        # inventory's events and Celery's signals. (Imported here: models load first.)
        from celery import signals

        from inventory import events
        from monitoring import exporter, receivers, registry

        registry.forget_dead_processes()
        events.subscribe(receivers.on_inventory_events)
        signals.task_failure.connect(receivers.on_task_failure, weak=False)
        signals.worker_ready.connect(exporter.on_worker_ready, weak=False)
