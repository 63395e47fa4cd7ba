import pytest
import yaml
from django.core.management import call_command


@pytest.mark.django_db
def test_openapi_schema_is_valid_and_generates_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"].startswith("3.")
    reserve = schema["paths"]["/api/drops/{drop_id}/reservations/"]["post"]
    assert set(reserve["responses"]) >= {"202", "400", "401", "404", "409", "422", "429"}
    assert any(p["name"] == "Idempotency-Key" for p in reserve["parameters"])
