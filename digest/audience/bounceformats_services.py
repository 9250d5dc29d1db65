"""Bounce notices of mail services and filtering gateways, read by the marks each writes:
the readers read_formats tries after the Unix MTAs'."""

from __future__ import annotations

from collections.abc import Callable

from .bounceformats import Listed

__all__ = ["READERS"]

READERS: tuple[Callable[[str], list[Listed]], ...] = ()
