"""aimass: queue-based inference for TensorFlow models exported to ONNX.

``aimass.producer`` is the wire contract and the client, ``aimass.worker`` the Celery
workers, ``aimass.export`` the exporter; this package's own modules (the ``aimass``
command, the local stack, the demo, the benchmark) sit above them and may import each.
Importing ``aimass`` imports none of them.
"""

__version__ = "0.1.0"
