"""The Celery app built from the environment, for ``celery -A aimass.worker.main ...``.

This is the one module that reads the environment when imported, because Celery's
own command line imports the app by name. aimass's CLI builds its app explicitly.
"""

from __future__ import annotations

from aimass.protocol.settings import SettingsError
from aimass.worker.app import create_app
from aimass.worker.settings import WorkerSettings

try:
    app = create_app(WorkerSettings.from_env())
except SettingsError as error:  # one line, as `aimass` says it, not a traceback
    raise SystemExit(f"aimass: error: {error}") from None
