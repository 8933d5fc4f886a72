"""Job webhooks: targets refused where they would reach the service's own network, one signed
event per finished job that the client's helper verifies, delivery that outlasts a receiver
being down, and every attempt visible in the job's status."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ai_photo_detector.batch.callback_targets import check_target
from ai_photo_detector.client import Client, SignatureInvalid, verify_signature
from ai_photo_detector.client import errors as client_errors
from ai_photo_detector.contract.schemas import JobEvent
from ai_photo_detector.contract.signatures import SIGNATURE_HEADER, signature_header
from ai_photo_detector.errors import InputError
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings, WebhookSettings
from live_service import free_port, live_service

KEY = "apd_webhook_tests_key_0123456789abcd"
OTHER = "apd_webhook_tests_other_key_01234567"
SECRET = "whsec_team_0123456789abcdef"
KEYS = [
    {"id": "team", "sha256": hash_key(KEY), "scopes": ["jobs"], "webhook_secret": SECRET},
    {"id": "nosecret", "sha256": hash_key(OTHER), "scopes": ["jobs"]},
]


def _names(table: dict[str, list[str]]) -> Any:
    return lambda host, port: table[host]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.7", "private"),
        ("172.16.5.5", "private"),
        ("100.64.0.9", "shared"),
        ("::1", "loopback"),
        ("fd00:ec2::254", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    settings = WebhookSettings()
    resolver = _names({"hooks.example.com": ["93.184.216.34", address]})
    with pytest.raises(InputError) as refused:
        check_target("https://hooks.example.com/apd", settings, resolver)
    assert refused.value.code == "callback_refused" and kind in refused.value.message


def test_target_rules() -> None:
    public = _names({"hooks.example.com": ["93.184.216.34"], "evil.test": ["93.184.216.35"]})
    target = check_target("https://hooks.example.com:8443/in?x=1", WebhookSettings(), public)
    assert target.pinned_url() == "https://93.184.216.34:8443/in?x=1"
    assert target.host_header == "hooks.example.com:8443"
    for url, why in [
        ("http://hooks.example.com/in", "https"),
        ("https://user:pw@hooks.example.com/in", "credentials"),
        ("ftp://hooks.example.com/in", "https"),
        ("https:///in", "no host"),
        ("https://hooks.example.com:99999/in", "not valid"),
    ]:
        with pytest.raises(InputError, match=why):
            check_target(url, WebhookSettings(), public)
    listed = WebhookSettings(allowed_hosts=["*.example.com"])
    check_target("https://hooks.example.com/in", listed, public)
    with pytest.raises(InputError, match="allowed_hosts"):
        check_target("https://evil.test/in", listed, public)
    loopback = _names({"localhost": ["127.0.0.1"]})
    opened = WebhookSettings(allowed_networks=["127.0.0.0/8"], schemes=["http"])
    assert check_target("http://localhost:9/x", opened, loopback).address == "127.0.0.1"
    with pytest.raises(InputError, match="does not resolve"):
        check_target("https://no-such-host.invalid/x", WebhookSettings())


def test_signatures_verify_and_refuse() -> None:
    body = b'{"id": "x"}'
    header = signature_header(SECRET, body, timestamp=1_800_000_000)
    assert verify_signature(SECRET, header, body, now=1_800_000_010) == 1_800_000_000
    for bad_secret, bad_body, at, why in [
        ("another-secret-0123456", body, 1_800_000_010, "does not match"),
        (SECRET, body + b" ", 1_800_000_010, "does not match"),
        (SECRET, body, 1_800_001_000, "old"),
    ]:
        with pytest.raises(SignatureInvalid, match=why):
            verify_signature(bad_secret, header, bad_body, now=at)
    with pytest.raises(SignatureInvalid):
        verify_signature(SECRET, "t=abc", body)
    with pytest.raises(SignatureInvalid):
        verify_signature(SECRET, None, body)


class Receiver:
    """An HTTP endpoint on loopback that keeps what it is sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _settings(tmp: Path, bundle_dir: Path, **webhooks: object) -> Settings:
    return Settings(
        model=str(bundle_dir),
        environment="production",
        auth={"keys": KEYS},  # type: ignore[arg-type]
        database_url=f"sqlite:///{tmp / 'apd.db'}",
        rate_limit={"enabled": False},  # type: ignore[arg-type]
        jobs={  # type: ignore[arg-type]
            "queue_url": f"sqlite:///{tmp / 'queue.db'}",
            "spool_dir": str(tmp / "spool"),
            "chunk_size": 4,
            "reap_interval_s": 0.2,
            "in_process": True,
        },
        webhooks={  # type: ignore[arg-type]
            "allowed_networks": ["127.0.0.1/32"],
            "schemes": ["http"],
            "backoff_s": 0.3,
            "poll_interval_s": 0.2,
            "timeout_s": 2.0,
            **webhooks,
        },
    )


def _archive(tiny_dataset: Path, count: int = 3) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in sorted(tiny_dataset.rglob("*.jpg"))[:count]:
            archive.writestr(photo.name, photo.read_bytes())
    return buffer.getvalue()


def _wait(condition: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(free_port())
    yield found
    found.stop()


def test_a_finished_job_delivers_one_signed_event(
    tmp_path: Path, bundle_dir: Path, tiny_dataset: Path, receiver: Receiver
) -> None:
    receiver.start()
    callback = f"http://127.0.0.1:{receiver.port}/apd-events"
    with live_service(_settings(tmp_path, bundle_dir)) as url, Client(url, KEY) as client:
        job = client.submit_job(_archive(tiny_dataset), callback_url=callback)
        assert job.callback is not None and job.callback.status == "waiting"
        client.wait_for_job(job.id, poll_s=0.1, timeout_s=120)
        _wait(lambda: client.job(job.id).callback.status == "delivered")  # type: ignore[union-attr]
        time.sleep(1.0)  # a second event would have come by now
        status = client.job(job.id)
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body)
    with pytest.raises(SignatureInvalid):
        verify_signature("whsec_someone_else_0123", headers[SIGNATURE_HEADER.lower()], body)
    event = JobEvent.model_validate_json(body)
    assert event.type == "job.done" and event.job.id == job.id and event.job.done == 3
    assert headers["x-apd-event"] == "job.done" and headers["x-apd-delivery"] == event.id
    assert status.callback is not None and status.callback.url == callback
    assert [(a.number, a.status_code, a.error) for a in status.callback.attempts] == [
        (1, 204, None)
    ]


def test_delivery_outlasts_a_receiver_that_is_down(
    tmp_path: Path, bundle_dir: Path, tiny_dataset: Path, receiver: Receiver
) -> None:
    callback = f"http://127.0.0.1:{receiver.port}/apd-events"  # nothing listens yet
    with live_service(_settings(tmp_path, bundle_dir)) as url, Client(url, KEY) as client:
        job = client.submit_job(_archive(tiny_dataset, 2), callback_url=callback)
        client.wait_for_job(job.id, poll_s=0.1, timeout_s=120)
        _wait(lambda: len(client.job(job.id).callback.attempts) >= 2)  # type: ignore[union-attr]
        receiver.start()
        _wait(lambda: client.job(job.id).callback.status == "delivered")  # type: ignore[union-attr]
        status = client.job(job.id)
    attempts = status.callback.attempts  # type: ignore[union-attr]
    assert all(a.status_code is None and a.error for a in attempts[:-1])
    assert attempts[-1].status_code == 204 and attempts[-1].error is None
    assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
    assert len(receiver.received) == 1
    verify_signature(
        SECRET, receiver.received[0][0][SIGNATURE_HEADER.lower()], receiver.received[0][1]
    )


def test_a_receiver_that_never_answers_is_given_up_on(
    tmp_path: Path, bundle_dir: Path, tiny_dataset: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    settings = _settings(tmp_path, bundle_dir, give_up_after_s=1.5)
    with live_service(settings) as url, Client(url, KEY) as client:
        job = client.submit_job(_archive(tiny_dataset, 1), callback_url=dead)
        client.wait_for_job(job.id, poll_s=0.1, timeout_s=120)
        _wait(lambda: client.job(job.id).callback.status == "failed")  # type: ignore[union-attr]
        attempts = client.job(job.id).callback.attempts  # type: ignore[union-attr]
    assert attempts and all(a.error for a in attempts)


def test_callbacks_to_internal_addresses_are_refused_at_submission(
    tmp_path: Path, bundle_dir: Path, tiny_dataset: Path
) -> None:
    closed = _settings(tmp_path, bundle_dir, allowed_networks=[], schemes=["http", "https"])
    archive = _archive(tiny_dataset, 1)
    with live_service(closed) as url, Client(url, KEY) as client:
        before = len(client.jobs().jobs)
        for target in (
            "http://127.0.0.1:8080/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.5/hook",
            "http://localhost/hook",
        ):
            with pytest.raises(client_errors.InvalidInput) as refused:
                client.submit_job(archive, callback_url=target)
            assert refused.value.code == "callback_refused" and refused.value.status == 422
        with (
            pytest.raises(client_errors.InvalidInput, match="no webhook secret"),
            Client(url, OTHER) as other,
        ):
            other.submit_job(archive, callback_url="http://93.184.216.34/hook")
        assert len(client.jobs().jobs) == before  # nothing was queued
