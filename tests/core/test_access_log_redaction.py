"""Credentials in websocket and request URLs never reach the server's logs."""

import logging
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from core.log_redaction import RedactCredentials, redact_credentials
from tests.processes import ROOT, child_env, free_port

SECRET = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/ws/streams/x/?token=abc", "/ws/streams/x/?token=[redacted]"),
        ("/ws/streams/x/?a=1&ticket=abc&b=2", "/ws/streams/x/?a=1&ticket=[redacted]&b=2"),
        ("/x/?%74oken=abc", "/x/?%74oken=[redacted]"),  # decoded, it is "token"
        ("GET /x/?token=abc HTTP/1.1", "GET /x/?token=[redacted] HTTP/1.1"),
        ("/x/?tokens=abc&mytoken=1", "/x/?tokens=abc&mytoken=1"),
        ("/x/", "/x/"),
    ],
)
def test_token_and_ticket_values_are_redacted(text, expected):
    assert redact_credentials(text) == expected


def test_the_filter_rewrites_a_records_arguments_before_formatting():
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", f"/ws/streams/x/?token={SECRET}"),
        None,
    )

    assert RedactCredentials().filter(record) is True
    assert record.getMessage() == (
        '127.0.0.1:5000 - "WebSocket /ws/streams/x/?token=[redacted]" [accepted]'
    )


@pytest.mark.server
def test_the_real_servers_logs_hold_no_token(django_db_setup, django_db_blocker):
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "uvicorn.log"
    with django_db_blocker.unblock(), log.open("wb") as out:
        # As production logs: INFO, access log on (the tests' servers run at WARNING).
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "info"],
            cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?token={SECRET}", timeout=5)
            url = f"ws://127.0.0.1:{port}/ws/healthz/?token={SECRET}&ticket={SECRET}"
            with connect(url, open_timeout=5) as ws:
                ws.recv(timeout=5)
        finally:
            server.terminate()
            server.wait(10)
    printed = log.read_text()
    log.unlink()

    assert '"GET /healthz?token=[redacted] HTTP/1.1" 200' in printed
    assert '"WebSocket /ws/healthz/?token=[redacted]&ticket=[redacted]" [accepted]' in printed
    assert SECRET not in printed
