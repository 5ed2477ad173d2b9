"""The DNSBL over real sockets on loopback: dnspython (and dig) against listings built from real
mail (SpamAssassin, Nazario phishing, a 2023-2025 spam archive with IPv6 origins)."""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from conftest import shared
from dnsbl_helpers import (
    ZONE,
    a_values,
    ask,
    expected_senders,
    ingest_real,
    reversed_name,
    running,
    txt_values,
    wait_listed,
)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("dnsbl") / "data"
    settings = ingest_real(
        data,
        shared("mail", "spamassassin-2002", "spam"),
        shared("mail", "nazario-phishing-2005", "phishing0.mbox"),
        shared("mail", "personal-spam-2023-2025"),
    )
    # Ham from other senders, labelled as such: must never list its senders.
    ingest_real(data, shared("mail", "spamassassin-2002", "easy_ham_2"), label="ham")
    settings["dnsbl_max_age_days"] = 0  # archives: never expire
    return {"settings": settings, "data": data, "expected": expected_senders(data)}


def test_rfc5782_test_points_over_udp_and_tcp(real: dict[str, Any]) -> None:
    with running(real["settings"]) as server:
        for tcp in (False, True):
            for zone in (ZONE, f"senders.{ZONE}"):
                listed = ask(server, f"2.0.0.127.{zone}", tcp=tcp)
                assert listed.rcode() == dns.rcode.NOERROR and a_values(listed) == ["127.0.0.2"]
                assert txt_values(ask(server, f"2.0.0.127.{zone}", "TXT", tcp=tcp)) == [
                    "RFC 5782 test point"
                ]
                assert ask(server, f"1.0.0.127.{zone}", tcp=tcp).rcode() == dns.rcode.NXDOMAIN
                # RFC 5782 §5: ::FFFF:7F00:2 listed, ::FFFF:7F00:1 not.
                v6 = ask(server, reversed_name("::ffff:7f00:2", zone), tcp=tcp)
                assert a_values(v6) == ["127.0.0.2"]
                v6_no = ask(server, reversed_name("::ffff:7f00:1", zone), tcp=tcp)
                assert v6_no.rcode() == dns.rcode.NXDOMAIN
            # Each list zone answers the test point with its own code.
            assert a_values(ask(server, f"2.0.0.127.dictionary.{ZONE}", tcp=tcp)) == ["127.0.0.3"]
            assert a_values(ask(server, f"2.0.0.127.harvesters.{ZONE}", tcp=tcp)) == ["127.0.0.4"]


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) not installed")
def test_dig_sees_the_test_point_and_a_real_sender(real: dict[str, Any]) -> None:
    sender = sorted(ip for ip in real["expected"] if ":" not in ip)[0]
    with running(real["settings"]) as server:
        for name, want in (
            (f"2.0.0.127.{ZONE}", "127.0.0.2"),
            (reversed_name(sender), "127.0.0.2"),
        ):
            for proto in ("+notcp", "+tcp"):
                out = subprocess.run(
                    ["dig", f"@{server.host}", "-p", str(server.port), name, "A", "+short", proto],
                    capture_output=True, text=True, timeout=20,
                )  # fmt: skip
                assert out.stdout.split() == [want], out


def test_senders_from_real_mail_a_and_txt(real: dict[str, Any]) -> None:
    expected = real["expected"]
    v4 = sorted(ip for ip in expected if ":" not in ip)
    sample = random.Random(5).sample(v4, 40)
    with running(real["settings"]) as server:
        for i, ip in enumerate(sample):
            for zone in (ZONE, f"senders.{ZONE}"):
                msg = ask(server, reversed_name(ip, zone), tcp=bool(i % 2))
                assert msg.rcode() == dns.rcode.NOERROR and a_values(msg) == ["127.0.0.2"], ip
                assert msg.flags & dns.flags.AA
            (text,) = txt_values(ask(server, reversed_name(ip, f"senders.{ZONE}"), "TXT"))
            last, hits = expected[ip]
            stamp = last.replace(tzinfo=UTC).strftime("%Y-%m-%d %H:%MZ")
            assert text == (
                f"spam source: {hits} trap hits, last seen {stamp}; "
                f"http://127.0.0.1:8090/api/v1/ip/{ip}"
            )
        # Addresses no message came from: NXDOMAIN with the SOA for negative caching.
        rng = random.Random(9)
        misses = 0
        while misses < 40:
            ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            if ip in expected:
                continue
            misses += 1
            msg = ask(server, reversed_name(ip), tcp=bool(misses % 2))
            assert msg.rcode() == dns.rcode.NXDOMAIN and not msg.answer
            (soa,) = msg.authority
            assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == f"{ZONE}."
            # RFC 2308 §3: negative TTL = min(SOA TTL, MINIMUM).
            assert soa.ttl == min(soa.ttl, soa[0].minimum) == 300


def test_ham_senders_are_not_listed(real: dict[str, Any]) -> None:
    import duckdb

    con = duckdb.connect(str(real["data"] / "trapline.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT DISTINCT origin_ip FROM messages WHERE label = 'ham' AND origin_ip IS NOT NULL"
        ).fetchall()
    finally:
        con.close()
    ham_only = sorted({r[0] for r in rows} - set(real["expected"]))
    assert len(ham_only) > 20
    with running(real["settings"]) as server:
        for ip in ham_only:
            assert ask(server, reversed_name(ip)).rcode() == dns.rcode.NXDOMAIN, ip


def test_ipv6_senders_answer_in_nibble_form(real: dict[str, Any]) -> None:
    v6 = sorted(ip for ip in real["expected"] if ":" in ip)
    assert len(v6) >= 3  # the 2023-2025 archive has IPv6 origins (Microsoft 365 relays)
    with running(real["settings"]) as server:
        for ip in v6:
            for tcp in (False, True):
                msg = ask(server, reversed_name(ip, f"senders.{ZONE}"), tcp=tcp)
                assert a_values(msg) == ["127.0.0.2"], ip
        # Upper-case hex in a query is the same name (DNS names are case-insensitive).
        name = reversed_name(v6[0]).upper()
        assert a_values(ask(server, name)) == ["127.0.0.2"]
        assert ask(server, reversed_name("2001:db8::1")).rcode() == dns.rcode.NXDOMAIN


def test_apex_records_nodata_and_refusals(real: dict[str, Any]) -> None:
    sender = sorted(ip for ip in real["expected"] if ":" not in ip)[0]
    with running(real["settings"]) as server:
        soa = ask(server, ZONE, "SOA")
        assert (
            soa.rcode() == dns.rcode.NOERROR and soa.answer[0][0].mname.to_text() == f"ns.{ZONE}."
        )
        ns = ask(server, ZONE, "NS", tcp=True)
        assert [r.target.to_text() for r in ns.answer[0]] == [f"ns.{ZONE}."]
        # A listed name asked for a type it does not have: NOERROR, no answer, SOA (NODATA).
        nodata = ask(server, reversed_name(sender), "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA
        sub = ask(server, f"senders.{ZONE}", "A")
        assert sub.rcode() == dns.rcode.NOERROR and not sub.answer
        # Outside our zones, other classes, zone transfers: REFUSED.
        assert ask(server, "www.example.com").rcode() == dns.rcode.REFUSED
        assert ask(server, "example.org").rcode() == dns.rcode.REFUSED
        chaos = dns.message.make_query(f"2.0.0.127.{ZONE}", "A", "CH")
        reply = dns.query.udp(chaos, server.host, port=server.port, timeout=5)
        assert reply.rcode() == dns.rcode.REFUSED
        assert ask(server, ZONE, "AXFR", tcp=True).rcode() == dns.rcode.REFUSED
        # EDNS: our OPT comes back with the 1232-byte payload size.
        edns = ask(server, f"2.0.0.127.{ZONE}", use_edns=0, payload=4096)
        assert edns.edns == 0 and edns.payload == 1232 and a_values(edns) == ["127.0.0.2"]


def test_truncated_udp_answer_is_retried_over_tcp(real: dict[str, Any]) -> None:
    names = [f"ns{i:02d}.name-servers-of-a-large-dnsbl.example.net" for i in range(30)]
    with running(real["settings"], dnsbl_ns=names) as server:
        q = dns.message.make_query(ZONE, "NS", use_edns=False)
        raw = dns.query.udp(q, server.host, port=server.port, timeout=5, ignore_trailing=True)
        assert raw.flags & dns.flags.TC and not raw.answer  # > 512 bytes: truncated
        reply, used_tcp = dns.query.udp_with_fallback(q, server.host, port=server.port, timeout=5)
        assert used_tcp and not reply.flags & dns.flags.TC
        assert sorted(r.target.to_text() for r in reply.answer[0]) == [n + "." for n in names]


def test_listings_expire_after_max_age(real: dict[str, Any]) -> None:
    expected = real["expected"]
    ip = sorted(ip for ip in expected if ":" not in ip)[3]
    last = expected[ip][0].replace(tzinfo=UTC).timestamp()
    now = [last + 3600.0]  # an hour after its latest spam
    settings = {**real["settings"], "dnsbl_max_age_days": 1}
    with running(settings, clock=lambda: now[0]) as server:
        assert a_values(ask(server, reversed_name(ip))) == ["127.0.0.2"]
        now[0] = last + 86400 + 1  # a day and a second later: expired without a reload
        assert ask(server, reversed_name(ip)).rcode() == dns.rcode.NXDOMAIN
        assert a_values(ask(server, f"2.0.0.127.{ZONE}")) == ["127.0.0.2"]  # test points stay
        server.reload()  # and a reload at that time does not list it either
        assert ask(server, reversed_name(ip)).rcode() == dns.rcode.NXDOMAIN


def test_reload_while_ingesting_drops_no_query(real: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(real["data"], data)
    settings = {**real["settings"], "data_dir": str(data)}
    before = set(real["expected"])
    with running(settings, dnsbl_reload_s=0.2) as server:
        stop = threading.Event()
        answered: list[int] = []
        failures: list[str] = []
        listed = sorted(ip for ip in before if ":" not in ip)

        def load() -> None:
            i = 0
            while not stop.is_set():
                ip = listed[i % len(listed)]
                i += 1
                try:
                    msg = ask(server, reversed_name(ip))
                except Exception as exc:  # a timeout would be a dropped query
                    failures.append(f"{ip}: {exc!r}")
                    continue
                if a_values(msg) != ["127.0.0.2"]:
                    failures.append(f"{ip}: {msg.rcode()}")
                answered.append(1)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            ingest_real(data, shared("mail", "nazario-phishing-2005", "phishing1.mbox"))
            new = sorted(set(expected_senders(data)) - before)
            assert new
            assert wait_listed(server, new), f"not listed after reloads: {server.last_reload_error}"
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert server.reloads >= 1
        assert not failures, failures[:5]
        assert len(answered) > 50


def test_worker_processes_share_the_port_and_follow_reloads(
    real: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(real["data"], data)
    settings = {**real["settings"], "data_dir": str(data)}
    before = set(real["expected"])
    with running(settings, dnsbl_workers=2) as server:
        sample = sorted(ip for ip in before if ":" not in ip)[:60]
        # Fresh client sockets land on both processes' sockets (SO_REUSEPORT hashing).
        for ip in sample:
            assert a_values(ask(server, reversed_name(ip))) == ["127.0.0.2"]
        ingest_real(data, shared("mail", "nazario-phishing-2005", "phishing1.mbox"))
        new = sorted(set(expected_senders(data)) - before)[:40]
        server.reload()
        assert wait_listed(server, new), "a worker process still answers from the old data"


def test_rate_limit_drops_a_flooding_source(real: dict[str, Any]) -> None:
    with running(real["settings"], dnsbl_rate_limit=5) as server:
        import socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        q = dns.message.make_query(f"2.0.0.127.{ZONE}", "A", use_edns=False)
        try:
            for i in range(200):
                q.id = i
                sock.sendto(q.to_wire(), (server.host, server.port))
            got = 0
            while True:
                try:
                    sock.recvfrom(512)
                except TimeoutError:
                    break
                got += 1
        finally:
            sock.close()
        assert 1 <= got < 100  # a burst of 5 plus what refills while the 200 arrive
        # Another source is not affected.
        assert a_values(ask(server, f"2.0.0.127.{ZONE}")) == ["127.0.0.2"]


def test_ipv6_listener(real: dict[str, Any]) -> None:
    try:
        server_cm = running(real["settings"], host="::1")
        server = server_cm.__enter__()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        assert a_values(ask(server, f"2.0.0.127.{ZONE}")) == ["127.0.0.2"]
        assert a_values(ask(server, f"2.0.0.127.{ZONE}", tcp=True)) == ["127.0.0.2"]
    finally:
        server_cm.__exit__(None, None, None)


# --- the same lists in rbldnsd ------------------------------------------------------------------


def _start_rbldnsd(folder: Path, *zones: str) -> tuple[subprocess.Popen[str], int]:
    """rbldnsd in the foreground on a free loopback port (it drops root to its own user)."""
    import os
    import socket

    for _ in range(10):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        cmd = ["rbldnsd", "-n", "-b", f"127.0.0.1/{port}", *zones]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "rbldns" if _user_exists("rbldns") else "nobody"]
        proc = subprocess.Popen(
            cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        log = ""
        for line in proc.stdout:
            log += line
            if "started" in line:
                return proc, port
        proc.wait()
        if "Address already in use" not in log:
            raise RuntimeError(f"rbldnsd did not start:\n{log}")
    raise RuntimeError("no free port for rbldnsd")


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _same(a: dns.message.Message, b: dns.message.Message) -> tuple[Any, ...]:
    return (a.rcode(), a_values(a), txt_values(a)), (b.rcode(), a_values(b), txt_values(b))


@pytest.mark.skipif(
    shutil.which("rbldnsd") is None, reason="rbldnsd not installed (.ci/run installs it)"
)
def test_rbldnsd_serving_the_export_gives_the_same_answers(real: dict[str, Any]) -> None:
    import os
    import tempfile

    from trapline.export.rbldnsd import export_rbldnsd
    from trapline.serve.dnsbl.run import read_only_source

    settings = real["settings"]
    data = read_only_source(settings)()
    # A world-readable folder: rbldnsd reads its data as an unprivileged user.
    folder = Path(tempfile.mkdtemp(prefix="trapline-rbldnsd-"))
    os.chmod(folder, 0o755)
    proc = None
    try:
        ip4 = export_rbldnsd(data, settings, folder / "senders.zone")
        assert (
            ip4.skipped_v6 >= 3
            and ip4.entries == len(data.lists["senders"].keys) - ip4.skipped_v6 + 1
        )
        export_rbldnsd(data, settings, folder / "all.zone", fmt="combined")
        proc, port = _start_rbldnsd(
            folder, f"senders.{ZONE}:ip4set:senders.zone", f"{ZONE}:combined:all.zone"
        )
        expected = real["expected"]
        rng = random.Random(13)
        listed = rng.sample(sorted(expected), 60)
        unlisted = [
            f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            for _ in range(60)
        ]
        unlisted = [ip for ip in unlisted if ip not in expected] + ["2001:db8::5", "::ffff:7f00:1"]
        points = ["127.0.0.2", "127.0.0.1", "::ffff:7f00:2"]
        compared = 0
        with running(settings) as server:
            for ip in [*listed, *unlisted, *points]:
                zones = [ZONE, f"dictionary.{ZONE}"]
                if ":" not in ip:
                    zones.append(f"senders.{ZONE}")  # the ip4set export is IPv4 only
                for zone in zones:
                    for rdtype in ("A", "TXT"):
                        q = dns.message.make_query(reversed_name(ip, zone), rdtype)
                        ours = dns.query.udp(q, server.host, port=server.port, timeout=5)
                        theirs = dns.query.udp(q, "127.0.0.1", port=port, timeout=5)
                        mine, other = _same(ours, theirs)
                        assert mine == other, (ip, zone, rdtype)
                        compared += 1
        assert compared > 600
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


# --- the commands -----------------------------------------------------------------------------


def _port_from(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> tuple[int, str]:
    import re

    assert proc.stdout is not None
    log = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        log += line
        if m := re.search(pattern, line):
            return int(m[1]), log
    raise RuntimeError(f"no {pattern!r} in:\n{log}")


def test_trapline_dnsbl_alone_serves_the_store(real: dict[str, Any]) -> None:
    import os
    import signal
    import sys

    sender = sorted(ip for ip in real["expected"] if ":" not in ip)[7]
    env = {**os.environ, "TRAPLINE_DATA_DIR": str(real["data"])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trapline", "dnsbl", "--listen", "127.0.0.1:0", "--zone", ZONE,
         "--max-age", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        port, log = _port_from(proc, r"dns listening on 127\.0\.0\.1:(\d+)")
        assert f"{len(real['expected'])} listed" in log
        q = dns.message.make_query(reversed_name(sender), "A")
        assert a_values(dns.query.udp(q, "127.0.0.1", port=port, timeout=5)) == ["127.0.0.2"]
        assert a_values(dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)) == ["127.0.0.2"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out


def test_serve_dns_lists_trap_mail_while_it_keeps_catching(tmp_path: Path) -> None:
    import os
    import signal
    import smtplib
    import sys

    env = {
        **os.environ,
        "TRAPLINE_DATA_DIR": str(tmp_path / "data"),
        "TRAPLINE_DNSBL_RELOAD_S": "0.3",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "trapline", "serve", "--smtp", "127.0.0.1:0", "--http", "off",
         "--dns", "127.0.0.1:0", "--zone", ZONE, "--trap-domain", "traps.example.org"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        smtp_port, _ = _port_from(proc, r"smtp listening on 127\.0\.0\.1:(\d+)")
        dns_port, _ = _port_from(proc, r"dns listening on 127\.0\.0\.1:(\d+)")
        name = f"9.0.0.127.senders.{ZONE}"
        q = dns.message.make_query(name, "A")
        assert dns.query.udp(q, "127.0.0.1", port=dns_port, timeout=5).rcode() == dns.rcode.NXDOMAIN
        # A spam run from 127.0.0.9 (loopback aliases are real source addresses on Linux).
        body = shared("mail", "spamassassin-2002", "spam").glob("0000*")
        raw = next(iter(sorted(body))).read_bytes()
        with smtplib.SMTP("127.0.0.1", smtp_port, source_address=("127.0.0.9", 0), timeout=30) as s:
            s.sendmail("bulk@spam.example.net", ["anyone@traps.example.org"], raw)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reply = dns.query.udp(q, "127.0.0.1", port=dns_port, timeout=5)
            if a_values(reply) == ["127.0.0.2"]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("trap mail from 127.0.0.9 never got listed")
        txt = dns.query.udp(
            dns.message.make_query(name, "TXT"), "127.0.0.1", port=dns_port, timeout=5
        )
        assert txt_values(txt)[0].startswith("spam source: 1 trap hits")
        # The RFC 5782 "never listed" point stays unlisted even though the trap sees loopback.
        q1 = dns.message.make_query(f"1.0.0.127.{ZONE}", "A")
        assert (
            dns.query.udp(q1, "127.0.0.1", port=dns_port, timeout=5).rcode() == dns.rcode.NXDOMAIN
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
