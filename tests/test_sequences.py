"""Tests for copra.sequences: FASTA reading through biopython, alphabet checks, content hashes.

Every bad input is its own test, and every message must name the file and the line or record.
"""

import hashlib

import pytest

from copra.errors import InputError
from copra.sequences import ALPHABET, clean_sequence, read_fasta, sequence_hash


def _fasta(tmp_path, text, name="proteins.fasta"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _error(path) -> str:
    with pytest.raises(InputError) as caught:
        read_fasta(path)
    return str(caught.value)


# --- content hashes ------------------------------------------------------------------------


def test_sequence_hash_is_a_sha256_prefix_of_the_sequence():
    key = sequence_hash("MKTAYIAK")
    assert key == hashlib.sha256(b"MKTAYIAK").hexdigest()[:32]
    assert len(key) == 32 and set(key) <= set("0123456789abcdef")


def test_sequence_hash_depends_on_content_only():
    assert sequence_hash("MKT") == sequence_hash("MKT")
    assert sequence_hash("MKT") != sequence_hash("MKA")
    assert sequence_hash("MKT") != sequence_hash("MKTA")


# --- clean_sequence ------------------------------------------------------------------------


def test_clean_sequence_upper_cases_and_drops_whitespace():
    assert clean_sequence("mk ta\tyi\n", path="f", line=1, record="r") == "MKTAYI"


def test_clean_sequence_drops_a_terminal_stop():
    assert clean_sequence("MKT*", path="f", line=1, record="r") == "MKT"


def test_clean_sequence_keeps_nonstandard_residues_as_they_are():
    assert clean_sequence("uobzxM", path="f", line=1, record="r") == "UOBZXM"
    assert set("UOBZX") <= ALPHABET


def test_clean_sequence_rejects_an_internal_stop():
    with pytest.raises(InputError, match=r"f:3: record 'r' has '\*' at residue 2"):
        clean_sequence("M*K", path="f", line=3, record="r")


def test_clean_sequence_rejects_empty_and_stop_only():
    for raw in ("", "  \n", "*"):
        with pytest.raises(InputError, match="f:7: record 'r' has an empty sequence"):
            clean_sequence(raw, path="f", line=7, record="r")


def test_clean_sequence_reports_the_first_bad_residue_and_the_count():
    with pytest.raises(InputError) as caught:
        clean_sequence("MK-A1", path="f", line=2, record="r")
    message = str(caught.value)
    assert message.startswith("f:2: record 'r' has '-' at residue 3")
    assert "2 such residue(s)" in message


def test_clean_sequence_maps_the_residue_position_to_a_line():
    with pytest.raises(InputError, match=r"^f:40: .*residue 5"):
        clean_sequence("MKTA#", path="f", line=1, record="r", residue_line=lambda p: 40 - 4 + p)


# --- read_fasta: good input ----------------------------------------------------------------


def test_read_fasta_reads_multi_line_records_with_their_header_lines(tmp_path):
    path = _fasta(tmp_path, ">a first\nMKTA\nYIAK\n>b\nGSHM\n\n>c\nLLL\n")
    records = read_fasta(path)
    assert [(r.id, r.sequence, r.line) for r in records] == [
        ("a", "MKTAYIAK", 1),
        ("b", "GSHM", 4),
        ("c", "LLL", 7),
    ]
    assert records[0].description == "a first"


def test_read_fasta_upper_cases_and_drops_a_terminal_stop(tmp_path):
    records = read_fasta(_fasta(tmp_path, ">a\nmkta\nyiak*\n"))
    assert records[0].sequence == "MKTAYIAK"


def test_read_fasta_keeps_u_o_b_z_x(tmp_path):
    records = read_fasta(_fasta(tmp_path, ">a\nMUOBZX\n>b\nuobzx\n"))
    assert [r.sequence for r in records] == ["MUOBZX", "UOBZX"]


def test_read_fasta_accepts_ids_with_slashes_colons_and_descriptions(tmp_path):
    path = _fasta(tmp_path, ">demo:prot/0001 a membrane protein: GN=abc/1\nMK\n>sp|P1|X_Y\nGG\n")
    records = read_fasta(path)
    assert [r.id for r in records] == ["demo:prot/0001", "sp|P1|X_Y"]
    assert records[0].description == "demo:prot/0001 a membrane protein: GN=abc/1"


def test_read_fasta_accepts_a_repeated_id_with_the_same_sequence_once(tmp_path):
    records = read_fasta(_fasta(tmp_path, ">a\nMKT\n>b\nGG\n>a\nmk\nt*\n"))
    assert [(r.id, r.sequence, r.line) for r in records] == [("a", "MKT", 1), ("b", "GG", 3)]


def test_read_fasta_accepts_windows_line_endings(tmp_path):
    records = read_fasta(_fasta(tmp_path, b">a\r\nMK\r\nTA\r\n>b\r\nGG\r\n"))
    assert [(r.id, r.sequence, r.line) for r in records] == [("a", "MKTA", 1), ("b", "GG", 4)]


def test_read_fasta_accepts_blank_lines_before_the_first_header(tmp_path):
    records = read_fasta(_fasta(tmp_path, "\n\n>a\nMK\n"))
    assert [(r.id, r.sequence, r.line) for r in records] == [("a", "MK", 3)]


# --- read_fasta: bad input -----------------------------------------------------------------


def test_missing_fasta_file_is_named(tmp_path):
    path = tmp_path / "absent.fasta"
    assert _error(path) == f"{path}: FASTA file not found"


def test_text_before_the_first_header_names_its_line(tmp_path):
    path = _fasta(tmp_path, "\n# made by hand\n>a\nMK\n")
    message = _error(path)
    assert message.startswith(f"{path}:2: text before the first '>' header line")


def test_sequence_without_any_header_is_rejected(tmp_path):
    path = _fasta(tmp_path, "MKTAYIAK\n")
    assert _error(path).startswith(f"{path}:1: text before the first '>' header")


def test_non_utf8_file_names_the_file_and_line(tmp_path):
    path = _fasta(tmp_path, b">a\nMKTA\n>b\nGG\xff\xfeGG\n")
    message = _error(path)
    assert message.startswith(f"{path}:4: byte 0xff is not UTF-8 (latin-1 or Windows-1252")
    assert "iconv -f latin1 -t UTF-8" in message


def test_binary_file_is_rejected(tmp_path):
    path = _fasta(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    message = _error(path)
    assert message.startswith(f"{path}:3: holds NUL bytes: a binary file or UTF-16 text")


def test_empty_file_is_rejected(tmp_path):
    path = _fasta(tmp_path, "")
    assert _error(path) == f"{path}: no FASTA records (a record starts with a '>' header line)"


def test_blank_only_file_is_rejected_as_empty(tmp_path):
    path = _fasta(tmp_path, "\n  \n\t\n")
    assert _error(path).startswith(f"{path}: no FASTA records")


def test_empty_sequence_names_the_record_and_its_header_line(tmp_path):
    path = _fasta(tmp_path, ">a\nMK\n>b\n\n>c\nGG\n")
    assert _error(path) == f"{path}:3: record 'b' has an empty sequence"


def test_empty_last_record_is_rejected(tmp_path):
    path = _fasta(tmp_path, ">a\nMK\n>b\n")
    assert _error(path) == f"{path}:3: record 'b' has an empty sequence"


def test_stop_only_record_is_an_empty_sequence(tmp_path):
    path = _fasta(tmp_path, ">a\n*\n")
    assert _error(path) == f"{path}:1: record 'a' has an empty sequence"


def test_header_without_an_id_is_rejected(tmp_path):
    path = _fasta(tmp_path, ">a\nMK\n>\nGG\n")
    assert _error(path) == f"{path}:3: header line without an id"


def test_duplicate_id_with_a_different_sequence_names_both_lines(tmp_path):
    path = _fasta(tmp_path, ">a\nMKT\n>b\nGG\n>a\nMKA\n")
    message = _error(path)
    assert message.startswith(f"{path}:5: id 'a' appears again with a different sequence")
    assert "first at line 1" in message


def test_bad_character_names_residue_and_file_line(tmp_path):
    # Residue 11 of record 'b' is the '1' on the third of its sequence lines (file line 7).
    path = _fasta(tmp_path, ">a\nMK\n>b\nMKTA\nYIAK\n\nQR1S\n")
    message = _error(path)
    assert message.startswith(f"{path}:7: record 'b' has '1' at residue 11")
    assert "outside the amino-acid alphabet" in message


def test_gap_character_is_rejected(tmp_path):
    path = _fasta(tmp_path, ">a\nMK-TA\n")
    assert _error(path).startswith(f"{path}:2: record 'a' has '-' at residue 3")


def test_internal_stop_is_rejected(tmp_path):
    path = _fasta(tmp_path, ">a\nMKT\nA*YI\n")
    assert _error(path).startswith(f"{path}:3: record 'a' has '*' at residue 5")


def test_bad_character_line_ignores_spaces_within_lines(tmp_path):
    path = _fasta(tmp_path, ">a\nMK TA\nYI J\n")
    assert _error(path).startswith(f"{path}:3: record 'a' has 'J' at residue 7")


def test_form_feed_in_a_sequence_line_does_not_shift_line_numbers(tmp_path):
    path = _fasta(tmp_path, ">a\nMK\fTA\n>b\nG1\n")
    assert _error(path).startswith(f"{path}:4: record 'b' has '1' at residue 2")


def test_a_folder_given_as_the_fasta_is_named_a_folder(tmp_path):
    assert _error(tmp_path) == f"{tmp_path}: is a folder, not a FASTA file; name the file itself"


def test_a_byte_order_mark_before_the_first_header_is_dropped(tmp_path):
    path = tmp_path / "marked.fasta"
    path.write_bytes("\ufeff>a\nMKTA\n".encode())
    assert [(r.id, r.sequence) for r in read_fasta(path)] == [("a", "MKTA")]


def test_a_gzipped_fasta_is_read(tmp_path):
    import gzip

    path = tmp_path / "proteins.fasta.gz"
    path.write_bytes(gzip.compress(b">a\nMKTA\n>b\nGSHM\n"))
    assert [r.sequence for r in read_fasta(path)] == ["MKTA", "GSHM"]
