from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import Digest, sql


def subs(digest: Digest, *args: str) -> list[dict[str, object]]:
    return json.loads(digest.ok("subscribers", "list", "--format", "json", *args).stdout)


@pytest.mark.both_backends
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
    digest.ok("subscribers", "remove", "ada@example.org", "--yes")
    assert subs(digest) == []


def test_bad_input_is_one_clear_line(digest: Digest) -> None:
    cases = {
        ("subscribers", "add", "not-an-address"):
            "Error: 'not-an-address' is not a valid email address: An email address must "
            "have an @-sign.\n",
        ("subscribers", "add", "a@example.org", "--topic", "Gardening"):
            "Error: unknown topic 'Gardening'; choose from AI, Technology, Science, Business, "
            "World, Politics, Culture, Sports, More stories\n",
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


@pytest.mark.both_backends
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
    assert result.exit_code == 3        # partly done: two rows in, three rejected
    assert result.stderr.splitlines() == [
        "rejected: people.csv:3: 'broken-address' is not a valid email address: An email "
        "address must have an @-sign.",
        "rejected: people.csv:4: unknown topic 'Astrology'; choose from AI, Technology, "
        "Science, Business, World, Politics, Culture, Sports, More stories",
        "rejected: people.csv:6: unknown timezone 'Asia/Atlantis'; use an IANA name such as "
        "Europe/Berlin or America/New_York",
        "people.csv:5: GRACE@example.org appears again (first on line 2); the rows are merged",
    ]
    assert result.stdout == ("Imported 2 new subscribers, updated 0, unchanged 0, rejected "
                             "3.\n")
    rows = {r["email"]: r for r in subs(digest)}
    assert rows["grace@example.org"]["topics"] == ["AI", "Technology", "Science"]
    assert rows["grace@example.org"]["name"] == "Grace Hopper"

    (tmp_path / "bad.csv").write_text("email\nnope\n")
    result = digest("subscribers", "import", "bad.csv")
    assert result.exit_code == 1
    assert "Imported 0 new subscribers, updated 0, unchanged 0, rejected 1." in result.stdout

    (tmp_path / "noheader.csv").write_text("a@example.org,A\n")
    result = digest("subscribers", "import", "noheader.csv")
    assert result.output == ("Error: noheader.csv:1: the header row (a@example.org, A) names "
                             "no e-mail column; name it email (columns: email, name, topics, "
                             "timezone, status, hard_bounces, created_at; other services' "
                             "names such as \"Email Address\", \"First Name\", \"Last Name\" "
                             "work too)\n")

    digest.ok("subscribers", "export", "out.csv")
    with (tmp_path / "out.csv").open() as fh:
        exported = list(csv.DictReader(fh))
    assert [r["email"] for r in exported] == ["grace@example.org", "amara@example.org"]
    assert exported[0]["topics"] == "AI;Technology;Science"


def test_list_as_csv(digest: Digest) -> None:
    digest.ok("subscribers", "add", "a@example.org", "--name", "A, Person")
    assert digest.ok("subscribers", "list", "--format", "csv").stdout == (
        'email,name,status,topics,timezone\na@example.org,"A, Person",active,,\n')


@pytest.mark.both_backends
def test_export_then_import_round_trips_and_never_resubscribes(digest: Digest, tmp_path: Path,
                                                               store_url: str) -> None:
    """An export re-imported into a new store once brought unsubscribed people back as
    active. Every field round-trips; an import never re-activates anyone on its own."""
    digest.ok("subscribers", "add", "ada@example.org", "--name", "Ada", "--topic", "AI",
              "--timezone", "Europe/London")
    digest.ok("subscribers", "add", "bob@example.org", "--name", "=HYPERLINK(\"http://x\")")
    digest.ok("subscribers", "add", "cy@example.org")
    # A real leading apostrophe survives the way there and back (it was taken for the
    # export's own and dropped: "'=already" came back as "=already").
    digest.ok("subscribers", "add", "dee@example.org", "--name", "'=already")
    digest.ok("subscribers", "add", "eve@example.org", "--name", "'Eve")
    digest.ok("subscribers", "unsubscribe", "bob@example.org")
    digest.ok("subscribers", "add", "gone@example.org")
    digest.ok("subscribers", "remove", "gone@example.org", "--yes")
    digest.ok("subscribers", "export", "all.csv")
    exported = (tmp_path / "all.csv").read_text()
    assert "gone@" not in exported and "removed-" not in exported
    cells = [cell for row in csv.reader(exported.splitlines()) for cell in row]
    assert "'=HYPERLINK(\"http://x\")" in cells   # a spreadsheet shows it, never runs it
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
    before = subs(digest)

    fresh = Digest(tmp_path / "fresh")
    fresh.folder.mkdir()
    fresh.ok("init")
    fresh.ok("subscribers", "import", str(tmp_path / "all.csv"))
    assert subs(fresh) == before
    names = {row["email"]: row["name"] for row in subs(fresh)}
    assert (names["dee@example.org"], names["eve@example.org"]) == ("'=already", "'Eve")
    # Every column, created_at and hard_bounces included, comes back as it was.
    assert fresh.ok("subscribers", "export", "-").stdout == exported

    # Into the same store: bob stays unsubscribed, whatever the file says.
    (tmp_path / "again.csv").write_text("email,name,status\nbob@example.org,Bob,active\n"
                                        "cy@example.org,Cy,active\n")
    result = digest.ok("subscribers", "import", "again.csv")
    assert result.stderr.splitlines() == [
        "again.csv:2: bob@example.org is unsubscribed here and stays so (re-activate with "
        "their consent: --reactivate)",
        "again.csv:2: updated bob@example.org: name '=HYPERLINK(\"http://x\")' → 'Bob'",
        "again.csv:3: updated cy@example.org: name '' → 'Cy'"]
    assert result.stdout == "Imported 0 new subscribers, updated 2, unchanged 0, rejected 0.\n"
    assert {s["email"]: s["status"] for s in subs(digest)}["bob@example.org"] == "unsubscribed"
    forced = digest.ok("subscribers", "import", "again.csv", "--reactivate")
    assert "re-activated 1 who had unsubscribed or bounced" in forced.stdout
    assert {s["email"]: s["status"] for s in subs(digest)}["bob@example.org"] == "active"


@pytest.mark.both_backends
def test_removed_people_are_gone_and_stay_gone(digest: Digest, tmp_path: Path) -> None:
    digest.ok("subscribers", "add", "Gone@Example.org", "--name", "Gone")
    digest.ok("subscribers", "remove", "gone@example.org", "--yes")
    assert subs(digest) == []
    assert sql(tmp_path, "select email, name, status from subscribers") == [
        ("erased-1@invalid", "", "removed")]
    (tmp_path / "old.csv").write_text("email\ngone@example.org\n")
    result = digest("subscribers", "import", "old.csv")
    assert result.exit_code == 1
    refusal = ("gone@example.org is on the suppression list: it was erased at their request; "
               "add it again only after an operator lifts it: digest suppressions remove "
               "gone@example.org\n")
    assert result.stderr == "rejected: old.csv:2: " + refusal
    for force in ((), ("--force",)):
        refused = digest("subscribers", "add", "GONE@example.org", *force)
        assert refused.output == "Error: " + refusal.replace("gone@", "GONE@")
    digest.ok("suppressions", "remove", "gone@example.org")
    digest.ok("subscribers", "add", "gone@example.org")
    digest.ok("subscribers", "remove", "gone@example.org", "--yes")  # twice: still fine
    assert subs(digest) == []


def test_import_dry_run_and_stdin(digest: Digest, tmp_path: Path) -> None:
    csv_text = "email,name\nada@example.org,Ada\nbo@example.org,Bo\n"
    result = digest("subscribers", "import", "-", "--dry-run", input=csv_text)
    assert result.exit_code == 0
    assert result.stdout == ("Dry run: would import 2 new subscribers, update 0, unchanged 0, "
                             "rejected 0. Nothing was stored.\n")
    assert subs(digest) == []
    digest("subscribers", "import", "-", input=csv_text)
    assert [s["email"] for s in subs(digest)] == ["ada@example.org", "bo@example.org"]
    exported = digest.ok("subscribers", "export", "-").stdout
    assert exported.startswith("email,name,topics,timezone,status,hard_bounces,created_at\n"
                               "ada@example.org,Ada,,,active,0,")


def test_export_to_a_missing_folder_is_one_line(digest: Digest, tmp_path: Path) -> None:
    result = digest("subscribers", "export", "/no/such/dir/x.csv")
    assert result.exit_code == 1
    assert result.output == ("Error: cannot write /no/such/dir/x.csv: No such file or "
                             "directory; check that the folder exists and is writable\n")


def test_activate_after_unsubscribe_needs_force(digest: Digest) -> None:
    digest.ok("subscribers", "add", "ada@example.org")
    digest.ok("subscribers", "unsubscribe", "ada@example.org")
    result = digest("subscribers", "activate", "ada@example.org")
    assert result.output == ("Error: ada@example.org is on the suppression list: it "
                             "unsubscribed; add it again only with their consent: digest "
                             "subscribers activate ada@example.org --force\n")
    digest.ok("subscribers", "activate", "ada@example.org", "--force")
    assert subs(digest)[0]["status"] == "active"


def test_an_unclosed_quote_is_reported_not_swallowed(digest: Digest, tmp_path: Path) -> None:
    """A quote never closed once made one subscriber's name of the next rows, silently."""
    (tmp_path / "q.csv").write_text('email,name\nok1@example.org,One\n'
                                    'ok5@example.org,"Unclosed\nok6@example.org,Six\n'
                                    'ok7@example.org,Seven\n')
    result = digest("subscribers", "import", "q.csv")
    assert result.stderr.startswith("rejected: q.csv:3: a quote opened on this line is not "
                                    "closed, so the row runs to line 5 and swallows the rows "
                                    "in between;")
    assert [s["email"] for s in subs(digest)] == ["ok1@example.org"]


def test_a_semicolon_separated_file_imports(digest: Digest, tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("email;name;topics\nada@example.org;Ada;AI,Science\n")
    digest.ok("subscribers", "import", "s.csv")
    assert subs(digest)[0]["topics"] == ["AI", "Science"]


def test_erase_leaves_no_counter_keyed_by_the_address(digest: Digest, tmp_path: Path) -> None:
    # Someone tried the admin sign-in with a subscriber's address: the failures are
    # counted under keys ending in the address. Erasing the person left them behind.
    from digest.audience.admins import sign_in
    from digest.config import load_settings
    from digest.store.db import Store

    digest.ok("subscribers", "add", "Grace.Hopper@example.org")
    settings = load_settings(tmp_path / "digest.toml", environ={})
    store = Store.from_settings(settings, digest.clock)
    try:
        for _ in range(settings.admin.lockout_failures):
            assert sign_in(store, settings, "grace.hopper@example.org", "guess", None) is None
    finally:
        store.close()
    keys = [k for (k,) in sql(tmp_path, "select key from rate_limits")]
    assert any("grace.hopper@example.org" in k for k in keys), keys
    digest.ok("subscribers", "remove", "grace.hopper@example.org", "--yes")
    left = [k for (k,) in sql(tmp_path, "select key from rate_limits")]
    assert not any("grace.hopper" in k.casefold() for k in left), left


def _at_terminal(folder: Path, args: list[str], answer: str) -> tuple[int, str]:
    """Run `digest ARGS` in folder with a pseudo-terminal as its stdin and stderr (as a
    person at a terminal would), answer its question, and return its exit code and what
    it wrote there."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "digest", *args], cwd=folder,
                            stdin=follower, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = b""
    try:
        while b"Go on?" not in seen:            # the question, then the answer
            chunk = os.read(leader, 4096)
            assert chunk, seen
            seen += chunk
        os.write(leader, answer.encode() + b"\n")
        stdout, _ = proc.communicate(timeout=60)
        while True:                             # the rest of stderr, up to its end
            try:
                chunk = os.read(leader, 4096)
            except OSError:                     # Linux: EIO once the process has gone
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    return proc.returncode, seen.decode() + stdout.decode()


def test_remove_asks_first_and_refuses_without_a_terminal(digest: Digest) -> None:
    digest.ok("subscribers", "add", "ada@example.org")
    for command in ("remove", "erase"):
        refused = digest("subscribers", command, "ada@example.org")
        assert (refused.exit_code, refused.output) == (
            1, "Error: erasing ada@example.org (profile, consent record, bounce events, "
               "queued mails) cannot be undone; not at a terminal to ask, so nothing was "
               "changed: add --yes to do it\n")
    assert [s["email"] for s in subs(digest)] == ["ada@example.org"]
    # At a terminal it asks: no keeps them, yes erases them.
    code, shown = _at_terminal(digest.folder, ["subscribers", "remove", "ada@example.org"],
                               "n")
    assert code == 1 and "cannot be undone. Go on? [y/N]" in shown, shown
    assert "Error: nothing was changed" in shown
    assert [s["email"] for s in subs(digest)] == ["ada@example.org"]
    code, shown = _at_terminal(digest.folder, ["subscribers", "remove", "ada@example.org"],
                               "y")
    assert code == 0 and "Erased ada@example.org" in shown, shown
    assert subs(digest) == []
    # --help tells the irreversible erasure from the reversible unsubscribe.
    helped = " ".join(digest.ok("subscribers", "remove", "--help").output.split())
    assert "irreversibly" in helped and "`digest subscribers unsubscribe` is the reversible" \
        in helped and "--yes" in helped


@pytest.mark.parametrize(("service", "header", "row", "name"), [
    ("Mailchimp", "Email Address,First Name,Last Name,Address,Phone Number,OPTIN_TIME,TAGS",
     'ada@example.org,Ada,Lovelace,"1 Main St",555,2026-01-05 10:00:00,"""vip"""',
     "Ada Lovelace"),
    ("Substack", "email,active_subscription,expiry,plan,email_disabled,created_at",
     "ada@example.org,false,,other,false,2026-01-05T10:00:00.000Z", ""),
    ("Buttondown", "email,notes,metadata,tags,referrer_url,creation_date,subscriber_type",
     "ada@example.org,,{},[],,2026-01-05T10:00:00Z,regular", ""),
    ("listmonk", "uuid,email,name,attributes,status,created_at,updated_at",
     'b7e1,ada@example.org,Ada Lovelace,"{}",enabled,2026-01-05 10:00:00+00,'
     "2026-01-05 10:00:00+00", "Ada Lovelace"),
])
def test_other_services_exports_import(digest: Digest, tmp_path: Path, service: str,
                                       header: str, row: str, name: str) -> None:
    """`suppressions import` read a provider's header ("Email Address") while
    `subscribers import` refused every header but its own: both map headers one way."""
    (tmp_path / "export.csv").write_text(f"{header}\n{row}\n")
    result = digest("subscribers", "import", "export.csv")
    assert result.exit_code == 0, (service, result.output)
    [sub] = subs(digest)
    assert (sub["email"], sub["name"], sub["status"]) == ("ada@example.org", name, "active")
    # And the same file is a suppression list.
    assert "1 added" in digest.ok("suppressions", "import", "export.csv").stdout


def test_a_header_without_an_email_column_names_what_it_saw(digest: Digest,
                                                            tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text("Full Name,Phone\nAda,555\n")
    result = digest("subscribers", "import", "people.csv")
    assert (result.exit_code, result.output) == (
        1, "Error: people.csv:1: the header row (Full Name, Phone) names no e-mail column; "
           "name it email (columns: email, name, topics, timezone, status, hard_bounces, "
           "created_at; other services' names such as \"Email Address\", \"First Name\", "
           "\"Last Name\" work too)\n")


def test_latin1_and_bom_csv_files_import(digest: Digest, tmp_path: Path) -> None:
    """A spreadsheet's Latin-1 (cp1252) CSV was refused with a byte offset; it is read as
    the article text imports read such files. A UTF-8 file with a byte-order mark works."""
    (tmp_path / "latin.csv").write_bytes(
        "email,name\nzoe@example.org,Zoë Müller-Lefèvre\nfrancois@example.org,François "
        "Côté\n".encode("cp1252"))
    result = digest("subscribers", "import", "latin.csv")
    assert result.exit_code == 0, result.output
    assert "latin.csv: not UTF-8; read as cp1252" in result.output
    (tmp_path / "bom.csv").write_bytes("email,name\nada@example.org,Ada Ångström\n"
                                       .encode("utf-8-sig"))
    digest.ok("subscribers", "import", "bom.csv")
    names = {s["email"]: s["name"] for s in subs(digest)}
    assert names == {"zoe@example.org": "Zoë Müller-Lefèvre",
                     "francois@example.org": "François Côté",
                     "ada@example.org": "Ada Ångström"}
    # Bytes no encoding explains are refused, saying where.
    (tmp_path / "noise.csv").write_bytes(b"email,name\n" + bytes(range(128, 256)) * 4)
    refused = digest("subscribers", "import", "noise.csv")
    assert refused.exit_code == 1 and re.search(r"noise\.csv: .*byte \d+", refused.output), \
        refused.output


def test_a_header_with_two_email_columns_is_refused(digest: Digest, tmp_path: Path) -> None:
    """Which of two e-mail columns holds the subscriber is not for the import to guess."""
    (tmp_path / "two.csv").write_text("Email Address,email,Name\nx@example.org,"
                                      "other@example.org,X\n")
    result = digest("subscribers", "import", "two.csv")
    assert (result.exit_code, result.output) == (
        1, "Error: two.csv:1: the header row names 2 email columns (Email Address, email): "
           "keep one, or rename the others\n")
    assert subs(digest) == []
