"""The one exception type for bad input: the CLI prints it as one clear message and exits 2;
and the message for the file-system failures a user can fix (permissions, a full disk)."""

import errno
from pathlib import Path

FOLDERS = "results: run in another folder; the cache: embedding.cache_dir; weights: weights_dir"
FAILURES = {
    errno.EACCES: "permission denied: make it writable (readable) for you, or use another folder",
    errno.EPERM: "not permitted: make it writable (readable) for you, or use another folder",
    errno.EROFS: "a read-only file system: use a folder on a writable one",
    errno.ENOSPC: "no space left on the device: free some, or use a folder on another disk",
    errno.EDQUOT: "the disk quota is used up: free some, or use a folder on another disk",
}


class InputError(Exception):
    """Bad input from the user: a message naming the file, the record and the fix."""

    def __init__(self, message: str, *, path=None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


def file_system_failure(error: OSError, target=None) -> str | None:
    """One message for an OSError a user can fix, naming the path (None for other errors)."""
    if error.errno not in FAILURES:
        return None
    path = Path(target or error.filename or "")
    if path.name.startswith(".") and ".tmp" in path.name:  # an atomic write's temporary name
        path = path.parent
    where = f"{path}: " if str(path) not in ("", ".") else ""
    return f"{where}{FAILURES[error.errno]} ({FOLDERS})"
