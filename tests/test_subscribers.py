from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import Digest


def subs(digest: Digest, *args: str) -> list[dict[str, object]]:
    return json.loads(digest.ok("subscribers", "list", "--format", "json", *args).stdout)


def test_add_list_change_remove(digest: Digest) -> None:
    digest.ok("subscribers", "add", "Ada@Example.ORG", "--name", "Ada Lovelace", "--topic",
              "ai", "--topic", "Science", "--timezone", "Europe/London")
    assert subs(digest) == [{"email": "Ada@example.org", "name": "Ada Lovelace",
                             "status": "active", "topics": ["AI", "Science"],
                             "timezone": "Europe/London"}]
    result = digest("subscribers", "add", "ada@example.org")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ada@example.org is already subscribed")
    digest.ok("subscribers", "set-topics", "ADA@example.org", "Culture")
    assert subs(digest)[0]["topics"] == ["Culture"]
    digest.ok("subscribers", "unsubscribe", "ada@example.org")
    assert subs(digest, "--status", "unsubscribed")[0]["status"] == "unsubscribed"
    assert subs(digest, "--status", "active") == []
    digest.ok("subscribers", "remove", "ada@example.org")
    assert subs(digest) == []


def test_bad_input_is_one_clear_line(digest: Digest) -> None:
    cases = {
        ("subscribers", "add", "not-an-address"):
            "Error: 'not-an-address' is not a valid email address: An email address must "
            "have an @-sign.\n",
        ("subscribers", "add", "a@example.org", "--topic", "Gardening"):
            "Error: unknown topic 'Gardening'; choose from AI, Technology, Science, Business, "
            "Politics, Culture, Sports, More stories\n",
        ("subscribers", "add", "a@example.org", "--timezone", "Mars/Olympus"):
            "Error: unknown timezone 'Mars/Olympus'; use an IANA name such as Europe/Berlin "
            "or America/New_York\n",
        ("subscribers", "remove", "nobody@example.org"):
            "Error: no subscriber 'nobody@example.org' (see: digest subscribers list)\n",
    }
    for args, message in cases.items():
        result = digest(*args)
        assert (result.exit_code, result.output) == (1, message)
    assert subs(digest) == []


def test_csv_import_reports_bad_rows_and_keeps_good_ones(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text(
        "Email,Name,Topics,Timezone\n"
        "grace@example.org,Grace Hopper,AI;Technology,America/New_York\n"
        "broken-address,Nobody,,\n"
        "zoe@example.org,Zoë,Astrology,\n"
        "GRACE@example.org,,Science,\n"
        "kenji@example.jp,Kenji,,Asia/Atlantis\n"
        "amara@example.org,Amara,,\n")
    result = digest("subscribers", "import", "people.csv")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "rejected: people.csv:3: 'broken-address' is not a valid email address: An email "
        "address must have an @-sign.",
        "rejected: people.csv:4: unknown topic 'Astrology'; choose from AI, Technology, "
        "Science, Business, Politics, Culture, Sports, More stories",
        "rejected: people.csv:6: unknown timezone 'Asia/Atlantis'; use an IANA name such as "
        "Europe/Berlin or America/New_York",
    ]
    assert result.stdout == "Imported 2 new subscribers, updated 0, rejected 3.\n"
    rows = {r["email"]: r for r in subs(digest)}
    assert rows["grace@example.org"]["topics"] == ["AI", "Technology", "Science"]
    assert rows["grace@example.org"]["name"] == "Grace Hopper"

    (tmp_path / "bad.csv").write_text("email\nnope\n")
    result = digest("subscribers", "import", "bad.csv")
    assert result.exit_code == 1
    assert "Imported 0 new subscribers, updated 0, rejected 1." in result.stdout

    (tmp_path / "noheader.csv").write_text("a@example.org,A\n")
    result = digest("subscribers", "import", "noheader.csv")
    assert result.output == ("Error: noheader.csv:1: the header row needs an 'email' column "
                             "(columns: email, name, topics, timezone)\n")

    digest.ok("subscribers", "export", "out.csv")
    with (tmp_path / "out.csv").open() as fh:
        exported = list(csv.DictReader(fh))
    assert [r["email"] for r in exported] == ["grace@example.org", "amara@example.org"]
    assert exported[0]["topics"] == "AI;Technology;Science"


def test_list_as_csv(digest: Digest) -> None:
    digest.ok("subscribers", "add", "a@example.org", "--name", "A, Person")
    assert digest.ok("subscribers", "list", "--format", "csv").stdout == (
        'email,name,status,topics,timezone\na@example.org,"A, Person",active,,\n')
