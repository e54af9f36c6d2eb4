from django.contrib import admin

from .models import DumpSource, Restore, ReviewEnvironment, Snapshot


@admin.register(DumpSource)
class DumpSourceAdmin(admin.ModelAdmin):
    list_display = ("name", "dsn_env", "dsn_file", "policy_hash", "updated_at")
    readonly_fields = ("policy_hash", "created_at", "updated_at")


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ("id", "source", "status", "stage", "size_bytes", "created_at", "deleted_at")
    list_filter = ("status", "source")
    readonly_fields = [f.name for f in Snapshot._meta.fields]


@admin.register(ReviewEnvironment)
class ReviewEnvironmentAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "database_name", "current_snapshot", "last_restored_at")
    readonly_fields = ("port", "recorded_settings", "last_restored_at", "current_snapshot")


@admin.register(Restore)
class RestoreAdmin(admin.ModelAdmin):
    list_display = ("id", "environment", "snapshot", "status", "tables_done", "tables_total")
    list_filter = ("status", "environment")
    readonly_fields = [f.name for f in Restore._meta.fields]
