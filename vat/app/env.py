"""The demo process's environment, set before gradio is imported (vat.app imports this first): no
telemetry, and one temporary folder for everything the process writes."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Offline-first: gradio's usage telemetry would phone home on every launch and event.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Everything this process writes goes under one temporary folder, gradio's cache included (uploads
# and outputs): removed at exit, and on SIGTERM (see app.main), whether or not gradio's own shutdown
# gets to clean up. The demo's files live inside it too, so gradio serves them without a copy.
# gradio reads GRADIO_TEMP_DIR when it is imported: hence this module, before any gradio import.
os.makedirs(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir(), exist_ok=True)
PROCESS_TEMP = Path(tempfile.mkdtemp(prefix="vat-app-", dir=os.environ.get("GRADIO_TEMP_DIR")))
os.environ["GRADIO_TEMP_DIR"] = str(PROCESS_TEMP)
atexit.register(shutil.rmtree, PROCESS_TEMP, True)
