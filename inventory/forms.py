"""Admin forms. They parse what ops type; the services decide what is allowed."""

from django import forms

from inventory.services.stock import MANUAL_REASONS


class StockAdjustForm(forms.Form):
    # IntegerField turns "2.5" or "ten" away before anything reaches the service; the
    # range rules (not zero, not below what allocations hold) stay in stock_adjust.
    delta = forms.IntegerField(
        help_text="Signed whole number of units: 5 adds five, -3 removes three.",
    )
    reason = forms.ChoiceField(choices=[(reason.value, reason.label) for reason in MANUAL_REASONS])
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why the count changed; kept on the ledger entry.",
    )
