"""Writing result files so that a crash never leaves a half-written one."""

import json
import os
from pathlib import Path


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` as indented JSON through a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(temporary, path)


__all__ = ["write_json"]
