"""Jinja2 → premailer, once per edition variant; the per-subscriber parts stay
placeholders that message building fills in by cheap substitution."""

from __future__ import annotations

import html
import logging
import secrets
import string
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import jinja2
import premailer

from ..config import Settings
from ..content.edition import ALL_TOPICS, EditionContent, Editorial, Limits, build_content
from ..errors import ConfigError
from ..resources import package_resource
from ..store.models import Article
from ..tokens import ClickSigner

__all__ = [
    "GMAIL_CLIP_BYTES",
    "HTML_BUDGET",
    "PERSONAL_FIELDS",
    "SUBJECT_MAX",
    "Personal",
    "RenderedVariant",
    "Renderer",
    "day",
    "new_placeholders",
    "template_loader",
]

# The per-subscriber fields a template may place: {{ greeting }}, {{ email }}, …
PERSONAL_FIELDS = ("greeting", "email", "unsubscribe_url", "preferences_url")

# Subjects longer than this are cut at a word and end in "…": inboxes show about 60–90
# characters, and a subject built from a hostile or careless title must stay a subject.
SUBJECT_MAX = 160


def new_placeholders() -> dict[str, str]:
    """The per-subscriber fields as they appear in one rendering, field → placeholder.

    Only [A-Z_], which neither Jinja2, premailer nor quoted-printable changes. Each
    rendering draws its own random part: article text is fixed before the draw, so no
    feed or import can contain a placeholder and have a reader's address or unsubscribe
    link filled into its own words or URLs."""
    nonce = "".join(secrets.choice(string.ascii_uppercase) for _ in range(24))
    return {name: f"__DIGEST_{nonce}_{name.upper()}__" for name in PERSONAL_FIELDS}

# One fixed option set: premailer caches parsed CSS per option set, and network access is
# never wanted (DESIGN: premailer never touches the network).
_PREMAILER_OPTIONS = dict(
    allow_network=False,
    allow_loading_external_files=False,
    disable_validation=True,
    cssutils_logging_level=logging.CRITICAL,
    remove_classes=False,
    strip_important=False,
    disable_link_rewrites=True,
    # bgcolor= and friends are obsolete HTML; the inlined CSS carries the colours.
    disable_basic_attributes=["bgcolor", "width", "height", "align", "valign"],
)


@dataclass(frozen=True)
class Personal:
    """The per-subscriber values filled into a rendered variant."""

    greeting: str
    email: str
    unsubscribe_url: str
    preferences_url: str


# Gmail clips an HTML part larger than about 102 KB, hiding the rest (the footer with
# the unsubscribe link among it). Rendered variants stay under this, which leaves room
# for the per-subscriber values.
GMAIL_CLIP_BYTES = 102 * 1024
HTML_BUDGET = 100_000
_SHORTER_TEASERS = (30, 20, 12)


@dataclass(frozen=True)
class RenderedVariant:
    subject: str
    html: str        # inlined; contains the placeholders
    text: str        # contains the placeholders
    articles: int    # articles shown
    topics: int = 0
    total: int = 0   # articles in the variant, shown or behind "more stories" links
    # field → placeholder, drawn for this rendering (see new_placeholders)
    placeholders: dict[str, str] = field(default_factory=new_placeholders)

    def personalise(self, personal: Personal) -> tuple[str, str]:
        """(html, text) for one subscriber, each value escaped for its context."""
        out_html, out_text = self.html, self.text
        for name, token in self.placeholders.items():
            value = getattr(personal, name)
            out_html = out_html.replace(token, html.escape(value, quote=True))
            out_text = out_text.replace(token, value)
        return out_html, out_text


def _shrinking(words: int, cap: int) -> Iterator[tuple[int, int]]:
    """(teaser words, articles shown) to try in turn: as configured, then shorter teasers,
    then a fifth fewer articles each time, down to one."""
    yield words, cap
    for shorter in _SHORTER_TEASERS:
        if shorter < words:
            words = shorter
            yield words, cap
    while cap > 1:
        cap = max(1, int(cap * 0.8))
        yield words, cap


def _shorten(value: str, limit: int) -> str:
    """value, or its longest start of whole words within limit characters, then "…"."""
    if len(value) <= limit:
        return value
    cut = value[:limit - 1]
    if " " in cut and not value[limit - 1].isspace():
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:—-") + "…"


def day(value: datetime) -> str:
    return f"{value.day} {value:%b %Y}"


def _wrap(value: str, width: int = 72, indent: str = "") -> str:
    return textwrap.fill(value, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def _wrap_lines(value: str, width: int = 72) -> str:
    """Each line wrapped on its own: paragraphs, list items and blank lines stay."""
    return "\n".join(_wrap(line, width) if line.strip() else "" for line in value.splitlines())


def template_loader(settings: Settings) -> jinja2.BaseLoader:
    """The templates of mail and web pages alike: the user's templates_dir (when set) over
    the built-in ones. ConfigError when templates_dir is not a folder."""
    loaders: list[jinja2.BaseLoader] = []
    if settings.digest.templates_dir:
        path = settings.resolve_path(settings.digest.templates_dir)
        if not path.is_dir():
            raise ConfigError(f"[digest] templates_dir {path} is not a directory")
        loaders.append(jinja2.FileSystemLoader(path))
    loaders.append(jinja2.FileSystemLoader(package_resource("templates")))
    return jinja2.ChoiceLoader(loaders)


class Renderer:
    """Renders edition content with the user's templates_dir over the built-in templates."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = jinja2.Environment(
            loader=template_loader(settings),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"),
                                                default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["day"] = day
        self.env.filters["wrap"] = _wrap
        self.env.filters["wrap_lines"] = _wrap_lines

    def subject(self, content: EditionContent, *, test: bool = False) -> str:
        d = self.settings.digest
        top = content.top_story
        if content.subject:
            subject = _shorten(" ".join(content.subject.split()), SUBJECT_MAX)
            return f"[TEST] {subject}" if test else subject
        try:
            subject = d.subject.format(name=d.name, date=day(content.date),
                                       number=content.number, count=content.total,
                                       top_story=top.title if top else "")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"[digest] subject pattern {d.subject!r} is invalid ({exc}); "
                              f"use {{name}}, {{date}}, {{number}}, {{count}}, {{top_story}}"
                              ) from None
        subject = _shorten(" ".join(subject.split()).rstrip(" :—-"), SUBJECT_MAX)
        return f"[TEST] {subject}" if test else subject

    def render(self, content: EditionContent, *, test: bool = False) -> RenderedVariant:
        """The variant's subject, inlined HTML and text, with placeholders for each
        subscriber's parts. Runs Jinja2 and premailer once."""
        d = self.settings.digest
        placeholders = new_placeholders()
        context = {
            "digest": d,
            "edition": content,
            "sections": content.sections,
            "subject": self.subject(content, test=test),
            "preheader": " · ".join(e.title for s in content.sections
                                    for e in s.entries[:1])[:180],
            **placeholders,
        }
        try:
            raw_html = self.env.get_template("digest.html.j2").render(context)
            text = self.env.get_template("digest.txt.j2").render(context)
        except jinja2.TemplateError as exc:
            where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "template"
            line = getattr(exc, "lineno", None)
            raise ConfigError(f"{where}{f':{line}' if line else ''}: template error: "
                              f"{exc}") from None
        inlined = premailer.Premailer(raw_html, **_PREMAILER_OPTIONS).transform()
        return RenderedVariant(self.subject(content, test=test), inlined, text.strip() + "\n",
                               content.shown, len(content.sections), content.total,
                               placeholders)

    def render_edition(self, articles: Sequence[Article], number: int, date: datetime,
                       variant: str = ALL_TOPICS, *, test: bool = False,
                       editorial: Editorial | None = None) -> RenderedVariant:
        """Group, cap and render one variant, within the HTML budget: when it is too large,
        first the teasers get shorter, then fewer articles are shown (the rest stay one
        click away, behind each topic's "more stories" link to the online edition)."""
        clicks = self._click_links(number)
        for words, cap in _shrinking(self.settings.digest.teaser_words,
                                     self.settings.digest.max_articles):
            content = build_content(articles, self.settings, number, date, variant,
                                    Limits(max_articles=cap, teaser_words=words,
                                           clicks=clicks), editorial)
            rendered = self.render(content, test=test)
            if len(rendered.html.encode()) <= HTML_BUDGET or cap <= 1:
                return rendered
        raise AssertionError("_shrinking always ends with a cap of 1")

    def _click_links(self, number: int) -> Callable[[int], str] | None:
        """With [tracking] clicks on: article id → its tracked link in edition `number`,
        the same in every reader's message (None: the articles' own links)."""
        if not self.settings.tracking.clicks:
            return None
        signer, base = ClickSigner(self.settings.signing_key), self.settings.digest.base_url
        return lambda article_id: signer.link(base, number, article_id)
