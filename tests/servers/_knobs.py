"""Knobs of the loopback protocol server: its behaviour, set at start and changed at runtime."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

FAULT_KINDS = (
    "429",
    "503",
    "500",
    "424",
    "drop",
    "prose",
    "dict",
    "truncated",
    "empty",
    "garbage",
    "slow",
    "surrogate",
    "raw_surrogate",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _fault_weights(faults: Any) -> dict[str, float]:
    if isinstance(faults, (str, int)):  # "prose,dict" from the command line
        faults = [part.strip() for part in str(faults).split(",") if part.strip()]
    if isinstance(faults, dict):
        return {str(kind): float(weight) for kind, weight in faults.items()}
    return {str(kind): 1.0 for kind in faults}


@dataclass(frozen=True)
class Knobs:
    """Server behaviour, set at start and changeable at runtime (partial updates)."""

    latency: float = 0.0  # seconds every generation request takes
    jitter: float = 0.0  # plus uniform(0, jitter) seconds
    max_concurrent_requests: int = 128  # in flight across generation routes; more get 429
    max_input_tokens: int = 1024  # tokens = whitespace-separated words
    max_total_tokens: int = 2048  # input + max_new_tokens
    model_id: str = "instag-fake/tgi-tagger"
    tag_variant: int = 0  # another fake model's tags (see _tgi_model.tag_query); 0: the default model
    seed: int = 0  # seeds the fault draws (the tags themselves never depend on it)
    fault_rate: float = 0.0  # probability that a request gets a fault drawn from `faults`
    faults: Any = FAULT_KINDS  # kinds (equal weights), "a,b" text, or {kind: weight}; stored as dict
    retry_after: float | None = 1  # Retry-After seconds on injected 429/503; None: no header
    fail_first_attempts: int = 0  # the first K requests of every query fail with...
    fail_first_fault: str = "503"  # ...this fault kind, whatever fault_rate says
    strict_grammar: bool = True  # reject JSON grammars without top-level "properties", as TGI does
    healthy: bool = True  # False: GET /health answers 503
    personality: str = "tgi"  # "tgi" or "openai" (vLLM/OpenAI chat completions); set it at start
    models: Any = None  # "openai": the model ids listed and served (default: [model_id])
    owned_by: str = "vllm"  # "openai": owned_by of every listed model
    reject_json_schema: bool = False  # "openai": 400 on response_format json_schema
    api_key: str | None = None  # require Authorization: Bearer <api_key>
    refuse_status: int = 401  # status of a refused request
    echo_key: bool = False  # put the received key into the refusal's message

    def __post_init__(self) -> None:
        if self.personality not in ("tgi", "openai"):
            raise ValueError(f"personality must be 'tgi' or 'openai', got {self.personality!r}")
        if self.refuse_status not in (401, 403):
            raise ValueError("refuse_status must be 401 or 403")
        object.__setattr__(self, "models", list(self.models) if self.models else [self.model_id])
        weights = _fault_weights(self.faults)
        unknown = sorted((set(weights) | {self.fail_first_fault}) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; choose from {list(FAULT_KINDS)}")
        object.__setattr__(self, "faults", weights)
        for name, kind in (
            ("latency", float),
            ("jitter", float),
            ("fault_rate", float),
            ("seed", int),
            ("max_concurrent_requests", int),
            ("max_input_tokens", int),
            ("max_total_tokens", int),
            ("fail_first_attempts", int),
            ("tag_variant", int),
        ):
            object.__setattr__(self, name, kind(getattr(self, name)))
        if min(self.latency, self.jitter, self.fail_first_attempts, self.seed, self.retry_after or 0) < 0:
            raise ValueError("latency, jitter, retry_after, seed and fail_first_attempts must be >= 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {self.fault_rate}")
        if self.fault_rate and sum(weights.values()) <= 0:
            raise ValueError("fault_rate > 0 needs at least one fault kind with a positive weight")
        if not 0 < self.max_input_tokens < self.max_total_tokens or self.max_concurrent_requests < 1:
            raise ValueError("need 0 < max_input_tokens < max_total_tokens and max_concurrent_requests >= 1")

    def updated(self, changes: dict[str, Any]) -> Knobs:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown knob(s) {sorted(unknown)}")
        return replace(self, **changes)
