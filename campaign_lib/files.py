"""Small file helpers shared by the server and process managers."""

from pathlib import Path


def last_log_line(path: Path) -> str:
    """The last non-empty line of a log file, for one-line error messages."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log written"
    return lines[-1] if lines else "empty log"
