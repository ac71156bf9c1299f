"""aimass worker: Celery workers that serve ONNX models with dynamic batching."""
