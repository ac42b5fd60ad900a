"""Progress lines of long work (training steps, exports, pipeline stages).

They go to stdout, flushed, like the progress of `keras.Model.fit`: a person watching a run reads
them, and a wrapper can parse them. Warnings and diagnostics go through absl logging.
"""

from __future__ import annotations


def log(message: str) -> None:
    print(message, flush=True)


def format_duration(seconds: float) -> str:
    """H:MM:SS."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
