"""The wire contract that the client, the worker and the exporter share.

Task names, job messages and result records (``contract``, ``messages``, ``records``),
the Redis key space (``keys``), the manifest and repository layout (``manifest``),
tensor and image encodings (``codecs``), typed errors (``errors``), the JSON Schemas
(``schema``), worker heartbeats (``heartbeats``), trace context (``tracing``), and the
plumbing both ends need: connections, pub/sub and settings.

Imports nothing else of aimass: ``aimass.producer``, ``aimass.worker`` and
``aimass.export`` import it, never the other way round.
"""
