"""The text files users hand the pipeline (FASTA, label tables, configs), read as UTF-8: gzip is
accepted, a byte-order mark dropped, and anything else gets a message saying what the file is
(a folder, a workbook, UTF-16 or latin-1 text) and how to make it readable."""

import gzip
from pathlib import Path

from copra.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
UTF8_MARK = "\ufeff"


def read_text(path, what: str) -> str:
    """The text of `path`, a `what` (e.g. "FASTA file"), or an InputError saying why not."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"is a folder, not a {what}; name the file itself", path=path)
    if not path.is_file():
        raise InputError(f"{what} not found", path=path)
    data = path.read_bytes()
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise InputError(f"a damaged gzip file ({error})", path=path) from None
    if data.startswith(ZIP_MAGIC):
        raise InputError(
            f"is a zip archive (an Excel .xlsx workbook?), not a text {what}: save the sheet "
            "as CSV (UTF-8) or as tab-separated text",
            path=path,
        )
    if data.startswith(UTF16_MARKS):
        raise InputError(
            "is UTF-16 text (a 'Unicode text' export), not UTF-8: save it again as UTF-8 "
            "(Excel: 'CSV UTF-8'), or convert it: iconv -f UTF-16 -t UTF-8",
            path=path,
        )
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        message = f"holds NUL bytes: a binary file or UTF-16 text, not a text {what}"
        raise InputError(message, path=path, line=line)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"byte {data[error.start]:#04x} is not UTF-8 (latin-1 or Windows-1252 text?): save "
            "the file again as UTF-8, or convert it: iconv -f latin1 -t UTF-8",
            path=path,
            line=data[: error.start].count(b"\n") + 1,
        ) from None
    return text.removeprefix(UTF8_MARK)
