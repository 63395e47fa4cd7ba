"""The namespace of every figure the product exposes to Prometheus (each app's own
``metrics.py`` and ``monitoring``), said once."""

PREFIX = "liveshop"
