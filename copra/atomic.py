"""Atomic file output: write to a temporary name beside the target, rename on success only.

Temporary files and folders get the modes the umask gives (mkstemp's 0600 and mkdtemp's 0700
would make a shared results folder, cache or weights folder unreadable to the group).
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from copra.errors import InputError, file_system_failure


@contextlib.contextmanager
def cannot_write(target: Path):
    """A full disk, a read-only or unwritable folder while writing `target`: one InputError."""
    try:
        yield
    except OSError as error:
        message = file_system_failure(error, target)
        if message is None:
            raise
        raise InputError(message) from None


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target, suffix: str = ""):
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    `suffix` keeps an extension that a writer insists on (numpy adds `.npz` otherwise).
    """
    target = Path(target)
    with cannot_write(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent
        )
        os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~current_umask())
    try:
        with cannot_write(target):
            yield tmp
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target, text: str) -> None:
    """Write `text` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_table(target, frame) -> None:
    """Write a pandas frame as TSV atomically."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def write_tables(frames: dict) -> None:
    """Write several frames ({path: frame}) as TSV: all of them, or (on any failure) none."""
    with contextlib.ExitStack() as stack:
        temporary = {path: stack.enter_context(atomic_path(path)) for path in frames}
        for path, frame in frames.items():
            with cannot_write(Path(path)):
                frame.to_csv(temporary[path], sep="\t", index=False)


@contextlib.contextmanager
def atomic_directory(target):
    """Yield a temporary folder beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    with cannot_write(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o777 & ~current_umask())
    try:
        with cannot_write(target):
            yield tmp
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
