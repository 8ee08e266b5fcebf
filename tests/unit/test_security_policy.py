"""Triton's restriction flags, the auth config file, grants narrowed by model globs, and the
Guard's decisions (which status, which reason, what is counted and audited)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from server.security.audit import REFUSAL_LINES_PER_WINDOW, WINDOW_SECS, AuditLog
from server.security.auth_config import AuthConfigError, load_auth_config, parse_auth_config
from server.security.groups import GRPC_ENDPOINTS, HTTP_ENDPOINTS, ApiGroup, Endpoint
from server.security.guard import CallInfo, Guard, Protocol, Refusal
from server.security.restricted import Restriction, RestrictionError, grpc_restrictions, http_restrictions


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


# ---- Triton's flags ------------------------------------------------------------------------------


def test_grpc_restriction_header_is_prefixed_as_in_triton() -> None:
    rules = grpc_restrictions(["health,metadata:admin-key=s3cr:et=x"])
    assert rules == {
        ApiGroup.HEALTH: Restriction("triton-grpc-protocol-admin-key", "s3cr:et=x"),
        ApiGroup.METADATA: Restriction("triton-grpc-protocol-admin-key", "s3cr:et=x"),
    }


def test_http_restriction_header_is_the_key() -> None:
    assert http_restrictions(["model-repository:Admin-Key=v", "inference:infer-key=w"]) == {
        ApiGroup.MODEL_REPOSITORY: Restriction("admin-key", "v"),
        ApiGroup.INFERENCE: Restriction("infer-key", "w"),
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["health"], "--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'. Got health"),
        (["health:key"], "--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'. Got health:key"),
        ([":key=value"], "--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'. Got :key=value"),
        (["health:key="], "--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'. Got health:key="),
        (["healthy:key=value"], "unknown restricted protocol 'healthy'"),
        (["health:a=1", "health,inference:b=2"], "restricted protocol 'health' can not be specified in multiple config groups"),
    ],
)
def test_malformed_restrictions_are_refused_with_tritons_message(options: list[str], message: str) -> None:
    with pytest.raises(RestrictionError) as caught:
        grpc_restrictions(options)
    assert str(caught.value) == message


def test_http_restriction_messages_say_api() -> None:
    with pytest.raises(RestrictionError, match=r"^unknown restricted api 'nope'$"):
        http_restrictions(["nope:k=v"])


# ---- the auth config -----------------------------------------------------------------------------

CONFIG = {
    "principals": [
        {
            "name": "fraud",
            "tokens": [digest("fraud-token")],
            "certificates": ["fraud.svc"],
            "grants": {"inference": ["fraud-*", "score"], "metadata": "*", "statistics": ["fraud-*"]},
        },
        {"name": "admin", "tokens": [digest("admin-token").removeprefix("sha256:").upper()], "grants": {"*": "*", "logging": ["x"]}},
        {"name": "prober", "certificates": ["probe.svc"], "grants": ["health"]},
    ],
    "public": ["health"],
}


def test_yaml_and_json_files_load_alike(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "auth.json").write_text(json.dumps(CONFIG))
    (tmp_path / "auth.yaml").write_text(yaml.safe_dump(CONFIG))
    for name in ("auth.json", "auth.yaml"):
        policy = load_auth_config(tmp_path / name)
        assert [p.name for p in policy.principals] == ["fraud", "admin", "prober"]
        assert policy.public == frozenset({ApiGroup.HEALTH})
        admin = policy.credentials.for_token("admin-token")
        assert admin is not None and admin.name == "admin"
        assert set(admin.grants) == set(ApiGroup)
        assert admin.grants[ApiGroup.LOGGING] == ("x",)  # a group named on its own narrows "*"
        assert policy.credentials.for_identities(["nobody", "probe.svc"]).name == "prober"  # type: ignore[union-attr]
        assert policy.credentials.for_token("fraud-token ") is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"principal": []}, r"unknown top-level key\(s\) \['principal'\]"),
        ({"principals": [{"name": "a", "tokens": ["plain-token"]}]}, r"principals\[0\] \('a'\).tokens\[0\]: expected 'sha256:<64 hex"),
        ({"principals": [{"name": "a", "grants": {}}]}, r"give 'tokens' or 'certificates'"),
        ({"principals": [{"name": "a", "tokens": [digest("t")], "grants": {"inferense": "*"}}]}, r"unknown API group 'inferense'"),
        ({"principals": [{"name": "a", "tokens": [digest("t")], "grant": {}}]}, r"unknown key\(s\) \['grant'\]"),
        ({"principals": [{"name": "a", "tokens": [digest("t")]}, {"name": "b", "tokens": [digest("t")]}]}, "also a token of 'a'"),
        ({"principals": [{"name": "a", "certificates": ["x"]}, {"name": "b", "certificates": ["x"]}]}, "'x' also belongs to 'a'"),
        ({"principals": [{"name": "a", "certificates": ["x"]}, {"name": "a", "certificates": ["y"]}]}, "name 'a' is used twice"),
        ({"principals": [{"name": "a", "certificates": ["x"], "grants": {"health": []}}]}, "an empty list grants nothing"),
        ({"public": ["everything"]}, "unknown API group 'everything'"),
        ([1, 2], "the top level must be a mapping"),
    ],
)
def test_config_mistakes_name_the_entry(document: object, message: str) -> None:
    with pytest.raises(AuthConfigError, match=message):
        parse_auth_config(document)


def test_unparsable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text("{not json")
    with pytest.raises(AuthConfigError, match=f"auth config '{path}': not valid JSON"):
        load_auth_config(path)


# ---- grants and decisions ------------------------------------------------------------------------


def call(endpoint: Endpoint, model: str | None = "", headers: dict[str, str] | None = None, identities: tuple[str, ...] = ()) -> CallInfo:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    return CallInfo(Protocol.HTTP, endpoint, model, lowered.get, lambda: identities, "127.0.0.1")


INFER = HTTP_ENDPOINTS["POST /v2/models/{model}/infer"]
ALL_STATS = HTTP_ENDPOINTS["GET /v2/models/stats"]
MODEL_STATS = GRPC_ENDPOINTS["/inference.GRPCInferenceService/ModelStatistics"]
LIVE = HTTP_ENDPOINTS["GET /v2/health/live"]
LOAD = HTTP_ENDPOINTS["POST /v2/repository/models/{model}/load"]


def guard(**kwargs: object) -> Guard:
    return Guard({}, False, AuditLog(), parse_auth_config(CONFIG), **kwargs)  # type: ignore[arg-type]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("endpoint", "model", "token", "allowed"),
    [
        (INFER, "fraud-v2", "fraud-token", True),
        (INFER, "score", "fraud-token", True),
        (INFER, "scorer", "fraud-token", False),
        (INFER, "Fraud-v2", "fraud-token", False),  # globs are case-sensitive, as model names are
        (INFER, None, "fraud-token", True),  # an unreadable request is refused later, for that
        (ALL_STATS, "", "fraud-token", False),  # statistics of every model need every model
        (MODEL_STATS, "", "fraud-token", False),
        (MODEL_STATS, "fraud-x", "fraud-token", True),
        (LOAD, "fraud-x", "fraud-token", False),
        (LOAD, "anything", "admin-token", True),
        (ALL_STATS, "", "admin-token", True),
    ],
)
def test_grants_narrowed_by_model(endpoint: Endpoint, model: str | None, token: str, allowed: bool) -> None:
    decision = guard().check(call(endpoint, model, bearer(token)))
    assert (decision.denial is None) == allowed
    if not allowed:
        assert decision.denial is not None and decision.denial.kind is Refusal.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("headers", "identities", "reason"),
    [
        ({}, (), "missing_credentials"),
        (bearer("wrong"), (), "invalid_token"),
        ({"Authorization": "Basic YTpi"}, (), "invalid_credentials"),
        ({"Authorization": "Bearer "}, (), "invalid_credentials"),
        ({}, ("unknown.svc",), "unknown_certificate"),
        (bearer("wrong"), ("fraud.svc",), "invalid_token"),  # a bad token is not excused by a good certificate
    ],
)
def test_missing_or_bad_credentials_are_unauthenticated(headers: dict[str, str], identities: tuple[str, ...], reason: str) -> None:
    g = guard()
    decision = g.check(call(INFER, "fraud-1", headers, identities))
    assert decision.denial is not None
    assert (decision.denial.kind, decision.denial.reason) == (Refusal.UNAUTHENTICATED, reason)
    assert g.audit.auth_failures == {("http", "inference", reason): 1}


def test_certificate_identity_is_a_principal() -> None:
    decision = guard().check(call(INFER, "fraud-1", identities=("CN-less", "fraud.svc")))
    assert decision.denial is None and decision.principal == "fraud"


def test_public_group_needs_no_credentials_and_everything_else_is_denied() -> None:
    g = guard()
    assert g.check(call(LIVE)).denial is None
    for endpoint in HTTP_ENDPOINTS.values():
        if endpoint.group is not ApiGroup.HEALTH:
            assert g.check(call(endpoint, "m")).denial is not None, endpoint.name


def test_no_auth_config_allows_everything() -> None:
    g = Guard({}, False, AuditLog())
    assert all(g.check(call(e, "m")).denial is None for e in HTTP_ENDPOINTS.values())


def test_restriction_needs_the_exact_header_before_anything_else() -> None:
    g = Guard({Protocol.HTTP: {ApiGroup.INFERENCE: Restriction("infer-key", "v1")}}, False, AuditLog())
    assert g.check(call(INFER, "m", {"infer-key": "v1"})).denial is None
    for headers in ({}, {"infer-key": "v2"}, {"infer-key": "v1 "}):
        denial = g.check(call(INFER, "m", headers)).denial
        assert denial is not None and denial.kind is Refusal.UNAUTHENTICATED
        assert denial.message == "This API is restricted, expecting header 'infer-key'"
    assert g.check(call(LIVE)).denial is None  # groups without a restriction stay open, as in Triton


def test_disabled_repository_api_is_denied_even_to_admins() -> None:
    g = Guard({}, True, AuditLog(), parse_auth_config(CONFIG))
    denial = g.check(call(LOAD, "m", bearer("admin-token"))).denial
    assert denial is not None and denial.kind is Refusal.PERMISSION_DENIED and denial.reason == "repository_api_disabled"


def test_refusals_are_audited_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    g = guard()
    with caplog.at_level(logging.INFO, logger="ortserve.audit"):
        g.check(call(INFER, "other", bearer("fraud-token")))
        g.check(call(INFER, "other", bearer("not-a-valid-token")))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    entries = [json.loads(line.removeprefix("audit ")) for line in lines]
    assert entries[0] == {
        "principal": "fraud",
        "action": "POST /v2/models/{model}/infer",
        "model": "other",
        "group": "inference",
        "outcome": "refused",
        "reason": "not_granted",
        "peer": "127.0.0.1",
        "protocol": "http",
    }
    assert entries[1]["principal"] == "anonymous" and entries[1]["reason"] == "invalid_token"
    assert not any("fraud-token" in line or "not-a-valid-token" in line for line in lines)


def test_refusal_lines_are_bounded_but_all_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    audit = AuditLog(clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="ortserve.audit"):
        for _ in range(REFUSAL_LINES_PER_WINDOW + 50):
            audit.refusal("anonymous", "x", "", "inference", "missing_credentials", "peer", "grpc")
        assert len(caplog.records) == REFUSAL_LINES_PER_WINDOW
        now[0] = WINDOW_SECS
        audit.refusal("anonymous", "x", "", "inference", "missing_credentials", "peer", "grpc")
    assert "50 refused call(s) not logged" in caplog.records[-2].getMessage()
    assert audit.auth_failures[("grpc", "inference", "missing_credentials")] == REFUSAL_LINES_PER_WINDOW + 51
