from django.apps import AppConfig


class PerfrunsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "perfruns"
    verbose_name = "Performance runs"
