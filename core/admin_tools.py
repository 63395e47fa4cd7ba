"""What the apps' admins share: read-only model admins whose rows only services write,
change forms that write only what was edited, the change permission their
service-calling actions still need, and the loop those actions run."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth import get_permission_codename

from core.exceptions import DomainError


class ReadOnlyAdminMixin:
    """No add, change or delete through the admin's forms (also for inlines): these
    rows are written by the services alone."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class EditedFieldsOnlyMixin:
    """A change form writes only the fields the user changed, through ``save_edited``
    (which calls a service), never the whole row as it was read when the form loaded:
    a counter or status another transaction moved meanwhile is never written back.
    ``check_edited`` runs the service's own checks while the form validates, so a
    refusal shows next to its field instead of failing the save."""

    def get_form(self, request, obj=None, **kwargs):
        base = super().get_form(request, obj, **kwargs)
        admin = self

        class EditedFieldsForm(base):
            def clean(self):
                cleaned = super().clean()
                edited = {name: cleaned[name] for name in self.changed_data if name in cleaned}
                if self.instance.pk and edited:
                    try:
                        admin.check_edited(edited)
                    except DomainError as exc:
                        field = exc.data.get("field")
                        self.add_error(field if field in self.fields else None, exc.detail)
                return cleaned

        return EditedFieldsForm

    def save_model(self, request, obj, form, change):
        edited = {name: form.cleaned_data[name] for name in form.changed_data}
        if edited:
            self.save_edited(request, obj, edited)

    def check_edited(self, edited: dict) -> None:
        """Raise the service's ``DomainError`` for a value it would refuse."""

    def save_edited(self, request, obj, edited: dict) -> None:
        raise NotImplementedError


def has_model_change_permission(request, opts) -> bool:
    """The model's change permission, for admins whose forms are read-only but whose
    actions (calling services) still change the rows."""
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


def apply_each(modeladmin, request, queryset, action: Callable, *, verb: str) -> None:
    """Run a service on each selected object (pk order, as locks are taken), log the
    successes and report both outcomes; a domain error skips that object only."""
    done, failed = [], []
    for obj in queryset.order_by("pk"):
        try:
            action(obj)
        except DomainError as exc:
            failed.append(f"{obj}: {exc.detail}")
        else:
            done.append(str(obj))
            # The admin log keeps who did it (not every service writes a ledger entry).
            modeladmin.log_change(request, obj, verb.capitalize())
    if done:
        modeladmin.message_user(
            request, f"{verb.capitalize()}: {', '.join(done)}.", messages.SUCCESS
        )
    if failed:
        modeladmin.message_user(request, f"Not {verb}: {'; '.join(failed)}", messages.ERROR)
