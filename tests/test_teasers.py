from __future__ import annotations

from conftest import SEED, need

from digest.content.teasers import clean_text, make_teaser, split_highlights, teaser_for
from digest.ingest import parse_path


def test_seed_becomes_a_clean_entry() -> None:
    [record] = next(parse_path(need(SEED))).records
    assert record.title == "OpenAI Executive Jan Leike Resigns, Citing Safety Concerns"
    assert record.summary and record.summary.startswith(
        "Jan Leike, OpenAI's alignment lead, resigns")
    assert record.title not in record.body
    for junk in ("ADVERTISEMENT", "Show Full Article", "Print Article", "Next Story",
                 "More Stories", "Highlights"):
        assert junk not in record.body
    assert "\nx\n" not in record.body
    assert teaser_for(record.summary, record.body, 45).startswith(
        "Jan Leike, OpenAI's alignment lead, resigns")


def test_teaser_keeps_whole_sentences_and_marks_shortening() -> None:
    text = ("The first sentence has exactly eight words here. The second one is "
            "a bit longer than the first one was. Third.")
    assert make_teaser(text, 100) == text
    assert make_teaser(text, 12) == "The first sentence has exactly eight words here…"
    long = "word " * 60
    teaser = make_teaser(long, 45)
    assert teaser.endswith("…") and len(teaser.split()) == 45
    assert make_teaser("Mr. Smith went to Washington. He stayed there.", 7) == \
        "Mr. Smith went to Washington…"


def test_teaser_never_cuts_a_word() -> None:
    text = "Supercalifragilistic expialidocious antidisestablishmentarianism " * 10
    teaser = make_teaser(text, 7)
    words = teaser.rstrip("…").split()
    assert all(w in {"Supercalifragilistic", "expialidocious", "antidisestablishmentarianism"}
               for w in words)


def test_clean_text_folds_entities_tags_and_whitespace() -> None:
    raw = "<p>Caf&eacute;   &amp;\t bar</p>\n\n<div>ADVERTISEMENT</div><p>x</p><p>Next  line</p>"
    assert clean_text(raw) == "Café & bar\n\nNext line"


def test_highlights_block_becomes_the_summary() -> None:
    summary, rest = split_highlights("Intro\n\nKey points:\nOne thing.\nAnother.\n\nBody here.")
    assert summary == "One thing. Another."
    assert rest == "Intro\n\nBody here."


def test_explicit_summary_preferred_and_feed_trailer_dropped() -> None:
    summary = "A clear summary of the story in a few words. [&hellip;]"
    assert teaser_for(summary, "Body text that is different.", 45) == \
        "A clear summary of the story in a few words."


def test_a_summary_cut_from_the_body_gives_way_to_the_body() -> None:
    body = "MyPhone v.2.11\n\nDeveloper: someone\n\nLanguage: English and more words here."
    glued = "MyPhone v.2.11Developer: someoneLanguage: English and..."
    assert teaser_for(glued, body, 45) == ("MyPhone v.2.11 Developer: someone Language: English "
                                           "and more words here.")
