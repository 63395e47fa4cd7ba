from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app shares; it imports none of them, and no app imports ``config``."""

    name = "core"
    verbose_name = "Core: errors, Redis clients, API helpers, probes"
