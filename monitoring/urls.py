from django.urls import path

from monitoring.exporter import metrics_view

urlpatterns = [path("metrics", metrics_view, name="metrics")]
