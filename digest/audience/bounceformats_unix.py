"""Bounce notices of the Unix MTAs that write no RFC 3464 report (or a thin one), read by
the marks each writes: the readers read_formats tries after Exchange's and Domino's."""

from __future__ import annotations

from collections.abc import Callable

from .bounceformats import Listed

__all__ = ["READERS"]

READERS: tuple[Callable[[str], list[Listed]], ...] = ()
