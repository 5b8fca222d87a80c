"""The one exception type for bad input: the CLI prints it as one clear message and exits 2."""


class InputError(Exception):
    """Bad input from the user: a message naming the file, the record and the fix."""

    def __init__(self, message: str, *, path=None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
