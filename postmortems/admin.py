from django.contrib import admin

from .models import (
    Action,
    ExtraSection,
    HistoryEntry,
    ImpactFigure,
    PostMortem,
    RootCause,
    Team,
    TimelineEntry,
)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "manager")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("members",)


class ImpactInline(admin.TabularInline):
    model = ImpactFigure
    extra = 0


class RootCauseInline(admin.TabularInline):
    model = RootCause
    extra = 0


class TimelineInline(admin.TabularInline):
    model = TimelineEntry
    extra = 0


class ActionInline(admin.StackedInline):
    model = Action
    extra = 0


class ExtraSectionInline(admin.StackedInline):
    model = ExtraSection
    extra = 0


@admin.register(PostMortem)
class PostMortemAdmin(admin.ModelAdmin):
    list_display = ("title", "severity", "status", "team", "started_at", "created_at")
    list_filter = ("status", "severity", "team", "is_private")
    search_fields = ("title", "summary")
    filter_horizontal = ("authors",)
    readonly_fields = ("created_at", "updated_at", "published_at", "created_by")
    inlines = [ImpactInline, RootCauseInline, TimelineInline, ActionInline, ExtraSectionInline]


@admin.register(Action)
class ActionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "postmortem", "kind", "status", "owner", "due_date")
    list_filter = ("status", "kind")
    search_fields = ("title", "description")
    list_select_related = ("postmortem", "owner")


@admin.register(ImpactFigure)
class ImpactFigureAdmin(admin.ModelAdmin):
    list_display = ("label", "value", "unit", "window", "postmortem")


@admin.register(RootCause)
class RootCauseAdmin(admin.ModelAdmin):
    list_display = ("__str__", "category", "postmortem")


@admin.register(TimelineEntry)
class TimelineEntryAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "text", "postmortem")


@admin.register(ExtraSection)
class ExtraSectionAdmin(admin.ModelAdmin):
    list_display = ("heading", "postmortem")


@admin.register(HistoryEntry)
class HistoryEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "postmortem", "subject", "verb", "actor")
    readonly_fields = ("postmortem", "action", "actor", "at", "subject", "verb", "changes")
