"""Files a replica or its supervisor writes for others to watch (ready files, the farm's state)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomically(path: Path, document: dict) -> None:
    """Write then rename, so a watcher never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)
