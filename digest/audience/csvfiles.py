"""CSV files people bring from elsewhere (a spreadsheet, another newsletter service):
their text, in whatever common encoding they were saved, and which of their columns holds
which field, by the names other services give them. Subscriber and suppression imports
both read their files through here."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ..errors import InputError
from ..text import decode_text

__all__ = ["CsvText", "map_header", "read_csv_text"]


class CsvText:
    """A CSV file's name (for messages), its text, and the encoding it was read as when
    that was not UTF-8 (None for UTF-8, with or without a byte-order mark)."""

    def __init__(self, name: str, text: str, encoding: str | None = None) -> None:
        self.name = name
        self.text = text
        self.encoding = encoding

    @property
    def note(self) -> str | None:
        """What to tell the user about the encoding, if anything."""
        return (f"{self.name}: not UTF-8; read as {self.encoding} (save it as UTF-8 CSV to "
                f"be sure)") if self.encoding else None


def read_csv_text(source: Path | TextIO) -> CsvText:
    """The text of a CSV file, or of a stream ("-": stdin, already text). A file that is
    not UTF-8 is read in the encoding charset detection is sure of (a spreadsheet's
    Latin-1 or Windows-1252 export), the same decoding as for article text files; one it
    cannot tell is refused naming the first invalid byte."""
    if not isinstance(source, Path):
        return CsvText("<stdin>", source.read().lstrip("\ufeff"))
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{source}: is a folder; give a CSV file") from None
    except OSError as exc:
        raise InputError(f"{source}: {exc.strerror or exc}") from None
    try:
        text, encoding = decode_text(data)
    except ValueError as exc:
        raise InputError(f"{source}: {exc} CSV") from None
    return CsvText(str(source), text, encoding)


def _simple(name: str) -> str:
    """A column name as compared: lower case, "_", "-" and runs of spaces as one space
    ("Email_Address", "e-mail" and "EMAIL ADDRESS" alike)."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower().lstrip("\ufeff")).strip()


def map_header(header: Sequence[str], fields: Mapping[str, Sequence[str]],
               unique: Sequence[str] = ()) -> dict[str, int]:
    """Which column (by index) holds each field, from a header row and, for each field,
    the names other services give it, most specific first. A column named exactly as one
    of a field's names is taken first; then a field still missing takes the first free
    column whose name contains one of its names, fields in the order given (so put
    "first name" before "name"). Fields no column names are left out. A field in unique
    that two columns name exactly (an export with "Email Address" and "email") is
    refused: which one holds the address is not for us to guess."""
    names = [_simple(h) for h in header]
    for field_name in unique:
        exact = [header[i] for i, name in enumerate(names)
                 if name in map(_simple, fields[field_name])]
        if len(exact) > 1:
            raise InputError(f"the header row names {len(exact)} {field_name} columns "
                             f"({', '.join(exact)}): keep one, or rename the others")
    found: dict[str, int] = {}
    for field_name, words in fields.items():
        for word in map(_simple, words):
            if field_name in found:
                break
            for i, name in enumerate(names):
                if name == word and i not in found.values():
                    found[field_name] = i
                    break
    for field_name, words in fields.items():
        if field_name in found:
            continue
        for i, name in enumerate(names):
            if i not in found.values() and any(_simple(w) in name for w in words):
                found[field_name] = i
                break
    return found
