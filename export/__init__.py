"""Export: train or load TensorFlow models, convert them to ONNX, check parity, publish.

Only ``aimass.export.data``, ``aimass.export.errors``, ``aimass.export.repository``,
``aimass.export.opsets``, ``aimass.export.zoo`` (the package, not its modules) and
``aimass.export.cli`` are free of TensorFlow; everything that trains or converts
imports it lazily, so that ``aimass --help`` and the worker never pay for it.
"""
