"""WSGI entry point for gunicorn: ``gunicorn 'recsys.serve.wsgi:app'``.

Settings come from the environment (``RECSYS_WAREHOUSE``, ``RECSYS_SERVE`` as JSON or ``RECSYS_SERVE__<FIELD>``),
which :func:`recsys.serve.server.run_server` fills. Imported in each worker after the fork (no ``--preload``), so
every worker maps the snapshot files itself and runs its own reload checks.
"""

from __future__ import annotations

import logging
import sys

from recsys.serve.app import create_app
from recsys.serve.settings import ServeEnv

if not logging.getLogger().handlers:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s")

_env = ServeEnv()
app = create_app(_env.warehouse, _env.serve, wait_for_build=False,   # never block boot past gunicorn's timeout
                 ab=_env.monitor.ab)
