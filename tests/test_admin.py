"""The admin pages and their users: `digest admin`, sign-in with lockout, sessions, and
the pages over real HTTP (`digest serve`'s server on 127.0.0.1, waitress) against a real
SQLite store — the security properties first, then what each page does."""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import httpx
import pytest
from argon2 import PasswordHasher
from conftest import HTTP_TIMEOUT, NOW, SAMPLE_JSON, Digest, execute, smtp_env, sql

from digest.audience import admins
from digest.config import Settings, load_settings, with_overrides
from digest.delivery import desk
from digest.mail.loopback import LoopbackSMTPServer
from digest.store.db import Store
from digest.web.app import WebServer, create_app

PASSWORD = "correct horse battery staple"
EDITOR = "editor@example.org"
FAILED = ("That email and password do not match, or the account is locked for a while "
          "after too many tries.")


def add_user(digest: Digest, email: str = EDITOR, password: str = PASSWORD) -> None:
    result = digest("admin", "add-user", email, "--password-file", "-", input=password + "\n")
    assert result.exit_code == 0, result.output


def settings_of(digest: Digest, **env: str) -> Settings:
    return load_settings(digest.folder / "digest.toml",
                         environ={"DIGEST_DIGEST__BASE_URL": "http://127.0.0.1", **env})


# -- digest admin ---------------------------------------------------------------------------

@pytest.mark.both_backends
def test_add_user_keeps_an_argon2id_hash_and_never_the_password(digest: Digest) -> None:
    (digest.folder / "pw.txt").write_text(PASSWORD + "\nsecond line is ignored\n")
    result = digest.ok("admin", "add-user", "Ed@Example.ORG", "--password-file", "pw.txt")
    assert result.output == "Ed@example.org may sign in at https://digest.example.org/admin\n"
    add_user(digest, "second@example.org", "another long password")
    [(email, key, stored)] = sql(digest.folder, "SELECT email, email_key, password_hash FROM "
                                                "admin_users WHERE email_key = 'ed@example.org'")
    assert (email, key) == ("Ed@example.org", "ed@example.org")
    assert stored.startswith("$argon2id$") and PasswordHasher().verify(stored, PASSWORD)
    assert nowhere_in_the_store(digest, PASSWORD)
    listed = digest.ok("admin", "list-users").output
    assert "Ed@example.org" in listed and "second@example.org" in listed and "never" in listed


def nowhere_in_the_store(digest: Digest, secret: str) -> bool:
    """Whether no admin row holds secret, and (SQLite) no byte of the store's files."""
    rows = sql(digest.folder, "SELECT * FROM admin_users") + \
        sql(digest.folder, "SELECT * FROM admin_sessions")
    if any(secret in str(value) for row in rows for value in row):
        return False
    files = digest.folder.glob("digest.db*")
    return not any(secret.encode() in path.read_bytes() for path in files)


def test_add_user_asks_twice_without_showing_the_password(digest: Digest) -> None:
    result = digest("admin", "add-user", EDITOR,
                    input=f"{PASSWORD}\nsomething else entirely\n{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert "Error: The two entered values do not match." in result.output
    assert result.output.endswith(f"{EDITOR} may sign in at https://digest.example.org/admin\n")


@pytest.mark.parametrize("args, stdin, message", [
    (["x@example.org"], "short pw\n", "Error: the password for x@example.org has 8 "
     "characters; use at least 12 (a few words make a good one)\n"),
    (["EDITOR@example.org"], PASSWORD + "\n", "Error: EDITOR@example.org may sign in already "
     "(see: digest admin list-users; to change the password, remove-user then add-user)\n"),
    (["not-an-address"], PASSWORD + "\n", "Error: 'not-an-address' is not a valid email "
     "address: An email address must have an @-sign.\n"),
    (["y@example.org"], "\n", "Error: the password file - has no password on its first line\n"),
])
def test_add_user_refuses_with_one_line(digest: Digest, args: list[str], stdin: str,
                                        message: str) -> None:
    add_user(digest)
    result = digest("admin", "add-user", *args, "--password-file", "-", input=stdin)
    assert (result.exit_code, result.output) == (1, message)


@pytest.mark.parametrize("password", ["            ", "aaaaaaaaaaaa", "passwordpassword",
                                      "123456789012", "qwertyuiopas", "digestdigest12"])
def test_add_user_refuses_a_password_a_guesser_tries_early(digest: Digest,
                                                           password: str) -> None:
    # Twelve characters of anything used to pass, twelve spaces too.
    result = digest("admin", "add-user", "x@example.org", "--password-file", "-",
                    input=password + "\n")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: the password for x@example.org is too easy to "
                                    "guess (")
    assert result.output.endswith("); use a few unrelated words, or a password "
                                  "manager's\n")
    assert password.strip() == "" or password not in result.output


def test_add_user_names_a_password_file_it_cannot_read(digest: Digest) -> None:
    result = digest("admin", "add-user", EDITOR, "--password-file", "missing.txt")
    assert (result.exit_code, result.output) == (
        1, "Error: cannot read the password file missing.txt: No such file or directory; "
           "check the path\n")
    (digest.folder / "latin1.txt").write_bytes("pässwort-lang-genug\n".encode("latin-1"))
    result = digest("admin", "add-user", EDITOR, "--password-file", "latin1.txt")
    assert (result.exit_code, result.output) == (
        1, "Error: the password file latin1.txt is not UTF-8 text; write the password as "
           "text on its first line\n")


def test_remove_user_ends_their_sessions(digest: Digest) -> None:
    add_user(digest)
    settings = settings_of(digest)
    store = Store.from_settings(settings)
    try:
        token = admins.sign_in(store, settings, EDITOR, PASSWORD, "127.0.0.1")
        assert token and admins.session_user(store, token) is not None
        assert digest.ok("admin", "remove-user", EDITOR).output == (
            f"Removed {EDITOR}: they can no longer sign in\n")
        assert admins.session_user(store, token) is None
        assert admins.sign_in(store, settings, EDITOR, PASSWORD, "127.0.0.1") is None
    finally:
        store.close()
    result = digest("admin", "remove-user", EDITOR)
    assert (result.exit_code, result.output) == (
        1, f"Error: no admin user '{EDITOR}' (see: digest admin list-users)\n")
    assert digest.ok("admin", "list-users").output == (
        "Nobody may sign in yet: digest admin add-user EMAIL\n")


# -- sign-in, lockout, sessions (the service) -----------------------------------------------

@pytest.fixture
def store(digest: Digest) -> Iterator[Store]:
    s = Store.from_settings(settings_of(digest))
    yield s
    s.close()


@pytest.mark.both_backends
def test_a_session_token_is_new_each_time_and_only_its_hash_is_kept(
        digest: Digest, store: Store) -> None:
    add_user(digest)
    settings = settings_of(digest)
    first = admins.sign_in(store, settings, EDITOR, PASSWORD, "127.0.0.1")
    second = admins.sign_in(store, settings, "  Editor@EXAMPLE.org ", PASSWORD, "127.0.0.1")
    assert first and second and first != second and len(first) >= 43
    rows = sql(digest.folder, "SELECT token_hash, csrf FROM admin_sessions ORDER BY id")
    assert [r[0] for r in rows] == [hashlib.sha256(t.encode()).hexdigest()
                                    for t in (first, second)]
    assert rows[0][1] != rows[1][1]
    assert nowhere_in_the_store(digest, first) and nowhere_in_the_store(digest, second)
    [(last_login,)] = sql(digest.folder, "SELECT last_login_at FROM admin_users")
    assert last_login is not None


def test_a_session_ends_when_its_hours_are_over_and_is_cleaned_away(
        digest: Digest, store: Store) -> None:
    add_user(digest)
    settings = settings_of(digest)
    start = NOW
    token = admins.sign_in(store, settings, EDITOR, PASSWORD, None, now=start)
    assert token is not None
    assert admins.session_user(store, token, start + timedelta(hours=11.9)) is not None
    assert admins.session_user(store, token, start + timedelta(hours=12)) is None
    # The next sign-in deletes sessions that have ended.
    admins.sign_in(store, settings, EDITOR, PASSWORD, None, now=start + timedelta(hours=13))
    assert len(sql(digest.folder, "SELECT id FROM admin_sessions")) == 1


def test_a_hash_with_weaker_parameters_is_replaced_at_sign_in(
        digest: Digest, store: Store) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    execute(digest.folder, f"INSERT INTO admin_users (email, email_key, password_hash, created_at) "
                      f"VALUES ('{EDITOR}', '{EDITOR}', '{weak}', '2026-01-01 00:00:00')")
    assert admins.sign_in(store, settings_of(digest), EDITOR, PASSWORD, None)
    [(stored,)] = sql(digest.folder, "SELECT password_hash FROM admin_users")
    assert stored != weak and not PasswordHasher().check_needs_rehash(stored)
    assert PasswordHasher().verify(stored, PASSWORD)


@pytest.mark.both_backends
def test_lockout_counts_known_and_unknown_addresses_alike_and_ends(
        digest: Digest, store: Store) -> None:
    add_user(digest)
    settings = with_overrides(settings_of(digest), admin={"lockout_failures": 3,
                                                          "lockout_minutes": 15})
    start = NOW
    for address in (EDITOR, "nobody@example.org"):
        for minute in range(3):
            assert admins.sign_in(store, settings, address, "wrong password 123", None,
                                  now=start + timedelta(minutes=minute)) is None
    # Locked: even the right password fails, for 15 minutes from the third failure.
    locked = start + timedelta(minutes=16)
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, None, now=locked) is None
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, None,
                          now=start + timedelta(minutes=17, seconds=1)) is not None
    # Another account is not locked by them.
    add_user(digest, "other@example.org")
    assert admins.sign_in(store, settings, "other@example.org", PASSWORD, None, now=locked)


def test_a_right_password_resets_the_count_of_failures(digest: Digest, store: Store) -> None:
    add_user(digest)
    settings = with_overrides(settings_of(digest), admin={"lockout_failures": 3})
    for _ in range(2):
        assert admins.sign_in(store, settings, EDITOR, "wrong password 123", None) is None
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, None)
    for _ in range(2):
        assert admins.sign_in(store, settings, EDITOR, "wrong password 123", None) is None
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, None)


class CountingHasher(PasswordHasher):
    """argon2-cffi's own hasher, counting the verifications it runs. With hold_at, each
    one waits from the hold_at-th on until that many have begun (so they overlap as
    parallel sign-ins do), or until release is set."""

    def __init__(self, hold_at: int = 0) -> None:
        super().__init__()
        self.algorithms: list[str] = []
        self.hold_at = hold_at
        self.release = threading.Event()
        self.entered = threading.Event()
        self._lock = threading.Lock()

    @property
    def verified(self) -> int:
        with self._lock:
            return len(self.algorithms)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self._lock:
            self.algorithms.append(str(hash).split("$")[1])     # the algorithm: argon2id
            if self.hold_at and len(self.algorithms) >= self.hold_at:
                self.release.set()
        self.entered.set()
        if self.hold_at:
            assert self.release.wait(HTTP_TIMEOUT)
        return super().verify(hash, password)


def test_an_unknown_address_costs_as_much_as_a_wrong_password(
        digest: Digest, store: Store) -> None:
    """One argon2 verification either way (against a stand-in hash for an address with no
    user): without it an unknown address answered in about 1 ms, a known one in about
    150 ms. Counted, not timed: a timing on a busy machine says nothing."""
    add_user(digest)
    settings = with_overrides(settings_of(digest), admin={"lockout_failures": 1000})
    for address in (EDITOR, "nobody@example.org"):
        hasher = CountingHasher()
        assert admins.sign_in(store, settings, address, "wrong password 123", None,
                              verifier=admins.Verifier(hasher)) is None
        assert hasher.algorithms == ["argon2id"], address


def test_a_password_of_no_users_length_is_refused_without_hashing(
        digest: Digest, store: Store) -> None:
    add_user(digest)
    hasher = CountingHasher()
    for password in ("", "x" * (admins.MAX_PASSWORD + 1), PASSWORD * 1000):
        assert admins.sign_in(store, settings_of(digest), EDITOR, password, "127.0.0.1",
                              verifier=admins.Verifier(hasher)) is None
    assert admins.sign_in(store, settings_of(digest), "x" * 400 + "@example.org", PASSWORD,
                          "127.0.0.1", verifier=admins.Verifier(hasher)) is None
    assert hasher.verified == 0
    result = digest("admin", "add-user", "long@example.org", "--password-file", "-",
                    input="correct horse battery staple " * 40 + "\n")
    assert (result.exit_code, result.output) == (
        1, f"Error: the password for long@example.org has 1160 characters; use at most "
           f"{admins.MAX_PASSWORD}\n")


def test_guessers_spread_over_many_networks_get_a_bounded_number_of_guesses(
        digest: Digest, store: Store) -> None:
    """Past the account's allowance for networks it does not know, a new network is
    refused without a verification (the right password too); a network that signed in
    to the account before still signs in."""
    add_user(digest)
    settings = with_overrides(settings_of(digest), admin={"lockout_failures": 1})
    hasher = CountingHasher()
    verifier = admins.Verifier(hasher)
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, "192.0.2.7", verifier=verifier)
    allowance = admins.ACCOUNT_FACTOR * 1
    for n in range(allowance + 5):
        assert admins.sign_in(store, settings, EDITOR, "wrong password 123", f"198.51.100.{n}",
                              verifier=verifier) is None
    assert hasher.verified == 1 + allowance
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, "203.0.113.1",
                          verifier=verifier) is None
    assert hasher.verified == 1 + allowance
    # The editor's own network (IPv4 here; an IPv6 one by its /64) is known to the account.
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, "192.0.2.7", verifier=verifier)
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, "2001:db8:1:2::1",
                          verifier=verifier) is None
    assert admins.sign_in(store, settings, EDITOR, PASSWORD, "192.0.2.7", verifier=verifier)


# -- the pages over HTTP ----------------------------------------------------------------------

@dataclass
class Site:
    base: str
    digest: Digest
    server: WebServer

    @property
    def store(self) -> Store:
        return self.server.store

    @property
    def settings(self) -> Settings:
        return self.server.app.extensions["digest"].settings

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        """A client whose connections come from source (another 127.x address: another
        client network to the server)."""
        # A generous deadline: a big upload on a busy machine takes seconds, not minutes.
        return httpx.Client(base_url=self.base, follow_redirects=False, timeout=HTTP_TIMEOUT,
                            transport=httpx.HTTPTransport(local_address=source))


@contextmanager
def serving(digest: Digest, threads: int = 4, verifier: admins.Verifier | None = None,
            **env: str) -> Iterator[Site]:
    """`digest serve`'s server (app, waitress, outbox thread) on 127.0.0.1, on a port the
    system chose."""
    server = WebServer(settings_of(digest, **env), "127.0.0.1", 0, threads=threads,
                       verifier=verifier)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{server.port}", digest, server)
    finally:
        server.stop()
        thread.join()


@pytest.fixture
def site(digest: Digest) -> Iterator[Site]:
    add_user(digest)
    with serving(digest) as s:
        yield s


def tokens(page: httpx.Response) -> dict[str, str]:
    """The hidden tokens of the page's first form."""
    found = dict(re.findall(r'name="(csrf_token|session_csrf)" value="([^"]+)"', page.text))
    assert "csrf_token" in found, page.text[:500]
    return found


def sign_in(client: httpx.Client, email: str = EDITOR, password: str = PASSWORD,
            next_page: str = "") -> httpx.Response:
    page = client.get("/admin/login")
    if page.status_code == 303:         # signed in already: another page has the tokens
        page = client.get(page.headers["location"])
    assert page.status_code == 200
    return client.post("/admin/login", data={**tokens(page), "email": email,
                                              "password": password, "next": next_page})


@contextmanager
def signed_in(site: Site, email: str = EDITOR) -> Iterator[httpx.Client]:
    with site.client() as client:
        assert sign_in(client, email).status_code == 303
        yield client


def post(client: httpx.Client, page: str, url: str, **data: str) -> httpx.Response:
    """Submit a form at url with the tokens of page (as the browser would)."""
    return client.post(url, data={**tokens(client.get(page)), **data})


ADMIN_GETS = ["/admin/", "/admin/draft", "/admin/editions", "/admin/editions/1",
              "/admin/editions/1/desk", "/admin/editions/1/preview", "/admin/subscribers",
              "/admin/subscribers?q=ada&status=active", "/admin/subscribers/1",
              "/admin/subscribers/export.csv", "/admin/feeds", "/admin/bounces",
              "/admin/suppressions"]
ADMIN_POSTS = ["/admin/draft", "/admin/editions/1/articles/1", "/admin/editions/1/intro",
               "/admin/editions/1/subject", "/admin/editions/1/refresh",
               "/admin/editions/1/approve", "/admin/editions/1/cancel",
               "/admin/subscribers/1/status", "/admin/subscribers/1/topics",
               "/admin/subscribers/import", "/admin/suppressions/add",
               "/admin/suppressions/remove", "/admin/logout"]


def test_anonymous_requests_are_sent_to_sign_in_or_refused(site: Site) -> None:
    site.digest.ok("articles", "import", str(SAMPLE_JSON))
    site.digest.ok("subscribers", "add", "ada@example.org")
    site.digest.ok("editions", "draft")
    with site.client() as client:
        for url in ADMIN_GETS:
            response = client.get(url)
            assert response.status_code == 303, url
            location = httpx.URL(response.headers["location"])
            assert (location.path, location.params["next"]) == ("/admin/login", url), url
        token = tokens(client.get("/admin/login"))
        for url in ADMIN_POSTS:
            # With the site's CSRF token (any visitor can get one): refused all the same.
            refused = client.post(url, data={**token, "action": "drop", "email": "x@y.org",
                                             "intro": "hacked", "confirm": "yes"})
            assert refused.status_code == 403 and "Sign in first" in refused.text, url
            assert "set-cookie" not in refused.headers or \
                "digest_admin" not in refused.headers["set-cookie"]
            # Without one (a form on another site): refused before anything is read.
            assert client.post(url, data={"intro": "hacked"}).status_code == 400, url
    view = desk.desk_view(site.store, site.settings, 1)
    assert view.status.value == "draft" and view.intro is None
    assert sql(site.digest.folder, "SELECT count(*) FROM suppressions") == [(0,)]


def test_after_sign_in_the_browser_goes_only_to_a_local_admin_page(site: Site) -> None:
    cases = {"/admin/subscribers?q=ada": "/admin/subscribers?q=ada",
             "/admin/feeds": "/admin/feeds",
             "https://evil.example/admin": "/admin/draft",
             "//evil.example/admin": "/admin/draft",
             "/admin\\..\\..\\evil": "/admin/draft",
             "/\\evil.example": "/admin/draft",
             "/subscribe": "/admin/draft",
             "/administrator": "/admin/draft",
             "/admin/login": "/admin/draft",
             "/admin/../subscribe": "/admin/draft",
             "/admin/%2e%2e/subscribe": "/admin/draft",
             "/admin/editions/1/desk#intro": "/admin/editions/1/desk#intro",
             "": "/admin/draft"}
    for given, expected in cases.items():
        with site.client() as client:
            response = sign_in(client, next_page=given)
            assert (response.status_code, response.headers["location"]) == (303, expected), \
                given


def test_the_session_cookie_is_httponly_lax_and_only_for_admin(site: Site) -> None:
    with site.client() as client:
        response = sign_in(client)
    cookie = next(c for c in response.headers.get_list("set-cookie")
                  if c.startswith("digest_admin="))
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert {"httponly", "path=/admin", "samesite=lax", "max-age=43200"} <= set(parts)
    assert "secure" not in parts            # base_url is http://
    # On an https base_url the cookie is Secure too (Flask's own client speaks https).
    app = create_app(settings_of(site.digest, DIGEST_DIGEST__BASE_URL="https://news.example"))
    with app.test_client() as browser:
        page = browser.get("/admin/login", base_url="https://news.example")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        response = browser.post("/admin/login", base_url="https://news.example", data={
            "csrf_token": token, "email": EDITOR, "password": PASSWORD})
    assert response.status_code == 303
    cookie = next(c for c in response.headers.getlist("Set-Cookie")
                  if c.startswith("digest_admin="))
    assert "secure" in [p.strip().lower() for p in cookie.split(";")]
    app.extensions["digest"].store.close()


def test_forged_or_missing_csrf_tokens_change_nothing(site: Site) -> None:
    with signed_in(site) as other:
        theirs = tokens(other.get("/admin/suppressions"))
    with signed_in(site) as client:
        forged_posts(site, client, theirs)


def forged_posts(site: Site, client: httpx.Client, theirs: dict[str, str]) -> None:
    mine = tokens(client.get("/admin/suppressions"))
    forged = [
        {"csrf_token": mine["csrf_token"]},                                   # no session token
        {"csrf_token": mine["csrf_token"], "session_csrf": theirs["session_csrf"]},
        {"csrf_token": mine["csrf_token"], "session_csrf": mine["session_csrf"][:-2] + "xx"},
        {"session_csrf": mine["session_csrf"]},                              # no site token
        {"csrf_token": "forged", "session_csrf": mine["session_csrf"]},
        {},
    ]
    for data in forged:
        response = client.post("/admin/suppressions/add", data={**data, "email": "a@b.org"})
        assert response.status_code == 400 and "Form expired" in response.text, data
    assert sql(site.digest.folder, "SELECT count(*) FROM suppressions") == [(0,)]
    # The same form with its own tokens works.
    response = client.post("/admin/suppressions/add", data={**mine, "email": "a@b.org"})
    assert (response.status_code, response.headers["location"]) == (303, "/admin/suppressions")
    assert sql(site.digest.folder, "SELECT email_key FROM suppressions") == [("a@b.org",)]


def test_brute_force_locks_the_account_with_the_same_answer(site: Site) -> None:
    with site.client() as client:
        for _ in range(5):
            response = sign_in(client, password="guess number one")
            assert response.status_code == 403 and FAILED in response.text
        locked = sign_in(client)            # the right password, now locked
        assert locked.status_code == 403 and FAILED in locked.text
        assert "digest_admin" not in locked.headers.get("set-cookie", "")
        assert client.get("/admin/draft").status_code == 303


def test_an_attacker_locks_the_account_only_for_their_own_network(site: Site) -> None:
    with site.client("127.0.0.2") as attacker:
        for _ in range(5):
            assert sign_in(attacker, password="guess number one").status_code == 403
        assert sign_in(attacker).status_code == 403      # the right password: still locked
    with site.client("127.0.0.3") as editor:
        assert sign_in(editor).status_code == 303
        assert editor.get("/admin/draft").status_code == 200


def test_with_every_verification_slot_taken_a_sign_in_is_answered_at_once(
        digest: Digest) -> None:
    """The busy answer comes with nothing hashed and nothing counted: with a lockout after
    one failure, three busy answers still leave the right password its try."""
    add_user(digest)
    hasher = CountingHasher(hold_at=1000)
    verifier = admins.Verifier(hasher, slots=1)
    with serving(digest, verifier=verifier, DIGEST_ADMIN__LOCKOUT_FAILURES="1") as site:
        answers: list[httpx.Response] = []

        def first() -> None:
            with site.client("127.0.0.2") as client:
                answers.append(sign_in(client, password="guess number one"))

        holder = threading.Thread(target=first)
        holder.start()
        try:
            assert hasher.entered.wait(HTTP_TIMEOUT)     # it holds the only slot
            with site.client("127.0.0.3") as editor:
                for password in ("guess number two", "guess number three", PASSWORD):
                    busy = sign_in(editor, password=password)
                    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
                    assert "Please try again in a moment." in busy.text
                    assert "digest_admin" not in busy.headers.get("set-cookie", "")
                assert hasher.verified == 1
                hasher.release.set()
                holder.join()
                assert answers[0].status_code == 403
                assert sign_in(editor).status_code == 303
        finally:
            hasher.release.set()
            holder.join()


def test_parallel_guesses_get_no_more_verifications_than_the_lockout_allows(
        digest: Digest) -> None:
    """Twenty wrong passwords at once from one network, against `digest serve`'s eight
    threads: the verifications begun hold until five overlap, as they would on a busy
    server. Before, the lock was read before verifying and the failure counted after, so
    every request in flight then was verified."""
    add_user(digest)
    limit, guesses = 5, 20
    hasher = CountingHasher(hold_at=limit)
    verifier = admins.Verifier(hasher, slots=guesses)
    with serving(digest, threads=8, verifier=verifier) as site:
        ready = threading.Barrier(guesses)
        answers: list[int] = []

        def guess() -> None:
            with site.client("127.0.0.2") as client:
                page = client.get("/admin/login")
                ready.wait(HTTP_TIMEOUT)
                answers.append(client.post("/admin/login", data={
                    **tokens(page), "email": EDITOR, "password": "guess number one",
                    "next": ""}).status_code)

        threads = [threading.Thread(target=guess) for _ in range(guesses)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [403] * guesses
        assert hasher.verified == limit
        with site.client("127.0.0.2") as attacker:
            assert sign_in(attacker).status_code == 403
        with site.client("127.0.0.3") as editor:
            assert sign_in(editor).status_code == 303
        assert hasher.verified == limit + 1


def test_no_answer_tells_whether_an_address_has_a_user(site: Site) -> None:
    def answer(email: str, password: str) -> tuple[int, str]:
        with site.client() as client:
            response = sign_in(client, email, password)
        text = re.sub(r'value="[^"]*"', 'value=""', response.text)
        return response.status_code, text.replace(email, "EMAIL")

    unknown = answer("nobody@example.org", "a wrong password")
    wrong = answer(EDITOR, "a wrong password")
    for _ in range(5):
        answer("locked@example.org", "a wrong password")
    add_user(site.digest, "locked@example.org")
    locked = answer("locked@example.org", PASSWORD)
    assert unknown == wrong == locked
    assert unknown[0] == 403 and FAILED in unknown[1]


@pytest.mark.both_backends
def test_session_fixation_a_cookie_from_before_sign_in_never_signs_in(site: Site) -> None:
    # A value the attacker chose, and a real token of the attacker's own earlier session.
    with site.client() as attacker:
        sign_in(attacker)
        planted = attacker.cookies["digest_admin"]
    for before in ("chosen-by-the-attacker", planted):
        with site.client() as victim:
            victim.cookies.set("digest_admin", before, domain="127.0.0.1", path="/admin")
            assert victim.get("/admin/draft").status_code in (200, 303)
            response = sign_in(victim)
            assert response.status_code == 303
            given = victim.cookies["digest_admin"]
            assert given != before
            assert victim.get("/admin/feeds").status_code == 200
        # The value from before signs nobody in (the planted session ended at sign-in).
        with site.client() as attacker:
            attacker.cookies.set("digest_admin", before, domain="127.0.0.1", path="/admin")
            assert attacker.get("/admin/feeds").status_code == 303


def test_sign_out_ends_the_session_on_the_server(site: Site) -> None:
    with signed_in(site) as client:
        token = client.cookies["digest_admin"]
        response = post(client, "/admin/feeds", "/admin/logout")
    assert (response.status_code, response.headers["location"]) == (303, "/admin/login")
    assert 'digest_admin=""' in response.headers["set-cookie"] or \
        "digest_admin=;" in response.headers["set-cookie"]
    with site.client() as replay:
        replay.cookies.set("digest_admin", token, domain="127.0.0.1", path="/admin")
        assert replay.get("/admin/feeds").status_code == 303


def test_admin_pages_are_never_cached_and_only_the_preview_may_be_framed(site: Site) -> None:
    site.digest.ok("articles", "import", str(SAMPLE_JSON))
    site.digest.ok("editions", "draft")
    with signed_in(site) as client:
        framing(client)


def framing(client: httpx.Client) -> None:
    page = client.get("/admin/editions/1/desk")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]
    assert '<iframe class="preview" src="/admin/editions/1/preview"' in page.text
    preview = client.get("/admin/editions/1/preview")
    assert preview.status_code == 200 and preview.headers["cache-control"] == "no-store"
    assert preview.headers["x-frame-options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
    login = client.get("/admin/login")
    assert login.headers["cache-control"] == "no-store"
    # The public pages stay unframeable.
    assert client.get("/subscribe").headers["x-frame-options"] == "DENY"


# -- the pages --------------------------------------------------------------------------------

def desk_ids(site: Site, number: int = 1) -> dict[str, list[int]]:
    """Article ids per topic, in the desk's order."""
    view = desk.desk_view(site.store, site.settings, number)
    return {s.topic: [a.id for a in s.articles] for s in view.sections}


def act(client: httpx.Client, article: int, action: str, **more: str) -> httpx.Response:
    return post(client, "/admin/editions/1/desk", f"/admin/editions/1/articles/{article}",
                action=action, **more)


def test_the_desk_shapes_a_draft_with_one_form_per_button(site: Site) -> None:
    site.digest.ok("articles", "import", str(SAMPLE_JSON))
    site.digest.ok("subscribers", "add", "ada@example.org")
    with signed_in(site) as client:
        assert "No draft waiting" in client.get("/admin/draft").text
        made = post(client, "/admin/draft", "/admin/draft")
        assert (made.status_code, made.headers["location"]) == (303, "/admin/editions/1/desk")
        assert client.get("/admin/draft").headers["location"] == "/admin/editions/1/desk"
        assert "Drafted edition 1: 30 stories under 8 topics." in client.get(
            "/admin/editions/1/desk").text
        shaping(site, client)


def shaping(site: Site, client: httpx.Client) -> None:
    ids = desk_ids(site)
    science, ai = ids["Science"], ids["AI"]
    dropped = science[0]
    response = act(client, dropped, "drop", section="Science")
    assert (response.status_code, response.headers["location"]) == (
        303, "/admin/editions/1/desk#topic-science")
    assert dropped not in sum(desk_ids(site).values(), [])
    assert "back in the pool for the next edition" in client.get("/admin/editions/1/desk").text
    pinned = desk_ids(site)["Science"][-1]
    assert act(client, pinned, "pin").headers["location"] == \
        f"/admin/editions/1/desk#article-{pinned}"
    assert desk_ids(site)["Science"][0] == pinned
    act(client, ai[0], "move", topic="Science")
    assert ai[0] in desk_ids(site)["Science"] and ai[0] not in desk_ids(site)["AI"]
    second = desk_ids(site)["AI"][1]
    act(client, second, "up")
    assert desk_ids(site)["AI"][0] == second
    act(client, second, "down")
    assert desk_ids(site)["AI"][1] == second
    act(client, ai[-1], "lead")
    view = desk.desk_view(site.store, site.settings, 1)
    assert view.sections[0].articles[0].id == ai[-1] and view.sections[0].articles[0].pin_top
    act(client, ai[-1], "edit", title="A title the editor wrote", teaser="Short and sweet.")
    post(client, "/admin/editions/1/desk", "/admin/editions/1/intro",
         intro="## A word first\n\nThis week: **reefs**.")
    # The subject field is empty while the subject is the pattern's (which it shows as a
    # placeholder): saving the form as it stands keeps it following the lead story.
    page = client.get("/admin/editions/1/desk").text
    assert re.search(r'<input id="subject-line" name="subject" type="text" maxlength="300" '
                     r'value="" placeholder="The Weekly Digest', page)
    post(client, "/admin/editions/1/desk", "/admin/editions/1/subject",
         subject="Reefs, code and a vote")
    assert 'value="Reefs, code and a vote"' in client.get("/admin/editions/1/desk").text
    view = desk.desk_view(site.store, site.settings, 1)
    lead = view.sections[0].articles[0]
    assert (lead.title, lead.teaser, lead.edited) == ("A title the editor wrote",
                                                     "Short and sweet.", True)
    assert (view.intro, view.subject) == ("## A word first\n\nThis week: **reefs**.",
                                          "Reefs, code and a vote")
    preview = client.get("/admin/editions/1/preview").text
    assert "A word first" in preview and "A title the editor wrote" in preview
    approved = post(client, "/admin/editions/1/desk", "/admin/editions/1/approve")
    assert approved.headers["location"] == "/admin/editions/1/desk"
    view = desk.desk_view(site.store, site.settings, 1)
    assert (view.status.value, view.approved_by) == ("approved", EDITOR)
    assert f"Approved by {EDITOR}" in client.get("/admin/editions/1/desk").text


@pytest.mark.parametrize("url, data, line", [
    ("/admin/editions/1/articles/1", {"action": "move", "topic": "Astrology"},
     "unknown topic"),
    ("/admin/editions/1/articles/1", {"action": "explode"},
     "unknown action 'explode': choose one of the article's buttons"),
    ("/admin/editions/1/articles/999", {"action": "pin"}, "999"),
    ("/admin/editions/9/articles/1", {"action": "pin"}, "9"),
    ("/admin/editions/1/cancel", {}, "tick the box to confirm that edition 1 is never to "
                                     "be sent"),
])
def test_a_wrong_request_at_the_desk_gets_one_line_and_changes_nothing(
        site: Site, url: str, data: dict[str, str], line: str) -> None:
    site.digest.ok("articles", "import", str(SAMPLE_JSON))
    site.digest.ok("editions", "draft")
    before = desk_ids(site)
    with signed_in(site) as client:
        response = post(client, "/admin/editions/1/desk", url, **data)
    # What is not there is a 404 (an article or edition the store does not hold).
    assert response.status_code == (404 if url.endswith("999") or "/9/" in url else 400)
    problem = re.search(r'<div class="error">\s*<p>([^<]*)</p>', response.text)
    assert problem is not None and line in html.unescape(problem.group(1))
    assert "\n" not in problem.group(1).strip() and "Traceback" not in response.text
    assert 'href="/admin/editions/1/desk">Back to the draft</a>' in response.text or \
        "/editions/9" in url
    assert desk_ids(site) == before


def test_cancel_at_the_desk_returns_the_articles(site: Site) -> None:
    site.digest.ok("articles", "import", str(SAMPLE_JSON))
    site.digest.ok("editions", "draft")
    with signed_in(site) as client:
        response = post(client, "/admin/editions/1/desk", "/admin/editions/1/cancel",
                        confirm="yes")
        assert (response.status_code, response.headers["location"]) == (303,
                                                                         "/admin/editions")
        page = client.get("/admin/editions").text
        assert "Cancelled edition 1: it will never be sent; its 30 articles went back" in page
        assert "No draft waiting" in client.get("/admin/draft").text
    assert sql(site.digest.folder, "SELECT count(*) FROM articles WHERE edition_id IS NULL"
               ) == [(30,)]


BROWSER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/126.0 Safari/537.36")


def test_editions_show_deliveries_failures_and_clicks(digest: Digest,
                                                     smtp: LoopbackSMTPServer) -> None:
    add_user(digest)
    digest.ok("articles", "import", str(SAMPLE_JSON))
    for address in ("ada@example.org", "gone@example.org", "bob@example.org"):
        digest.ok("subscribers", "add", address)
    smtp.reply_policy = lambda phase, _f, rcpt: "550 5.1.1 no such user" \
        if phase == "RCPT" and rcpt == "gone@example.org" else None
    with serving(digest, DIGEST_TRACKING__CLICKS="true") as site:
        env = smtp_env(smtp, DIGEST_TRACKING__CLICKS="true",
                       DIGEST_DIGEST__BASE_URL="http://127.0.0.1")
        digest.partly("send", "--yes", env=env)   # gone@ refused
        body = smtp.received[0].message().get_body(("html",)).get_content()
        link = re.search(r'href="http://127\.0\.0\.1(/r/[^"]+)"', body).group(1)
        with site.client() as reader:
            assert reader.get(link, headers={"User-Agent": BROWSER_AGENT}).status_code == 302
        with signed_in(site) as client:
            listed = client.get("/admin/editions").text
            row = re.search(r'<tr>\s*<td class="num" data-label="No."><a href="/admin/'
                            r'editions/1">1</a>.*?</tr>', listed, re.S).group(0)
            assert "sent" in row and "2 sent, 1 failed" in row
            assert '<td class="num" data-label="Clicks">1</td>' in row
            detail = client.get("/admin/editions/1").text
            articles = client.get("/admin/editions/1/desk").text
    # The sent edition's articles, each with its clicks, and no button to change them.
    assert 'href="/admin/editions/1/desk">Its articles and their clicks</a>' in detail
    assert articles.count('<td class="num" data-label="Clicks">1</td>') == 1
    assert "<h1>Edition 1 <span" in articles and 'value="drop"' not in articles
    assert "Failures and retries" in detail and "gone@example.org" in detail
    assert "550 5.1.1 no such user" in detail
    assert "Bounces and complaints about it: 1 hard" in detail


@pytest.mark.both_backends
def test_subscribers_search_show_change_export_and_import(site: Site) -> None:
    (site.digest.folder / "subs.csv").write_text(
        "email,name,topics,timezone\nada@example.org,Ada Lovelace,AI,Europe/London\n"
        "grace@example.org,Grace Hopper,,America/New_York\n"
        "bob_smith@example.org,Bob,,\n")
    site.digest.ok("subscribers", "import", "subs.csv")
    with signed_in(site) as client:
        found = client.get("/admin/subscribers", params={"q": "LOVELACE"}).text
        assert "ada@example.org" in found and "grace@example.org" not in found
        assert "1 subscriber matches" in found
        # % and _ are letters to the search, never wildcards.
        assert "0 subscribers match" in client.get("/admin/subscribers",
                                                   params={"q": "%"}).text
        assert "bob_smith@" in client.get("/admin/subscribers", params={"q": "b_s"}).text
        assert "bob_smith@" not in client.get("/admin/subscribers",
                                              params={"q": "b_", "status": "unsubscribed"}
                                              ).text
        [(ada,)] = sql(site.digest.folder, "SELECT id FROM subscribers WHERE email_key = "
                                           "'ada@example.org'")
        page = f"/admin/subscribers/{ada}"
        shown = client.get(page).text
        assert "Ada Lovelace" in shown and "Europe/London" in shown
        changes(site, client, page)
        exported = client.get("/admin/subscribers/export.csv")
        assert exported.headers["content-type"].startswith("text/csv")
        assert "attachment" in exported.headers["content-disposition"]
        assert exported.text.splitlines()[0] == site.digest.ok(
            "subscribers", "export", "-").output.splitlines()[0]
        assert "ada@example.org,Ada Lovelace" in exported.text
        importing(client)


def changes(site: Site, client: httpx.Client, page: str) -> None:
    assert post(client, page, page + "/status", status="unsubscribed").status_code == 303
    assert "ada@example.org is unsubscribed now." in client.get(page).text
    # The suppression says who did it: an editor on the admin pages, not the command line.
    assert sql(site.digest.folder, "SELECT reason, source FROM suppressions WHERE email_key "
                                   "= 'ada@example.org'") == [("unsubscribed",
                                                               f"admin {EDITOR}")]
    refused = post(client, page, page + "/status", status="active")
    assert refused.status_code == 400 and "unsubscribed" in refused.text
    assert post(client, page, page + "/status", status="active", force="yes"
                ).status_code == 303
    assert post(client, page, page + "/topics", topics="Science").status_code == 303
    rows = json.loads(site.digest.ok("subscribers", "list", "--format", "json").output)
    ada = next(r for r in rows if r["email"] == "ada@example.org")
    assert (ada["status"], ada["topics"]) == ("active", ["Science"])
    bad = post(client, page, page + "/topics", topics="Astrology")
    assert bad.status_code == 400 and "Astrology" in bad.text


def importing(client: httpx.Client) -> None:
    csv = b"email,name\nnew@example.org,New Person\nnot an address,Nobody\n"

    def upload(**fields: str) -> httpx.Response:
        return client.post("/admin/subscribers/import",
                           data={**tokens(client.get("/admin/subscribers")), **fields},
                           files={"file": ("people.csv", csv, "text/csv")})

    dry = upload(dry_run="yes")
    assert dry.status_code == 200
    assert "Would import 1 new subscriber, update 0, unchanged 0, rejected 1." in dry.text
    assert "people.csv:3: &#39;not an address&#39; is not a valid email address" in dry.text
    assert "new@example.org" not in client.get("/admin/subscribers").text
    done = upload()
    assert "Imported 1 new subscriber, updated 0, unchanged 0, rejected 1." in done.text
    assert "new@example.org" in client.get("/admin/subscribers").text


@pytest.mark.slow
def test_a_big_upload_is_only_ever_a_signed_in_editors(site: Site) -> None:
    big = b"email\n" + b"".join(b"reader%06d@example.org\n" % i for i in range(3000))
    assert len(big) > 64 * 1024
    with site.client() as anonymous:
        token = tokens(anonymous.get("/admin/login"))
        refused = anonymous.post("/admin/subscribers/import", data=token,
                                 files={"file": ("a.csv", big, "text/csv")})
        assert refused.status_code == 413
    with signed_in(site) as client:
        done = client.post("/admin/subscribers/import",
                           data={**tokens(client.get("/admin/subscribers")), "dry_run": "yes"},
                           files={"file": ("a.csv", big, "text/csv")})
        assert "Would import 3000 new subscribers" in done.text


def test_an_edition_or_subscriber_that_is_not_there_is_a_404(site: Site) -> None:
    with signed_in(site) as client:
        for path in ("/admin/editions/99", "/admin/editions/99/desk",
                     "/admin/subscribers/99"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "Not found" in response.text and "Sign out" in response.text


def test_feeds_bounces_and_suppressions(site: Site) -> None:
    # A feed on this machine, allowed as an intranet's would be: nothing listens on port 9.
    intranet = {"DIGEST_FETCH__ALLOW_PRIVATE": "true"}
    site.digest.ok("feeds", "add", "http://127.0.0.1:9/feed.xml", "--name", "Broken feed",
                   env=intranet)
    assert site.digest("feeds", "fetch", env=intranet).exit_code == 1
    site.digest.ok("subscribers", "add", "ada@example.org")
    (site.digest.folder / "bounce.eml").write_text(
        "From: MAILER-DAEMON@example.org\nTo: digest@example.org\nSubject: Undelivered\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        "--b\nContent-Type: text/plain\n\nIt bounced.\n\n--b\n"
        "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: rfc822; ada@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n\n--b--\n")
    # The report quotes no Message-ID this store sent: held for review, shown as held.
    site.digest.ok("bounces", "import", "bounce.eml")
    with signed_in(site) as client:
        held = client.get("/admin/bounces").text
        assert "hard: ada@example.org" in held
        assert "quotes no Message-ID of mail this store sent" in held
        assert "No bounce events yet." in held
    site.digest.ok("bounces", "review", "--apply", "1")
    with signed_in(site) as client:
        feeds = client.get("/admin/feeds").text
        assert "Broken feed" in feeds and "failing" in feeds
        bounces = client.get("/admin/bounces").text
        assert "ada@example.org" in bounces and "5.1.1" in bounces
        assert "No reports held for review." in bounces
        listed = client.get("/admin/suppressions").text
        assert "ada@example.org" in listed and "hard-bounced" in listed
        post(client, "/admin/suppressions", "/admin/suppressions/add", email="Boss@Example.org")
        assert "Suppressed Boss@Example.org." in client.get("/admin/suppressions").text
        assert "boss@example.org" in client.get("/admin/suppressions",
                                                params={"reason": "manual"}).text
        lifted = post(client, "/admin/suppressions", "/admin/suppressions/remove",
                      email="boss@example.org")
        assert lifted.status_code == 303
        assert "Lifted the suppression of boss@example.org (manual)." in \
            client.get("/admin/suppressions").text
        missing = post(client, "/admin/suppressions", "/admin/suppressions/remove",
                       email="boss@example.org")
        assert missing.status_code == 400
        assert "boss@example.org is not on the suppression list" in missing.text


def test_a_form_token_lasts_as_long_as_the_sign_in(site: Site,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A draft page left open for three hours (an editor's sign-in lasts 12) still saves:
    the site's form token outlived its two hours once, and the page said "Form expired"."""
    from flask_wtf.csrf import generate_csrf, validate_csrf

    app = create_app(site.settings, site.store)
    with app.test_request_context():
        token = generate_csrf()
        three_hours_on = time.time() + 3 * 3600
        monkeypatch.setattr(time, "time", lambda: three_hours_on)
        validate_csrf(token)                     # raises ValidationError when expired
        monkeypatch.setattr(time, "time", lambda: three_hours_on + 10 * 3600)
        with pytest.raises(Exception, match="expired"):
            validate_csrf(token)


def test_an_approval_is_for_the_draft_the_editor_saw(site: Site) -> None:
    """Two editors: one looks at the draft, the other drops a story meanwhile; the first
    one's Approve is refused (it would approve what they never saw), and goes through
    once they have looked again."""
    site.digest.ok("articles", "import", str(SAMPLE_JSON))
    site.digest.ok("editions", "draft")
    with signed_in(site) as client:
        page = client.get("/admin/editions/1/desk")
        seen = re.search(r'name="seen" value="([0-9a-f]{32})"', page.text)
        assert seen is not None
        site.digest.ok("editions", "drop", "1", "7")          # the other editor
        stale = client.post("/admin/editions/1/approve",
                            data={**tokens(page), "seen": seen.group(1)})
        assert stale.status_code == 400 and "changed since you looked at it" in stale.text
        assert desk.desk_view(site.store, site.settings, 1).status.value == "draft"
        page = client.get("/admin/editions/1/desk")
        fresh = re.search(r'name="seen" value="([0-9a-f]{32})"', page.text)
        assert fresh is not None and fresh.group(1) != seen.group(1)
        done = client.post("/admin/editions/1/approve",
                           data={**tokens(page), "seen": fresh.group(1)})
        assert done.status_code == 303
    assert desk.desk_view(site.store, site.settings, 1).status.value == "approved"
