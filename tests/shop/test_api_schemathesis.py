"""The API against its own OpenAPI schema: Schemathesis drives the real server with
generated requests and every default check (no 5xx, documented statuses and bodies,
schema-valid input accepted, invalid input refused). Exceptions: schemathesis.toml."""

import re
import subprocess
import sys
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from livestream import services as live
from shop.models import Variant
from tests.processes import ROOT, asgi_server


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_the_api_conforms_to_its_schema():
    call_command("seed_demo", verbosity=0)
    staff = get_user_model().objects.get(username="ops")
    stream = live.stream_create(host=staff, title="Schema check")
    live.stream_start(stream_id=stream.pk, actor=staff)
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=Variant.objects.get(sku="WAFFLE-MINI").pk,
        quantity=50,
        price=Decimal("9.99"),
        per_viewer_limit=5,
        actor=staff,
    )
    live.drop_pin(drop_id=drop.pk, actor=staff)
    token = Token.objects.create(user=staff).key

    with asgi_server(PAYMENT_WEBHOOK_SECRET="schema-check") as server:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{server.base_url}/api/schema/",
                "--header",
                f"Authorization: Token {token}",
                # Logging out would revoke the token the rest of the run uses.
                "--exclude-operation-id",
                "auth_logout",
                "--max-examples",
                "25",
                "--seed",
                "20261124",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )

    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Failures:" not in result.stdout
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated and int(generated.group(1)) > 500, result.stdout[-3000:]
