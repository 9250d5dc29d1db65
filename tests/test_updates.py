"""A story the previous edition told goes on: new reports of it come as an update, late
or copied reports of what was sent are left out.

The news items are real: AG News items (tests/data/topics, see SOURCES.md) about one
event reported by three outlets (the Pope's Mass at Lourdes, 15 August 2004: the AP's
report, the Boston Globe's run of the same AP text, Reuters' report of the end of the
visit), and two other stories, dated around the test's clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import NOW, Digest, smtp_env, sql
from test_topics import item

from digest.clock import FixedClock
from digest.mail.loopback import LoopbackSMTPServer

AP_MASS = 342        # Pope Struggles Through Mass at Lourdes (AP)
GLOBE_MASS = 488     # Pope struggles at shrine Mass (the AP text, in the Boston Globe)
REUTERS_END = 334    # Frail Pope Ends Tiring Lourdes Pilgrimage (Reuters)
LOWES = 536          # Lowe's Second-Quarter Profit Rises
INDIANS = 185        # Indians Beat Twins 7-1, Nearing AL Lead (AP)

SUBSCRIBERS = ("email,name,topics,timezone\n"
               "ada@example.org,Ada,,Europe/London\n"
               "grace@example.org,Grace,,America/New_York\n")


def at(hours: float, line: int, source: str, **extra: Any) -> dict[str, Any]:
    """AG News row `line` as an article of source, published `hours` after NOW."""
    return item(line, source, -hours, **extra)


def bring(d: Digest, items: list[dict[str, Any]]) -> None:
    path = d.folder / "items.json"
    path.write_text(json.dumps(items))
    d.ok("articles", "import", str(path))


@pytest.fixture
def sent(digest: Digest, smtp: LoopbackSMTPServer) -> Digest:
    """Edition 1 went out at NOW with the AP's report of the Mass and Lowe's profit; the
    clock then moves two days on."""
    clock = FixedClock(NOW)
    digest.clock = clock
    (digest.folder / "subs.csv").write_text(SUBSCRIBERS)
    digest.ok("subscribers", "import", "subs.csv")
    bring(digest, [at(-10, AP_MASS, "AP"), at(-5, LOWES, "Reuters", topic="Business")])
    digest.ok("send", "--yes", env=smtp_env(smtp))
    assert len(smtp.received) == 2
    clock.advance(hours=48)
    return digest


def test_new_coverage_is_an_update_and_copies_are_left_out(
        sent: Digest, smtp: LoopbackSMTPServer) -> None:
    d = sent
    bring(d, [at(-2, GLOBE_MASS, "Boston Globe"),          # came in after edition 1
              at(20, REUTERS_END, "Reuters"),                # the end of the visit
              at(30, INDIANS, "AP")])                        # another story
    explained = d.ok("preview", "--explain").output
    lines = explained.splitlines()
    assert ("update: new reports of a story edition 1 had; repeat: only repeats it (left "
            "out)") in lines
    update = next(line for line in lines if "Frail Pope" in line)
    assert update.split()[0] == "4" and update.endswith("(update)")
    repeat = next(line for line in lines if "shrine Mass" in line)
    assert repeat.split()[0] == "3" and repeat.endswith("(repeat)")
    assert not any(line.startswith("Left out") for line in lines)

    d.ok("editions", "draft")
    view = json.loads(d.ok("editions", "show", "2", "--format", "json").output)
    pope = next(a for a in view["articles"] if a["id"] == 4)
    assert pope["update"] == {"edition": 1, "title": "Pope Struggles Through Mass at "
                              "Lourdes (AP)", "new_reports": 1, "repeats": [3]}
    assert sorted(a["id"] for a in view["articles"]) == [4, 5]
    indians = next(a for a in view["articles"] if a["id"] == 5)
    assert indians["update"] is None and view["left_out"] == []
    assert "update of No. 1" in d.ok("editions", "show", "2").output
    d.ok("editions", "approve", "2")
    d.ok("send", "--yes", env=smtp_env(smtp))

    [one, _other] = smtp.received[2:]
    message = one.message()
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert '<div class="entry update-entry"' in html
    assert ">Update</span>\u00a0 1 new report since No. 1</p>" in html
    assert "Frail Pope Ends Tiring Lourdes Pilgrimage" in html
    assert "Earlier, in No. 1: “Pope Struggles Through Mass at Lourdes (AP)”" in html
    assert "Pope struggles at shrine Mass" not in html     # the copy is left out
    assert "https://reuters.example/334" in html
    assert ("[UPDATE] 1 new report since No. 1\nFrail Pope Ends Tiring Lourdes "
            "Pilgrimage") in text
    assert "Earlier, in No. 1: Pope Struggles Through Mass at Lourdes (AP)" in text
    assert "shrine Mass" not in text
    # Edition 2 took the copy too: it never comes back as news.
    assert sql(d.folder, "select id, edition_id from articles where id = 3") == [(3, 2)]


def test_only_copies_of_a_sent_story_are_nothing_to_send(
        sent: Digest, smtp: LoopbackSMTPServer) -> None:
    d = sent
    bring(d, [at(-2, GLOBE_MASS, "Boston Globe")])
    nothing = ("Nothing new since edition 1: the 1 new article only repeats stories it "
               "sent, so nothing to send (digest preview --explain lists them).\n")
    for flags in ((), ("--force",), ("--allow-empty",)):
        assert d.ok("send", "--dry-run", *flags, env=smtp_env(smtp)).output == nothing
        assert d.ok("send", "--yes", *flags, env=smtp_env(smtp)).output == nothing
    assert len(smtp.received) == 2
    explained = d.ok("preview", "--explain").output
    assert "Left out: only repeats of edition 1 (1 story)" in explained
    assert explained.splitlines()[-1].startswith("     3  ")
    assert explained.splitlines()[-1].endswith("(repeat)")
    refused = d("editions", "draft")
    assert refused.exit_code == 1
    assert "nothing new since edition 1 (the new articles only repeat stories it sent)" \
        in refused.output


def test_a_reader_of_a_topic_whose_article_joined_another_topics_story_gets_no_empty_issue(
        digest: Digest, smtp: LoopbackSMTPServer, tmp_path: Any) -> None:
    """A story stands under its lead's topic: a reader of only the topic of one of its
    other articles has nothing in the edition. Whom an edition reaches once followed the
    topics of every article, and that reader was mailed "Nothing new this time."."""
    digest.clock = FixedClock(NOW)
    digest.ok("subscribers", "add", "all@example.org")
    digest.ok("subscribers", "add", "culture@example.org", "--topic", "Culture")
    bring(digest, [at(-10, AP_MASS, "AP", topic="Culture"),
                   at(-6, GLOBE_MASS, "Boston Globe", topic="World")])
    dry = digest.ok("send", "--dry-run", env=smtp_env(smtp)).output
    assert dry == ("Dry run: edition 1 would take 2 articles in 1 topics and go to 1 "
                   "subscriber in 1 variant (1 skipped: nothing new in their topics). "
                   "Nothing was stored or sent.\n")
    digest.ok("send", "--yes", env=smtp_env(smtp))
    assert [item.recipients for item in smtp.received] == [("all@example.org",)]
    assert sql(digest.folder, "select status, count(*) from deliveries group by status "
                              "order by status") == [("sent", 1), ("skipped", 1)]
