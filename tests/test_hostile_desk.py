"""The editor's desk against careless editors, hostile readers, link scanners and
attackers: each test is a request that once broke a rule (a traceback for a wrong id, an
unapproved edition reaching readers, a count one address could inflate), driven through
the CLI, the library and real servers on 127.0.0.1, with real stores."""

from __future__ import annotations

import pytest
from conftest import SAMPLE_JSON, Digest

SUBSCRIBERS = ("email,name,topics,timezone\n"
               "ada@example.org,Ada Lovelace,,Europe/London\n")


@pytest.fixture
def drafted(digest: Digest) -> Digest:
    """A store with the sample articles, one subscriber and edition 1 drafted."""
    digest.ok("articles", "import", str(SAMPLE_JSON))
    (digest.folder / "subs.csv").write_text(SUBSCRIBERS)
    digest.ok("subscribers", "import", "subs.csv")
    digest.ok("editions", "draft")
    return digest


HUGE = "99999999999999999999"          # past 64 bits
WIDE = "3000000000"                    # past 32 bits (PostgreSQL's Integer)


@pytest.mark.parametrize(("args", "line"), [
    (("editions", "show", HUGE), f"there is no edition {HUGE}"),
    (("editions", "approve", WIDE), f"there is no edition {WIDE}"),
    (("editions", "preview", HUGE), f"there is no edition {HUGE}"),
    (("editions", "discard", HUGE), f"there is no edition {HUGE}"),
    (("editions", "drop", "1", HUGE), f"article {HUGE} is not in edition 1"),
    (("editions", "pin", "1", WIDE), f"article {WIDE} is not in edition 1"),
    (("editions", "order", "1", "3", "--before", HUGE), f"article {HUGE} is not in edition 1"),
])
def test_an_enormous_id_is_one_line_not_a_traceback(drafted: Digest, args: tuple[str, ...],
                                                    line: str) -> None:
    result = drafted(*args)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {line}")
    assert result.output.count("\n") == 1


def test_ordering_an_article_before_itself_is_refused_in_one_line(drafted: Digest) -> None:
    result = drafted("editions", "order", "1", "3", "--before", "3")
    assert result.exit_code == 1
    assert result.output == ("Error: article 3 cannot come before itself; name another "
                             "article of its topic (digest editions show 1)\n")
