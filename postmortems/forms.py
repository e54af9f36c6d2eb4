from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.forms import formset_factory
from django.utils.choices import BaseChoiceIterator
from django.utils.translation import gettext_lazy as _

from .models import (
    Action,
    ActionKind,
    ActionStatus,
    PostMortem,
    PostMortemStatus,
    RootCauseCategory,
    Severity,
    Team,
)

DATETIME_WIDGET = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]


def active_users():
    return get_user_model().objects.filter(is_active=True).order_by("username")


class UserChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return obj.get_full_name() or obj.get_username()


class UserMultipleChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return obj.get_full_name() or obj.get_username()


class CommaListField(forms.CharField):
    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]  # a list, by design
        text = super().to_python(value) or ""
        items = [item.strip() for item in text.split(",") if item.strip()]
        for item in items:
            if len(item) > 60:
                raise forms.ValidationError(_("Each service name must be at most 60 characters."))
        return items

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(value)
        return value


class PostMortemForm(forms.ModelForm):
    authors = UserMultipleChoiceField(queryset=active_users(), required=False, label=_("Authors"))
    services = CommaListField(
        required=False, label=_("Services"), help_text=_("Comma-separated, e.g. checkout, orders")
    )
    started_at = forms.DateTimeField(
        required=False,
        widget=DATETIME_WIDGET,
        input_formats=DATETIME_FORMATS,
        label=_("Incident start"),
    )
    ended_at = forms.DateTimeField(
        required=False,
        widget=DATETIME_WIDGET,
        input_formats=DATETIME_FORMATS,
        label=_("Incident end"),
    )
    detected_at = forms.DateTimeField(
        required=False,
        widget=DATETIME_WIDGET,
        input_formats=DATETIME_FORMATS,
        label=_("Detected at"),
    )
    resolved_at = forms.DateTimeField(
        required=False,
        widget=DATETIME_WIDGET,
        input_formats=DATETIME_FORMATS,
        label=_("Resolved at"),
    )

    class Meta:
        model = PostMortem
        fields = [
            "title",
            "severity",
            "written_on",
            "started_at",
            "ended_at",
            "detected_at",
            "resolved_at",
            "authors",
            "team",
            "services",
            "is_private",
            "summary",
            "trigger",
            "resolution",
            "detection",
            "lessons_learned",
        ]
        # Team has no verbose_name on the model; without this the label stays English.
        labels = {"team": _("Team")}
        widgets = {
            "written_on": DATE_WIDGET,
            "summary": forms.Textarea(attrs={"rows": 5}),
            "trigger": forms.Textarea(attrs={"rows": 3}),
            "resolution": forms.Textarea(attrs={"rows": 4}),
            "detection": forms.Textarea(attrs={"rows": 3}),
            "lessons_learned": forms.Textarea(attrs={"rows": 4}),
        }

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        start, end = data.get("started_at"), data.get("ended_at")
        if start and end and end < start:
            self.add_error("ended_at", _("The incident cannot end before it starts."))
        for name in ("detected_at", "resolved_at"):
            value = data.get(name)
            if start and value and value < start:
                self.add_error(name, _("This cannot be before the incident starts."))
        return data


class RowForm(forms.Form):
    """An inline row: an empty row is ignored, a ticked DELETE drops it."""

    id = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def is_blank(self) -> bool:
        data = self.cleaned_data if hasattr(self, "cleaned_data") else {}
        return not any(v not in (None, "", [], False) for k, v in data.items() if k != "id")


class ImpactForm(RowForm):
    label = forms.CharField(max_length=300, label=_("Impact"))
    value_before = forms.DecimalField(
        max_digits=20, decimal_places=4, required=False, label=_("Before")
    )
    value = forms.DecimalField(max_digits=20, decimal_places=4, required=False, label=_("Value"))
    unit = forms.CharField(max_length=60, required=False, label=_("Unit"))
    window = forms.CharField(max_length=120, required=False, label=_("Window"))


class RootCauseForm(RowForm):
    category = forms.ChoiceField(
        choices=RootCauseCategory.choices, required=False, label=_("Category")
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label=_("Root cause"))


class TimelineForm(RowForm):
    occurred_at = forms.DateTimeField(
        widget=DATETIME_WIDGET, input_formats=DATETIME_FORMATS, label=_("Time")
    )
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), label=_("What happened"))


class ActionForm(RowForm):
    kind = forms.ChoiceField(choices=ActionKind.choices, label=_("Kind"))
    title = forms.CharField(max_length=200, label=_("Title"))
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, label=_("Description")
    )
    owner = UserChoiceField(queryset=active_users(), required=False, label=_("Owner"))
    due_date = forms.DateField(required=False, widget=DATE_WIDGET, label=_("Due date"))
    status = forms.ChoiceField(
        choices=ActionStatus.choices, initial=ActionStatus.TODO, label=_("Status")
    )
    ticket_url = forms.URLField(required=False, label=_("Ticket URL"), assume_scheme="https")


class BaseRowFormSet(forms.BaseFormSet):
    def rows(self) -> list[dict[str, Any]]:
        """The rows to keep, in order, as plain dicts for the service."""
        kept = []
        for form in self.forms:
            if not form.has_changed() and not form.cleaned_data.get("id"):
                continue
            if self.can_delete and form.cleaned_data.get("DELETE"):
                continue
            row = {k: v for k, v in form.cleaned_data.items() if k != "DELETE"}
            kept.append(row)
        return kept


class SharedChoices(BaseChoiceIterator):
    """The options of one ModelChoiceField, shared by every form on a page.

    A ModelChoiceField queries its options each time it renders: a page with an
    owner <select> per action would run one users query per action. These are
    queried on the first render only (a POST that saves renders nothing), then
    reused. Validation still reads each field's queryset.
    """

    def __init__(self) -> None:
        self._source: Any = None
        self._items: list[Any] | None = None

    def share(self, field: forms.Field) -> None:
        assert isinstance(field, forms.ModelChoiceField)
        if self._source is None:
            self._source = field.choices
        field.choices = self

    def __iter__(self) -> Iterator[Any]:
        if self._items is None:
            # iter() first: list() would ask the iterator's len(), a COUNT query.
            self._items = list(iter(self._source))
        yield from self._items


class BaseActionFormSet(BaseRowFormSet):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owners = SharedChoices()

    def add_fields(self, form: forms.Form, index: int | None) -> None:
        super().add_fields(form, index)
        self._owners.share(form.fields["owner"])


def _formset(
    form: type[forms.Form], formset: type[BaseRowFormSet] = BaseRowFormSet
) -> type[forms.BaseFormSet]:
    return formset_factory(form, formset=formset, extra=1, can_delete=True, max_num=200)


ImpactFormSet = _formset(ImpactForm)
RootCauseFormSet = _formset(RootCauseForm)
TimelineFormSet = _formset(TimelineForm)
ActionFormSet = _formset(ActionForm, BaseActionFormSet)


def _initial(value: Any) -> Any:
    # A stored Decimal("270.0000") is shown as 270, as the person typed it.
    if isinstance(value, Decimal):
        return Decimal(format(value.normalize(), "f"))
    return value


def initial_rows(queryset, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"id": obj.pk, **{name: _initial(getattr(obj, name)) for name in fields}}
        for obj in queryset
    ]


class ActionManageForm(forms.ModelForm):
    """What a manager may change on an action."""

    owner = UserChoiceField(queryset=active_users(), required=False, label=_("Owner"))
    # The status shown on the page: a change since then is a lost race.
    seen_status = forms.ChoiceField(
        choices=ActionStatus.choices, required=False, widget=forms.HiddenInput
    )

    class Meta:
        model = Action
        fields = ["status", "owner", "due_date"]
        widgets = {"due_date": DATE_WIDGET}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["seen_status"].initial = self.instance.status


class TransitionForm(forms.Form):
    to = forms.ChoiceField(choices=PostMortemStatus.choices)
    # The status shown on the page the button was on: a change since then is a
    # lost race (see services.postmortem_transition).
    current = forms.ChoiceField(choices=PostMortemStatus.choices, required=False)


class ConfirmImportForm(forms.Form):
    """The previewed page, sent back as text to be saved."""

    text = forms.CharField(widget=forms.HiddenInput, strip=False)
    title = forms.CharField(max_length=200, required=False, widget=forms.HiddenInput)
    file_name = forms.CharField(max_length=255, required=False, widget=forms.HiddenInput)

    def clean_text(self) -> str:
        text = self.cleaned_data["text"]
        if len(text.encode("utf-8")) > settings.POSTMORTEM_IMPORT_MAX_BYTES:
            raise forms.ValidationError(_("The page is too large to import."))
        return text


class ImportForm(forms.Form):
    file = forms.FileField(label=_("Markdown file"))
    title = forms.CharField(
        max_length=200,
        required=False,
        label=_("Title"),
        help_text=_("Only needed when the page's first heading does not name the incident."),
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > settings.POSTMORTEM_IMPORT_MAX_BYTES:
            raise forms.ValidationError(
                _("The file is too large (%(size)d bytes; at most %(max)d).")
                % {"size": upload.size, "max": settings.POSTMORTEM_IMPORT_MAX_BYTES}
            )
        return upload


class SearchForm(forms.Form):
    q = forms.CharField(required=False, label=_("Search"))
    status = forms.ChoiceField(
        choices=[("", _("Any status")), *PostMortemStatus.choices], required=False
    )
    severity = forms.ChoiceField(
        choices=[("", _("Any severity")), *Severity.choices], required=False
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.all(), required=False, empty_label=_("Any team")
    )
    since = forms.DateField(required=False, widget=DATE_WIDGET, label=_("From"))
    until = forms.DateField(required=False, widget=DATE_WIDGET, label=_("To"))

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            self.add_error("until", _("The end of the date range is before its start."))
        return data


class ActionFilterForm(forms.Form):
    """The actions overview: which ones a manager wants to see (every filter at once)."""

    STATES = [
        ("", _("Any state")),
        ("open", _("Open")),
        ("overdue", _("Overdue")),
        ("to_debate", _("To debate")),
        ("done_unverified", _("Done, not verified by a run")),
        ("verified", _("Verified by a run")),
        ("failed", _("Failed verification")),
        ("regressed", _("Regressed")),
    ]
    state = forms.ChoiceField(choices=STATES, required=False, label=_("State"))
    team = forms.ModelChoiceField(
        queryset=Team.objects.all(), required=False, empty_label=_("Any team"), label=_("Team")
    )
    owner = UserChoiceField(
        queryset=active_users(), required=False, empty_label=_("Any owner"), label=_("Owner")
    )
    kind = forms.ChoiceField(
        choices=[("", _("Any kind")), *ActionKind.choices], required=False, label=_("Kind")
    )
    severity = forms.ChoiceField(
        choices=[("", _("Any severity")), *Severity.choices], required=False, label=_("Severity")
    )
    status = forms.ChoiceField(
        choices=[("", _("Any status")), *ActionStatus.choices], required=False, label=_("Status")
    )
    due_from = forms.DateField(required=False, label=_("Due from"), widget=DATE_WIDGET)
    due_until = forms.DateField(required=False, label=_("Due until"), widget=DATE_WIDGET)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("due_from") and data.get("due_until") and data["due_until"] < data["due_from"]:
            self.add_error("due_until", _("The end of the due range is before its start."))
        return data
