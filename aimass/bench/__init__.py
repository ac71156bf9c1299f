"""``aimass bench``: how close aimass comes to ONNX Runtime alone, and to a plain Celery
worker, on one machine. See docs/performance.md for the method and the latest figures."""
