"""The labeling app over real HTTP (`rlhf-assets label` in a subprocess): access control and concurrent annotators."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from rlhf_assets.labeling.store import LabelStore
from tests.labeling_helpers import acknowledge_guidelines, labeling_server, queue_tasks

pytestmark = pytest.mark.process


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    return LabelStore(tmp_path / "labels.sqlite")


def test_missing_or_wrong_token_is_refused_and_sees_no_task(store: LabelStore) -> None:
    tasks = queue_tasks(store, 2)
    token = store.add_annotator("alice")
    with labeling_server(store.path) as url:
        for path in ("/api/next", "/api/progress"):
            assert requests.get(url + path, timeout=10).status_code == 401
            wrong = requests.get(url + path, headers={"Authorization": "Bearer not-a-token"}, timeout=10)
            assert wrong.status_code == 403
        posted = requests.post(url + "/api/labels", json={"task_id": tasks[0].task_id, "choice": "A"}, timeout=10)
        assert posted.status_code == 401
        page = requests.get(url + "/", timeout=10)
        assert page.status_code == 401 and "question 0" not in page.text and "answer" not in page.text
        page = requests.get(url + "/", cookies={"rlhf_label_token": "forged"}, timeout=10)
        assert page.status_code == 403 and "answer" not in page.text
        form = requests.post(url + "/labels", data={"task_id": tasks[0].task_id, "choice": "A"}, timeout=10)
        assert form.status_code == 401
        login = requests.post(url + "/login", data={"token": "forged"}, allow_redirects=False, timeout=10)
        assert login.status_code == 403 and "set-cookie" not in login.headers
        session = requests.Session()
        unconfirmed = session.post(url + "/login", data={"token": token}, timeout=10)
        assert unconfirmed.status_code == 200 and "Sign in as alice?" in unconfirmed.text.replace(
            '<span id="account">', "").replace("</span>", "")
        assert "set-cookie" not in unconfirmed.headers and not session.cookies, "a link alone signs nobody in"
        first_page = session.post(url + "/login", data={"token": token, "confirm": "yes"}, timeout=10)
        assert first_page.status_code == 200 and "question 0" not in first_page.text
        assert "Content warning" in first_page.text and "Worked examples" in first_page.text, "guidelines first"
        assert "question 0" in session.post(url + "/guidelines", data={"batch": store.active_batch()}, timeout=10).text
        assert "question 0" in session.get(url + "/", timeout=10).text, "acknowledged once per batch"
        assert "Back to labelling" in session.get(url + "/guidelines", timeout=10).text
        guidelines = requests.get(url + "/api/guidelines", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert guidelines.json()["guidelines"] == store.guidelines(store.active_batch())
        assert "content-security-policy" in page.headers
    assert store.labels(store.active_batch()) == []


def test_api_labels_and_clear_errors(store: LabelStore) -> None:
    tasks = queue_tasks(store, 2)
    headers = {"Authorization": f"Bearer {store.add_annotator('bob')}"}
    with labeling_server(store.path) as url:
        unread = requests.get(url + "/api/next", headers=headers, timeout=10)
        assert unread.status_code == 409 and "guidelines and content warning first" in unread.json()["error"]
        early = requests.post(url + "/api/labels", headers=headers, json={"task_id": tasks[0].task_id, "choice": "A"},
                              timeout=10)
        assert early.status_code == 409, "no label counts as given under guidelines nobody read"
        stale = requests.post(url + "/api/guidelines", headers=headers, json={"batch": "old"}, timeout=10)
        assert stale.status_code == 409 and "not the active batch" in stale.json()["error"]
        acknowledge_guidelines(url, headers)
        shown = requests.get(url + "/api/next", headers=headers, timeout=10).json()
        assert set(shown) == {"task_id", "prompt", "response_a", "response_b"}  # blinded: no order key
        first = requests.post(url + "/api/labels", headers=headers, json={"task_id": shown["task_id"], "choice": "A"},
                              timeout=10)
        assert first.status_code == 201 and first.json()["created"]
        retry = requests.post(url + "/api/labels", headers=headers, json={"task_id": shown["task_id"], "choice": "A"},
                              timeout=10)
        assert retry.status_code == 200 and not retry.json()["created"]
        conflict = requests.post(url + "/api/labels", headers=headers,
                                 json={"task_id": shown["task_id"], "choice": "B"}, timeout=10)
        assert conflict.status_code == 409 and "first label is kept" in conflict.json()["error"]
        unknown = requests.post(url + "/api/labels", headers=headers, json={"task_id": "zzz-9", "choice": "A"},
                                timeout=10)
        assert unknown.status_code == 404 and "unknown task 'zzz-9'" in unknown.json()["error"]
        bad = requests.post(url + "/api/labels", headers=headers, data=b"{oops", timeout=10)
        assert bad.status_code == 400
    labels = store.labels(store.active_batch())
    assert [(label.task_id, label.choice.value) for label in labels] == [(tasks[0].task_id, "A")]


def test_eight_concurrent_annotators_submit_1000_labels_without_loss_or_duplicates(store: LabelStore) -> None:
    queue_tasks(store, 125, overlap=8)
    annotators = {f"annotator{i}": store.add_annotator(f"annotator{i}") for i in range(8)}
    submitted: dict[str, list[str]] = {name: [] for name in annotators}
    errors: list[str] = []

    def label_everything(name: str, token: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        acknowledge_guidelines(url, dict(session.headers))
        while True:
            response = session.get(url + "/api/next", timeout=30)
            if response.status_code == 204:
                return
            task_id = response.json()["task_id"]
            choice = ("A", "B", "tie")[len(submitted[name]) % 3]
            for _ in range(2):  # every label is sent twice, as a flaky network would: the retry must not duplicate
                result = session.post(url + "/api/labels", json={"task_id": task_id, "choice": choice}, timeout=30)
                if result.status_code not in (200, 201):
                    errors.append(f"{name} {task_id}: {result.status_code} {result.text}")
            submitted[name].append(task_id)

    with labeling_server(store.path) as url:
        threads = [threading.Thread(target=label_everything, args=item) for item in annotators.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert not errors
    assert sum(len(ids) for ids in submitted.values()) == 1000
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT task_id, annotator, choice FROM labels").fetchall()
    assert len(rows) == 1000 and len({(task, who) for task, who, _ in rows}) == 1000
    expected = {(task, name) for name, ids in submitted.items() for task in ids}
    assert {(task, who) for task, who, _ in rows} == expected
    progress = store.progress(store.active_batch())
    assert progress.complete and progress.labels == 1000


def test_hostile_bodies_and_cross_origin_posts_get_clear_refusals(store: LabelStore) -> None:
    """Issue 15 (9, 10): deep JSON, lone surrogates and huge bodies gave 500s or ate memory; a same-site page
    (the Dagster UI on another port) could post with the annotator's cookie."""
    tasks = queue_tasks(store, 2)
    token = store.add_annotator("alice")
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with labeling_server(store.path) as url:
        deep = requests.post(url + "/api/labels", data="[" * 100_000 + "]" * 100_000, headers=bearer, timeout=30)
        assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]
        surrogate = requests.post(url + "/api/labels", headers=bearer, timeout=10,
                                  data='{"task_id": "' + tasks[0].task_id + '", "choice": "A", "comment": "\\ud800"}')
        assert surrogate.status_code == 400 and "'comment' is not valid Unicode" in surrogate.json()["error"]
        listed = requests.post(url + "/api/labels", headers=bearer, timeout=10,
                               json={"task_id": tasks[0].task_id, "choice": "A", "comment": ["a", "list"]})
        assert listed.status_code == 400 and listed.json()["error"] == "field 'comment' must be a string, got list"
        huge = requests.post(url + "/api/labels", data=b"{" + b" " * 2_000_000 + b"}", headers=bearer, timeout=30)
        assert huge.status_code == 413 and "1,000,000-byte limit" in huge.json()["error"]
        acknowledge_guidelines(url, bearer)
        session = requests.Session()
        assert session.post(url + "/login", data={"token": token, "confirm": "yes"}, timeout=10).status_code == 200
        for headers in ({"Origin": "http://127.0.0.1:3000"}, {"Sec-Fetch-Site": "same-site"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            forged = session.post(url + "/labels", data={"task_id": tasks[0].task_id, "choice": "A"},
                                  headers=headers, allow_redirects=False, timeout=10)
            assert forged.status_code == 403 and "cross-origin request refused" in forged.text, headers
        own = session.post(url + "/labels", data={"task_id": tasks[0].task_id, "choice": "A"},
                           headers={"Origin": url, "Sec-Fetch-Site": "same-origin"}, allow_redirects=False,
                           timeout=10)
        assert own.status_code == 303
    assert [label.task_id for label in store.labels(store.active_batch())] == [tasks[0].task_id]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as an operator would bring."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_serves_https_with_a_secure_cookie(store: LabelStore, tmp_path: Path) -> None:
    """Issue 15 (10): `--tls-cert/--tls-key` serve HTTPS and the sign-in cookie is `Secure`."""
    queue_tasks(store, 1)
    token = store.add_annotator("erin")
    cert, key = _self_signed(tmp_path)
    with labeling_server(store.path, tls=(cert, key)) as url:
        assert url.startswith("https://")
        signed_in = requests.post(url + "/login", data={"token": token, "confirm": "yes"}, verify=str(cert),
                                  allow_redirects=False, timeout=10)
        assert signed_in.status_code == 303
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("__Host-rlhf_label_token=") and "Secure" in cookie and "HttpOnly" in cookie
        assert "Path=/" in cookie and "Domain" not in cookie
        # Cookie tossing: another service on this host (any port) sets the unprefixed name for the victim's
        # browser; under TLS only the __Host- cookie, which such a page cannot plant over plain HTTP, is read.
        tossed = requests.get(url + "/", cookies={"rlhf_label_token": token}, verify=str(cert), timeout=10)
        assert tossed.status_code == 401
    half = subprocess.run([sys.executable, "-m", "rlhf_assets.cli", "--db", str(store.path), "label",
                           "--tls-cert", str(cert)], capture_output=True, text=True, timeout=60)
    assert half.returncode == 2 and "--tls-cert and --tls-key go together" in half.stderr


def test_behind_a_load_balancer_that_ends_tls_the_cookie_is_still_secure(store: LabelStore) -> None:
    """The balancer speaks HTTPS to annotators and HTTP to the app, saying so in X-Forwarded-Proto: trusted from
    the addresses given, the app sets a `Secure` cookie; from anywhere else the header is ignored."""
    queue_tasks(store, 1)
    token = store.add_annotator("fay")
    sign_in = {"token": token, "confirm": "yes"}
    balancer = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    with labeling_server(store.path, options=["--forwarded-allow-ips", "127.0.0.1"]) as url:
        behind = requests.post(url + "/login", data=sign_in, headers=balancer, allow_redirects=False, timeout=10)
    with labeling_server(store.path) as url:
        direct = requests.post(url + "/login", data=sign_in, headers=balancer, allow_redirects=False, timeout=10)
    assert behind.status_code == direct.status_code == 303
    assert "Secure" in behind.headers["set-cookie"] and "Secure" not in direct.headers["set-cookie"]


def _server_pid(url: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    return next(c.pid for c in psutil.net_connections(kind="tcp") if c.laddr.port == port and c.status == "LISTEN")


def _raw(url: str, data: bytes, *, timeout: float = 10) -> bytes:
    """Send `data` on a fresh connection and return what comes back before the server closes it."""
    port = int(url.rsplit(":", 1)[1])
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(data)
            while chunk := connection.recv(65536):
                received += chunk
        except (BrokenPipeError, ConnectionResetError):  # refused and closed while we were still sending
            pass
    return received


def test_the_app_bounds_what_a_client_can_make_it_hold_without_signing_in(store: LabelStore) -> None:
    """Issue 28 (5): 1,000 x 1 MB form fields took /login from 210 MB to 1.25 GB; a multipart upload spooled
    400 MB to disk; a 100 MB header stalled the event loop; trickling clients were never cut off."""
    queue_tasks(store, 1)
    options = ["--header-timeout", "2", "--body-timeout", "2"]
    with labeling_server(store.path, options=options) as url:
        server = psutil.Process(_server_pid(url))
        before = server.memory_info().rss
        fields = "&".join(f"f{i}=" + "a" * 1_000_000 for i in range(20))
        declared = requests.post(url + "/login", data=fields, timeout=30,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert declared.status_code == 413 and "1,000,000-byte limit" in declared.text

        def chunks():
            for _ in range(200):  # 200 MB, no Content-Length
                yield b"f=" + b"a" * 1_000_000 + b"&"
        try:
            streamed = requests.post(url + "/login", data=chunks(), timeout=30,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert streamed.status_code == 413
        except requests.ConnectionError:
            pass  # the server answered 413 and closed while the client was still sending: refused either way
        multipart = requests.post(url + "/login", files={"token": ("t.txt", b"x" * 100_000)}, timeout=30)
        assert multipart.status_code == 415 and "multipart" in multipart.text
        grown = (server.memory_info().rss - before) / 2**20
        assert grown < 50, f"the server grew by {grown:.0f} MiB"

        big_header = _raw(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5_000_000 + b"\r\n\r\n")
        assert big_header == b"" or big_header.split(b" ")[1] in (b"400", b"431"), big_header[:200]
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
        counted = _raw(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert counted.startswith(b"HTTP/1.1 431")

        started = time.monotonic()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.settimeout(0.5)
            slow.sendall(b"GET /healthz HTTP/1.1\r\n")
            closed = False
            while not closed and time.monotonic() - started < 8:
                try:
                    slow.sendall(b"X: 1\r\n")  # one header line every half second, for ever
                    closed = slow.recv(1) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
        assert closed and time.monotonic() - started < 4.5, "a client trickling its headers is cut off"
        trickled = _raw(url, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken=")
        assert trickled.startswith(b"HTTP/1.1 408"), trickled[:200]
        assert requests.get(url + "/healthz", timeout=5).text == "ok", "still serving everyone else"


def test_a_label_needs_time_on_the_pair_through_the_api(store: LabelStore) -> None:
    """Issue 28 (7), over HTTP with the app's default pacing: 425 until the pair was shown long enough."""
    tasks = queue_tasks(store, 2)
    token = store.add_annotator("gil")
    headers = {"Authorization": f"Bearer {token}"}
    with labeling_server(store.path, options=["--min-seconds-per-pair", "1.5"]) as url:
        acknowledge_guidelines(url, headers)
        shown = requests.get(url + "/api/next", headers=headers, timeout=10).json()
        early = requests.post(url + "/api/labels", headers=headers, json={"task_id": shown["task_id"], "choice": "tie"},
                              timeout=10)
        assert early.status_code == 425 and "counts after 1.5 s on the pair" in early.json()["error"]
        skipped = requests.post(url + "/api/skip", headers=headers, json={"task_id": shown["task_id"]}, timeout=10)
        assert skipped.status_code == 425
        time.sleep(1.6)
        late = requests.post(url + "/api/labels", headers=headers, json={"task_id": shown["task_id"], "choice": "tie"},
                             timeout=10)
        assert late.status_code == 201
    assert {task.task_id for task in tasks} >= {label.task_id for label in store.labels(store.active_batch())}
