"""Real mail servers on 127.0.0.1 for the tests, each started with a config of its own in a
folder of its own and stopped at teardown.

Dovecot: IMAP (STARTTLS), IMAPS, POP3 (STLS) and POP3S with a certificate signed by a CA
the test makes, passwd-file users with known passwords, Maildir storage that tests can
fill and inspect directly on disk.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Dovecot", "DovecotUser", "TlsFiles", "closed_port", "free_port", "make_tls_files",
           "need_dovecot", "wait_for_port"]

DOVECOT = "/usr/sbin/dovecot"


def _port_block() -> range:
    """This test process's own ports: below the kernel's range for port 0 (which every
    socket bound to port 0 draws from), a block for each parallel worker."""
    try:
        first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range")
                              .read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    size = 500
    start = 10_000 + (int(worker) if worker.isdigit() else 0) * size
    return range(start, min(start + size, first_ephemeral))


_PORTS = itertools.cycle(_port_block())


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 that refuses connections for as long as the block lasts: bound
    by this process and never listened on, so no other process can start listening on it
    meanwhile (a port found free and then let go could be taken before the connection the
    test expects to be refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a server started later by
    another program (Dovecot, Postfix). Not the kernel's pick for port 0: another process
    could be handed that same port before the server binds it (Postfix then failed with
    "Address already in use" beside a parallel test); these come from this process's own
    block, outside the range the kernel picks from."""
    for _ in range(len(_port_block())):
        port = next(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this test process's block")


def wait_for_port(port: int, deadline: float, alive: Any = None) -> bool:
    """True once 127.0.0.1:port accepts a connection; False when the deadline (a
    time.monotonic() value) passes or alive() turns false first."""
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)     # polling a condition, not waiting for a guessed time
    return False


# --- TLS -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TlsFiles:
    ca: Path        # the CA certificate a client must trust ([bounces] ca_file)
    cert: Path      # the server certificate, signed by ca, for 127.0.0.1 and localhost
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls_files(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate it signed, valid for a day, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("digest test CA"))
        .issuer_name(_name("digest test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


# --- Dovecot ---------------------------------------------------------------------------

_DOVECOT_CONF = """\
base_dir = {folder}/run
state_dir = {folder}/state
instance_name = digest-test-{port}
log_path = {folder}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
{users}
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = plain login
# A refused login answers at once (the default waits 2 s to slow down guessing).
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
last_valid_uid = {uid}
# One passwd-file per user, so a user added while the server runs is read when first
# used (no reload of a file that has changed).
passdb {{
  driver = passwd-file
  args = {folder}/users/%u
}}
userdb {{
  driver = passwd-file
  args = {folder}/users/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
{chroot}}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
{chroot}}}
# No penalty for failed logins from an address: the tests that give a wrong password
# would slow down every later login of the module (2, 4, 8 … 15 s).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{chroot}}}
"""

# Started as root, Dovecot runs its login processes as dovenull and its internal ones as
# dovecot (the Debian package makes both users; login processes refuse to run as root),
# chrooted into base_dir, and the mail as nobody: it refuses mail access as UID 0. The
# auth process stays root so that it can read the users files in a folder only root can
# reach. Started as anyone else, everything runs as that user, and nothing can chroot.
_AS_ROOT = """\
default_internal_user = dovecot
default_login_user = dovenull
service auth {
  user = root
}"""
_AS_USER = """\
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}"""


def need_dovecot() -> None:
    """Skips the test where Dovecot is not installed, or fails it when
    DIGEST_REQUIRE_JUDGES=1 (set by .ci/run, which installs it)."""
    import pytest

    if Path(DOVECOT).exists():
        return
    reason = "Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)"
    if os.environ.get("DIGEST_REQUIRE_JUDGES") == "1":
        pytest.fail(f"{reason}, and DIGEST_REQUIRE_JUDGES=1")
    pytest.skip(reason)


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


class Dovecot:
    """Dovecot in the foreground (`dovecot -F -c <conf>`) in a temporary folder of its
    own, serving IMAP (STARTTLS) and IMAPS, POP3 (STLS) and POP3S on free ports of
    127.0.0.1. Each user made with add_user() has a Maildir of its own in that folder.

    Stopping takes Dovecot about a second (its log process lingers), so a test module
    shares one server and each test takes a new user."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: the mail user (nobody, when run as root) must be
        # able to reach the mailboxes, and pytest's folders are private to their owner.
        self.folder = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
        self.folder.chmod(0o755)
        self.as_root = os.geteuid() == 0
        account = pwd.getpwnam("nobody") if self.as_root else pwd.getpwuid(os.geteuid())
        self.mail_uid, self.mail_gid = account.pw_uid, account.pw_gid
        self.imap_port = self.imaps_port = self.pop3_port = self.pop3s_port = 0
        self.tls = make_tls_files(self.folder)
        self.proc: subprocess.Popen[bytes] | None = None
        self._users = itertools.count(1)

    @property
    def ca_file(self) -> Path:
        return self.tls.ca

    @property
    def log(self) -> str:
        """What the server wrote to its log file and, before it had one, to stderr."""
        paths = (self.folder / "dovecot.stderr", self.folder / "dovecot.log")
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def _write_config(self) -> Path:
        for port in ("imap_port", "imaps_port", "pop3_port", "pop3s_port"):
            setattr(self, port, free_port())
        (self.folder / "users").mkdir()
        users = _AS_ROOT if self.as_root else _AS_USER.format(
            user=pwd.getpwuid(os.geteuid()).pw_name, group=_group_name(os.getegid()))
        conf = self.folder / "dovecot.conf"
        conf.write_text(_DOVECOT_CONF.format(
            folder=self.folder, port=self.imaps_port, users=users, cert=self.tls.cert,
            key=self.tls.key, uid=self.mail_uid, imap=self.imap_port, imaps=self.imaps_port,
            pop3=self.pop3_port, pop3s=self.pop3s_port,
            chroot="" if self.as_root else "  chroot =\n"))
        return conf

    def start(self, timeout: float = 30) -> Dovecot:
        """Start the server and return once all four ports accept connections."""
        conf = self._write_config()
        with open(self.folder / "dovecot.stderr", "wb") as stderr:
            self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)],
                                         stdin=subprocess.DEVNULL, stdout=stderr,
                                         stderr=stderr)
        deadline = time.monotonic() + timeout
        proc = self.proc
        ready = all(wait_for_port(port, deadline, lambda: proc.poll() is None)
                    for port in (self.imap_port, self.imaps_port, self.pop3_port,
                                 self.pop3s_port))
        if not ready:
            code = proc.poll()
            log = self.log
            self.stop()
            raise RuntimeError(f"dovecot did not start (exit code {code}); its log:\n{log}")
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM; SIGKILL when it does not go) and remove its folder."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        shutil.rmtree(self.folder, ignore_errors=True)

    def add_user(self, password: str = "correct horse battery staple") -> DovecotUser:
        """A new user (bounces-N@example.org) with an empty mailbox."""
        user = DovecotUser(self, f"bounces-{next(self._users)}@example.org", password)
        user.make_dir(user.home)
        (self.folder / "users" / user.username).write_text(
            f"{user.username}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::"
            f"{user.home}::\n")
        return user


class DovecotUser:
    """One user of a Dovecot and their mailbox, which the test can fill and read directly
    on disk (Maildir++ as Dovecot lays it out: INBOX at the root, a folder X in .X/)."""

    def __init__(self, server: Dovecot, username: str, password: str) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.home = server.folder / "home" / username
        self.maildir = self.home / "Maildir"
        self._names = itertools.count()

    def make_dir(self, path: Path) -> None:
        for missing in reversed([path, *path.parents]):
            if not missing.is_dir():
                missing.mkdir(mode=0o755 if missing == self.server.folder / "home" else 0o700)
                os.chown(missing, self.server.mail_uid, self.server.mail_gid)

    def _folder_path(self, folder: str) -> Path:
        return self.maildir if folder.upper() == "INBOX" else self.maildir / f".{folder}"

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        """Put one message into a folder the way an MTA would: written in tmp/, then
        renamed into new/ (the server serves it from there)."""
        root = self._folder_path(folder)
        for path in (root / "tmp", root / "new", root / "cur"):
            self.make_dir(path)
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._names)}.digest-test"
        tmp = root / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, self.server.mail_uid, self.server.mail_gid)
        os.rename(tmp, root / "new" / name)

    def _files(self, folder: str) -> list[Path]:
        root = self._folder_path(folder)
        files = [path for sub in ("new", "cur") if (root / sub).is_dir()
                 for path in (root / sub).iterdir()]
        return sorted(files, key=lambda p: p.name)     # the names start with the time

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """The messages in a folder as stored (new/ and cur/), in the order delivered."""
        return [path.read_bytes() for path in self._files(folder)]

    def flags(self, folder: str = "INBOX") -> list[str]:
        """The Maildir flags of each message ("S" seen, "T" deleted, …), in the order of
        messages()."""
        return [path.name.partition(":2,")[2] for path in self._files(folder)]

    def folder_exists(self, folder: str) -> bool:
        return self._folder_path(folder).is_dir()

    def bounces(self, protocol: str = "imap", security: str = "ssl",
                **extra: Any) -> dict[str, Any]:
        """A [bounces] section (for digest.config.with_overrides) for this mailbox."""
        s = self.server
        ports = {("imap", "ssl"): s.imaps_port, ("imap", "starttls"): s.imap_port,
                 ("imap", "none"): s.imap_port, ("pop3", "ssl"): s.pop3s_port,
                 ("pop3", "starttls"): s.pop3_port, ("pop3", "none"): s.pop3_port}
        section = {"protocol": protocol, "security": security, "host": "127.0.0.1",
                   "port": ports[(protocol, security)], "username": self.username,
                   "password": self.password, "ca_file": str(s.ca_file), "timeout": 10.0}
        section.update(extra)
        return section

    def env(self, protocol: str = "imap", security: str = "ssl",
            **extra: Any) -> dict[str, str]:
        """The same as DIGEST_BOUNCES__* environment variables (for the CLI)."""
        return {f"DIGEST_BOUNCES__{key.upper()}": str(value)
                for key, value in self.bounces(protocol, security, **extra).items()}


# --- Postfix: a real MTA that writes real delivery status notifications ------------------

import grp  # noqa: E402
import signal  # noqa: E402

import pytest  # noqa: E402

from digest.mail.loopback import LoopbackSMTPServer, Received  # noqa: E402

__all__ += ["FAR_END_REFUSALS", "PostfixServer", "far_end_policy", "need_postfix"]

POSTFIX_BIN = Path("/usr/sbin/postfix")
POSTFIX_DAEMONS = Path("/usr/lib/postfix/sbin")

# What the far end (the remote MX behind Postfix) answers to RCPT TO, by recipient domain.
# Postfix has accepted the message by then, so the failure comes back the way it does on
# the Internet: as a DSN that Postfix itself writes to the envelope sender.
FAR_END_REFUSALS = {
    "gone.example": "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    "full.example": "452 4.2.2 <{rcpt}>: Mailbox full",
}


def far_end_policy(phase: str, mail_from: str, rcpt: str) -> str | None:
    """A LoopbackSMTPServer reply policy: refuses the recipients of FAR_END_REFUSALS."""
    if phase != "RCPT":
        return None
    reply = FAR_END_REFUSALS.get(rcpt.rpartition("@")[2].lower())
    return reply.format(rcpt=rcpt) if reply else None


def need_postfix() -> None:
    """Skips the test where a private Postfix cannot run, or fails it when
    DIGEST_REQUIRE_JUDGES=1 (set by .ci/run, which installs Postfix)."""
    reason = None
    if not POSTFIX_BIN.exists() or not (POSTFIX_DAEMONS / "master").exists():
        reason = "Postfix is not installed (apt-get install postfix)"
    elif os.geteuid() != 0:
        reason = "a private Postfix needs root (its master drops to the postfix user)"
    else:
        try:
            pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            reason = "the postfix user or the postdrop group is missing (reinstall postfix)"
    if reason is None:
        return
    if os.environ.get("DIGEST_REQUIRE_JUDGES") == "1":
        pytest.fail(f"{reason}, and DIGEST_REQUIRE_JUDGES=1")
    pytest.skip(reason)


class PostfixServer:
    """A Postfix instance of its own, everything in a new temporary folder (config, queue,
    data, Maildirs, log), with smtpd on 127.0.0.1 at a free port.

    Mail for `domain` is delivered by Postfix's virtual agent into Maildirs:
    LOCAL@domain and LOCAL+anything@domain into mail/DOMAIN/LOCAL/ for each LOCAL of
    `mailboxes`. Mail for every other domain is relayed to `far_end`, a LoopbackSMTPServer
    that accepts it (and keeps it) unless far_end_policy refuses the recipient; then
    Postfix returns the message with a DSN to its envelope sender. Delivery is tried once,
    so a deferral (4xx) comes back at once too, as a failed DSN with its 4.x.x status.
    """

    def __init__(self, domain: str = "example.org",
                 mailboxes: tuple[str, ...] = ("bounces",)) -> None:
        self.domain = domain
        self.mailboxes = mailboxes
        self.port = free_port()
        self.far_end = LoopbackSMTPServer(reply_policy=far_end_policy)
        self.root = Path(tempfile.mkdtemp(prefix="digest-postfix-"))
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.mail = self.root / "mail"
        self.logfile = self.root / "maillog"
        self._running = False
        self._far_end_running = False

    def main_cf(self) -> str:
        owner = pwd.getpwnam("nobody")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.root / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": f"mx.{self.domain}",
            "mydomain": self.domain,
            "myorigin": "$mydomain",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # No DNS at all: the far end is an address literal, clients are not looked up.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "relayhost": f"[127.0.0.1]:{self.far_end.port}",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": f"texthash:{self.config / 'mailboxes'}",
            "virtual_uid_maps": f"static:{owner.pw_uid}",
            "virtual_gid_maps": f"static:{owner.pw_gid}",
            "recipient_delimiter": "+",
            # One delivery attempt, then a DSN at once; no delay warnings; a quick queue.
            "maximal_queue_lifetime": "0",
            "bounce_queue_lifetime": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "0",
            "maillog_file": str(self.logfile),
            "maillog_file_prefixes": str(self.root),
            "biff": "no",
        }
        return "".join(f"{key} = {value}\n" for key, value in settings.items())

    def master_cf(self) -> str:
        # Debian's master.cf.proto without chroot, the optional services and the
        # default smtpd: only ours, on its own port.
        services = [
            f"127.0.0.1:{self.port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(services) + "\n"

    def _postfix(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(POSTFIX_BIN), "-c", str(self.config), *command],
                              capture_output=True, text=True, timeout=60)

    def _write_config(self) -> None:
        # The postfix user (queue) and nobody (Maildirs) walk through the folder.
        self.root.chmod(0o755)
        for folder in (self.config, self.queue, self.mail):
            folder.mkdir()
        owner = pwd.getpwnam("nobody")
        os.chown(self.mail, owner.pw_uid, owner.pw_gid)
        (self.config / "main.cf").write_text(self.main_cf())
        (self.config / "master.cf").write_text(self.master_cf())
        (self.config / "mailboxes").write_text("".join(
            f"{local}@{self.domain} {self.domain}/{local}/\n" for local in self.mailboxes))
        # Postfix reads a file again, pausing 300 ms at a time, while it was changed very
        # recently (load_file(3): it may still be being edited): 1.5 to 2 s of every start
        # here. These are written whole, so they may say they were written a minute ago.
        a_minute_ago = time.time() - 60
        for path in self.config.iterdir():
            os.utime(path, (a_minute_ago, a_minute_ago))

    def start(self, timeout: float = 30) -> PostfixServer:
        """Starts the far end and Postfix; returns once smtpd accepts connections."""
        try:
            self.far_end.start()
            self._far_end_running = True
            self._write_config()
            checked = self._postfix("check")
            if checked.returncode != 0:
                raise RuntimeError(f"postfix check failed:\n{checked.stderr}{self.log()}")
            started = self._postfix("start")
            self._running = started.returncode == 0
            if not self._running:
                raise RuntimeError(f"postfix start failed:\n{started.stderr}{self.log()}")
            if not wait_for_port(self.port, time.monotonic() + timeout):
                raise RuntimeError(f"Postfix's smtpd does not answer on 127.0.0.1:{self.port}"
                                   f" after {timeout:g} s; its log:\n{self.log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops Postfix (stop, then abort, then SIGKILL to the master's process group)
        and the far end, and removes the folder."""
        if self._running:
            self._running = False
            if self._postfix("stop").returncode != 0:
                self._postfix("abort")
            if self._postfix("status").returncode == 0:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    pid = (self.queue / "pid" / "master.pid").read_text().split()[0]
                    os.killpg(int(pid), signal.SIGKILL)
        if self._far_end_running:
            self._far_end_running = False
            self.far_end.stop()
        # A Postfix child may still be on its way out; what it leaves is in /tmp anyway.
        shutil.rmtree(self.root, ignore_errors=True)

    def maildir(self, local: str = "bounces") -> Path:
        return self.mail / self.domain / local

    def wait_for_mail(self, local: str = "bounces", count: int = 1, timeout: float = 30
                      ) -> list[Path]:
        """The message files in the Maildir of LOCAL@domain, once there are `count`."""
        new = self.maildir(local) / "new"
        deadline = time.monotonic() + timeout
        while True:
            files = sorted(new.iterdir()) if new.is_dir() else []
            if len(files) >= count:
                return files
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(files)} of {count} messages reached {new} in "
                                   f"{timeout:g} s; Postfix logged:\n{self.log()}")
            time.sleep(0.05)

    def wait_for_relayed(self, count: int, timeout: float = 30) -> list[Received]:
        """What the far end accepted, once it holds `count` messages."""
        deadline = time.monotonic() + timeout
        while len(self.far_end.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.far_end.received)} of {count} messages reached "
                                   f"the far end in {timeout:g} s; Postfix logged:\n"
                                   f"{self.log()}")
            time.sleep(0.05)
        return list(self.far_end.received)

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else "(no Postfix log)\n"

    def __enter__(self) -> PostfixServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

