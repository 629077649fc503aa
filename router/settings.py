"""Router settings: one JSON file per deployment, validated strictly (unknown keys and bad values raise)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from psml.errors import ConfigError


class RouterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zoo: str = "model_repository/default"  # folder holding the zoo's manifest (zoo.json)
    triton_grpc_url: str = "127.0.0.1:8001"
    backend: Literal["triton", "null"] = "triton"  # null: answer uniform probabilities without Triton (overhead runs)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)  # 0 = pick a free port
    api_keys: dict[str, str] = Field(min_length=1)  # API key -> client name (recorded in the audit log)
    policy: str = "pareto_uniform"
    defenses: list[dict] = []  # e.g. [{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.02}]
    on_no_model: str = "reject"  # reject: 422 with the reason; closest: serve the model that falls least short
    seed: int = 0  # seeds the policy's and every defense's random stream
    max_batch_size: int = Field(256, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    request_timeout_ms: float = Field(5000.0, gt=0)  # per forwarded Triton call
    audit_log: str = "runs/audit.jsonl"
    # Profiling only: honour the x-psml-model header that names the model to serve (psml zoo build/validate
    # measure each model end to end through the router). Off in every deployment: it would let a client skip
    # selection and every defense.
    allow_pinned_model: bool = False
    audit_fsync: bool = False  # True: fsync every record (survives power loss, costs ~ms per request)


def load_settings(path: Path, **overrides) -> RouterSettings:
    try:
        raw = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"router settings {path} cannot be read ({e.strerror})") from e
    try:
        base = RouterSettings.model_validate_json(raw)
        return base.model_copy(update={k: v for k, v in overrides.items() if v is not None}) if overrides else base
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"router settings {path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from e
