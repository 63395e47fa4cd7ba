"""CSV export and import of stock levels (django-import-export).

Export: ``sku, on_hand, reserved, available``. Import: ``sku, on_hand`` (other columns,
such as those of an edited export, are ignored). An import never writes the counter
columns itself: each row is handed to ``stock_set_on_hand``, which moves ``on_hand`` and
writes the ledger entry, so every imported change is on the ledger under its actor.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from import_export import fields, resources, widgets

from core.exceptions import DomainError
from inventory import services
from inventory.models import StockItem, StockMovement

_WHOLE_NUMBER = re.compile(r"[+-]?\d{1,12}")


class WholeNumberWidget(widgets.IntegerWidget):
    """Parses a count strictly. ``IntegerWidget`` would read "2.5" as 2 and let "abc"
    escape as a decimal error; a stock take must say exactly what it means. Whether the
    number is allowed (not negative, not below what allocations hold) is the service's
    call, so the sign is parsed here and judged there."""

    def clean(self, value, row=None, **kwargs):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value if value is not None else "").strip()
        if not _WHOLE_NUMBER.fullmatch(text):
            raise ValueError(f"{text!r} is not a whole number.")
        return int(text)


class StockLevelResource(resources.ModelResource):
    sku = fields.Field(attribute="variant__sku", column_name="sku", readonly=True)
    on_hand = fields.Field(attribute="on_hand", column_name="on_hand", widget=WholeNumberWidget())
    reserved = fields.Field(
        attribute="reserved", column_name="reserved", readonly=True, widget=widgets.IntegerWidget()
    )
    available = fields.Field(
        attribute="available",
        column_name="available",
        readonly=True,
        widget=widgets.IntegerWidget(),
    )

    class Meta:
        model = StockItem
        name = "Stock levels"
        fields = ("sku", "on_hand", "reserved", "available")
        export_order = ("sku", "on_hand", "reserved", "available")
        # A row is found by its sku; a readonly field still serves as the lookup key.
        import_id_fields = ("sku",)
        # Rows whose on_hand already matches are reported as skipped, not "updated".
        skip_unchanged = True
        # The dry run calls the service for real (so it reports the same domain errors
        # as the real run) and must therefore be rolled back.
        use_transactions = True

    def get_queryset(self):
        return StockItem.objects.select_related("variant")

    def before_import(self, dataset, **kwargs):
        # Without an on_hand column every row would be silently "unchanged".
        if "on_hand" not in (dataset.headers or []):
            raise ValueError("The file needs an 'on_hand' column.")

    def init_instance(self, row=None):
        # Called only when no stock item has the row's sku: an import counts existing
        # stock, it never creates stock items.
        sku = (row or {}).get("sku")
        raise ValidationError({"sku": f"Unknown sku {sku!r}."})

    def save_instance(self, instance, is_create, row, **kwargs):
        """Apply the row through the service instead of ``instance.save()``.

        A domain error becomes a row validation error; the service's own transaction
        has then rolled back, so nothing of that row is written.
        """
        try:
            services.stock_set_on_hand(
                stock_item_id=instance.pk,
                on_hand=instance.on_hand,
                actor=kwargs.get("user"),
                reason=StockMovement.Reason.IMPORT,
                note="CSV import",
            )
        except DomainError as exc:
            raise ValidationError({"on_hand": exc.detail}) from exc
        # Show the levels as they now are (the diff and the admin log read the instance).
        instance.refresh_from_db(fields=["on_hand", "reserved"])
