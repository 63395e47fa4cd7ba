from django.apps import AppConfig


class DrawsConfig(AppConfig):
    name = "draws"
    verbose_name = "Draws (fair drops)"

    def ready(self):
        # A draw drop's pin opens its entries, and its body shows the draw's fields.
        from draws.services import DrawDrops
        from livestream.draw_mode import draw_hooks_register

        draw_hooks_register(DrawDrops())

        # The services have each draw run at its close through the tasks.
        from draws import close_queue, tasks

        close_queue.register(tasks)
