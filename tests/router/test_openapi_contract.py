"""The published OpenAPI schema says what the live router enforces (schemathesis against a real router)."""

import pytest
import subprocess
import sys
from pathlib import Path

import requests

# Schema-valid requests may still be refused for reasons no schema can express: no model meets the stated
# requirements (422 no_model_meets_requirements) or admission control (429/503). Every other refusal of a
# schema-valid request, and every acceptance of a schema-invalid one, is a failure.
# A schema-violating request may also be refused 413: too many rows make the body larger than a full batch
# can be, and the router refuses it from its size before parsing (schemathesis's default list lacks 413).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["200", "422", "429", "503"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
"""


def test_schema_publishes_the_limits_it_enforces(start_router, manifest):
    """Catches the old schema (inputs of any length and rows of any width) and /metrics published to clients
    (it is the operator's page: its own listener or a token, text/plain)."""
    router = start_router(max_batch_size=8, metrics_token="operator-token-0123456789")
    spec = requests.get(f"{router.url}/openapi.json", timeout=10).json()
    body = spec["paths"]["/v1/infer"]["post"]["requestBody"]["content"]
    inputs = body["application/json"]["schema"]["properties"]["inputs"]
    dim = manifest.models[0].input.shape[1]
    assert (inputs["minItems"], inputs["maxItems"]) == (1, 8)
    assert (inputs["items"]["minItems"], inputs["items"]["maxItems"]) == (dim, dim)
    assert "application/octet-stream" in body
    assert "/metrics" not in spec["paths"]
    scrape = requests.get(f"{router.url}/metrics", headers={"authorization": "Bearer operator-token-0123456789"},
                          timeout=10)
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    for wrong in ({}, {"authorization": "Bearer operator-token-012345678"}, {"authorization": "operator-token-0123456789"}):
        assert requests.get(f"{router.url}/metrics", headers=wrong, timeout=10).status_code == 404


@pytest.mark.timeout(900)  # end to end through real servers: minutes, not a hang
def test_schemathesis_finds_no_contract_violation(start_router, tmp_path):
    router = start_router(max_batch_size=8)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    st = Path(sys.executable).with_name("schemathesis")
    r = subprocess.run([str(st), "--config-file", str(config), "run", f"{router.url}/openapi.json", "--checks", "all",
                        "-H", "x-api-key: k-benign", "--max-examples", "25", "--workers", "1", "--seed", "1",
                        "--phases", "examples,coverage,fuzzing", "--no-color"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "3 selected" in r.stdout  # every public operation was tested (/metrics is the operator's, not in the schema)
