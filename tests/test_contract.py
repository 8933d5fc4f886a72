"""The published HTTP contract: docs/openapi.json matches the app, and the compatibility checker
catches what breaks a /v1 client while letting additions through."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ai_photo_detector.cli import app
from ai_photo_detector.cli.contract import live_document, render
from ai_photo_detector.contract import API_VERSION
from ai_photo_detector.contract.compatibility import breaking_changes, check, major_version

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
runner = CliRunner()


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return document


@pytest.fixture()
def new(committed: dict[str, Any]) -> dict[str, Any]:
    """A copy of the committed document for a test to change."""
    return copy.deepcopy(committed)


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def test_committed_document_matches_the_app(committed: dict[str, Any]) -> None:
    live = live_document()
    breaks = check(committed, live)
    listed = "".join(f"\n  - {line}" for line in breaks)
    assert live == committed, "docs/openapi.json is stale: run `make openapi`" + (
        f"; it breaks /v1 clients without a major version move:{listed}" if breaks else ""
    )
    assert COMMITTED.read_text(encoding="utf-8") == render(live), "run `make openapi`"
    assert live["info"]["version"] == API_VERSION
    assert major_version(live) == int(API_VERSION.split(".")[0])


def test_document_is_made_whatever_the_docs_setting(
    committed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APD_SERVER__DOCS", "off")  # the app then serves no /openapi.json route
    assert live_document()["paths"].keys() == committed["paths"].keys()


def test_an_unchanged_document_breaks_nothing(committed: dict[str, Any]) -> None:
    assert breaking_changes(committed, copy.deepcopy(committed)) == []


def test_removed_route_and_method(committed: dict[str, Any], new: dict[str, Any]) -> None:
    del new["paths"]["/v1/models/{name}"]
    del new["paths"]["/v1/jobs/{job_id}"]["delete"]
    assert breaking_changes(committed, new) == [
        "DELETE /v1/jobs/{job_id}: method removed",
        "/v1/models/{name}: route removed",
    ]


def test_only_v1_routes_are_guarded(committed: dict[str, Any], new: dict[str, Any]) -> None:
    del new["paths"]["/v2/health/live"]
    del new["paths"]["/metrics"]
    assert breaking_changes(committed, new) == []


def test_removed_response_field(committed: dict[str, Any], new: dict[str, Any]) -> None:
    predict = schema(new, "PredictResponse")
    del predict["properties"]["band"]
    predict["required"].remove("band")
    assert "POST /v1/predict: response 200 application/json: field `band` removed" in (
        breaking_changes(committed, new)
    )


def test_removed_field_of_a_nested_shared_schema(
    committed: dict[str, Any], new: dict[str, Any]
) -> None:
    model_ref = schema(new, "ModelRef")
    del model_ref["properties"]["version"]
    model_ref["required"].remove("version")
    breaks = breaking_changes(committed, new)
    assert "POST /v1/predict: response 200 application/json: field `model.version` removed" in (
        breaks
    )
    assert (
        "POST /v1/predict/batch: response 200 application/json: field `model.version` removed"
        in breaks
    )


def test_removed_field_through_an_array_and_a_nullable_union(
    committed: dict[str, Any], new: dict[str, Any]
) -> None:
    error = schema(new, "ErrorBody")
    del error["properties"]["code"]
    assert (
        "POST /v1/predict/batch: response 200 application/json: "
        "field `results[].error.code` removed"
    ) in breaking_changes(committed, new)


def test_response_field_no_longer_always_present(
    committed: dict[str, Any], new: dict[str, Any]
) -> None:
    schema(new, "PredictResponse")["required"].remove("probability")
    assert breaking_changes(committed, new) == [
        "POST /v1/predict: response 200 application/json: field `probability` no longer "
        "always present"
    ]


@pytest.mark.parametrize(
    ("field", "changed", "was", "now"),
    [
        ("probability", {"type": "string"}, "number", "string"),
        ("label", {"anyOf": [{"type": "string"}, {"type": "null"}]}, "string", "string | null"),
        ("model", {"type": "string"}, "object", "string"),
        ("reasons", {"type": "string"}, "array", "string"),
    ],
)
def test_response_field_type_changed(
    committed: dict[str, Any],
    new: dict[str, Any],
    field: str,
    changed: dict[str, Any],
    was: str,
    now: str,
) -> None:
    schema(new, "PredictResponse")["properties"][field] = changed
    assert breaking_changes(committed, new) == [
        f"POST /v1/predict: response 200 application/json: field `{field}` type changed "
        f"from {was} to {now}"
    ]


def test_type_inside_a_nullable_union_changed(
    committed: dict[str, Any], new: dict[str, Any]
) -> None:
    schema(new, "JobStatus")["properties"]["rate_per_s"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}]
    }
    breaks = breaking_changes(committed, new)
    assert (
        "GET /v1/jobs/{job_id}: response 200 application/json: field `rate_per_s` type changed "
        "from number | null to string | null"
    ) in breaks


def test_narrowing_a_response_type_is_not_a_break(
    committed: dict[str, Any], new: dict[str, Any]
) -> None:
    predict = schema(new, "PredictResponse")["properties"]
    predict["probability"] = {"type": "integer"}  # every integer is a number
    schema(new, "JobStatus")["properties"]["started_at"] = {"type": "string"}  # never null now
    assert breaking_changes(committed, new) == []


def test_new_required_request_field(committed: dict[str, Any], new: dict[str, Any]) -> None:
    feedback = schema(new, "FeedbackIn")
    feedback["properties"]["reviewer"] = {"type": "string"}
    feedback["required"].append("reviewer")
    assert breaking_changes(committed, new) == [
        "POST /v1/feedback: request application/json: new required field `reviewer`"
    ]


def test_request_field_became_required(committed: dict[str, Any], new: dict[str, Any]) -> None:
    schema(new, "FeedbackIn")["required"].append("source")
    assert breaking_changes(committed, new) == [
        "POST /v1/feedback: request application/json: field `source` became required"
    ]


def test_request_field_type_narrowed(committed: dict[str, Any], new: dict[str, Any]) -> None:
    schema(new, "FeedbackIn")["properties"]["label"] = {"type": "integer"}
    assert breaking_changes(committed, new) == [
        "POST /v1/feedback: request application/json: field `label` type changed from string "
        "to integer"
    ]


def test_query_parameter_became_required(committed: dict[str, Any], new: dict[str, Any]) -> None:
    (limit,) = new["paths"]["/v1/jobs"]["get"]["parameters"]
    limit["required"] = True
    assert breaking_changes(committed, new) == [
        "GET /v1/jobs: query parameter `limit` became required"
    ]


def test_new_required_parameter(committed: dict[str, Any], new: dict[str, Any]) -> None:
    new["paths"]["/v1/jobs"]["get"]["parameters"].append(
        {"in": "header", "name": "X-Tenant", "required": True, "schema": {"type": "string"}}
    )
    new["paths"]["/v1/models"]["get"]["parameters"] = [
        {"in": "query", "name": "page", "required": True, "schema": {"type": "integer"}}
    ]
    assert breaking_changes(committed, new) == [
        "GET /v1/jobs: new required header parameter `X-Tenant`",
        "GET /v1/models: new required query parameter `page`",
    ]


def test_removed_request_content_type(committed: dict[str, Any], new: dict[str, Any]) -> None:
    del new["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["image/webp"]
    assert breaking_changes(committed, new) == [
        "POST /v1/predict: request content type image/webp removed"
    ]


def test_new_required_multipart_field(committed: dict[str, Any], new: dict[str, Any]) -> None:
    form = new["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    form["schema"]["properties"]["consent"] = {"type": "boolean"}
    form["schema"]["required"].append("consent")
    assert breaking_changes(committed, new) == [
        "POST /v1/predict: request multipart/form-data: new required field `consent`"
    ]


def test_removed_success_response(committed: dict[str, Any], new: dict[str, Any]) -> None:
    responses = new["paths"]["/v1/jobs/{job_id}/results"]["get"]["responses"]
    del responses["200"]["content"]["text/csv; charset=utf-8"]
    del new["paths"]["/v1/models"]["get"]["responses"]["200"]
    assert breaking_changes(committed, new) == [
        "GET /v1/jobs/{job_id}/results: response 200: content type text/csv; charset=utf-8 removed",
        "GET /v1/models: response 200 removed",
    ]


def test_additive_changes_are_not_breaks(committed: dict[str, Any], new: dict[str, Any]) -> None:
    predict = schema(new, "PredictResponse")
    predict["properties"]["heatmap_url"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "title": "Heatmap Url",
    }
    predict["properties"]["latency_class"] = {"type": "string"}
    predict["required"].append("latency_class")  # a new response field, always sent
    schema(new, "FeedbackIn")["properties"]["note"] = {"type": "string", "default": ""}
    schema(new, "FeedbackIn")["properties"]["label"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}]  # accepts more than before
    }
    new["paths"]["/v1/jobs"]["get"]["parameters"].append(
        {"in": "query", "name": "cursor", "required": False, "schema": {"type": "string"}}
    )
    new["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["image/avif"] = {
        "schema": {"type": "string", "format": "binary"}
    }
    new["paths"]["/v1/webhooks/test"] = {"post": {"responses": {"204": {"description": "Sent"}}}}
    new["paths"]["/v1/models"]["delete"] = {"responses": {"204": {"description": "Gone"}}}
    assert breaking_changes(committed, new) == []


def test_a_major_version_move_lets_breaks_through(
    committed: dict[str, Any], new: dict[str, Any]
) -> None:
    del new["paths"]["/v1/predict"]
    assert check(committed, new) == ["/v1/predict: route removed"]
    new["info"]["version"] = "1.7.0"  # a minor move is not enough
    assert check(committed, new) == ["/v1/predict: route removed"]
    new["info"]["version"] = "2.0.0"
    assert check(committed, new) == []
    assert breaking_changes(committed, new) == ["/v1/predict: route removed"]


def test_recursive_schemas_terminate() -> None:
    def document(child_type: str) -> dict[str, Any]:
        node = {
            "type": "object",
            "properties": {
                "name": {"type": child_type},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
            },
        }
        ok = {"200": {"content": {"application/json": {"schema": node}}}}
        return {
            "info": {"version": "1.0.0"},
            "paths": {"/v1/tree": {"get": {"responses": ok}}},
            "components": {"schemas": {"Node": node}},
        }

    assert breaking_changes(document("string"), document("string")) == []
    assert breaking_changes(document("string"), document("integer")) == [
        "GET /v1/tree: response 200 application/json: field `name` type changed from string "
        "to integer",
        "GET /v1/tree: response 200 application/json: field `children[].name` type changed from "
        "string to integer",
    ]


# the command


def write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(render(document), encoding="utf-8")


def test_check_passes_on_the_live_document(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    write(target, live_document())
    result = runner.invoke(app, ["openapi", "--out", str(target), "--check"])
    assert result.exit_code == 0, result.output


def test_check_fails_on_a_stale_file_with_the_breaks(tmp_path: Path) -> None:
    stale = live_document()
    schema(stale, "PredictResponse")["properties"]["legacy_score"] = {"type": "number"}
    target = tmp_path / "openapi.json"
    write(target, stale)
    before = target.read_text(encoding="utf-8")
    result = runner.invoke(app, ["openapi", "--out", str(target), "--check"])
    assert result.exit_code != 0
    assert "field `legacy_score` removed" in result.output
    assert target.read_text(encoding="utf-8") == before  # --check never writes


def test_check_fails_on_an_additively_stale_file(tmp_path: Path) -> None:
    stale = live_document()
    del stale["paths"]["/v1/drift/run"]  # the app has a route the file lacks: an addition
    target = tmp_path / "openapi.json"
    write(target, stale)
    result = runner.invoke(app, ["openapi", "--out", str(target), "--check"])
    assert result.exit_code != 0
    assert "additive changes: regenerate with `make openapi`" in result.output
    assert json.loads(target.read_text(encoding="utf-8")) == stale


def test_check_fails_on_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["openapi", "--out", str(tmp_path / "none.json"), "--check"])
    assert result.exit_code != 0
    assert not (tmp_path / "none.json").exists()


def test_writing_refuses_a_break_and_accepts_an_addition(tmp_path: Path) -> None:
    old = live_document()
    old["paths"]["/v1/retired"] = {"get": {"responses": {"200": {"description": "OK"}}}}
    target = tmp_path / "openapi.json"
    write(target, old)
    result = runner.invoke(app, ["openapi", "--out", str(target)])
    assert result.exit_code != 0
    assert "/v1/retired: route removed" in result.output
    assert json.loads(target.read_text(encoding="utf-8")) == old  # left as it was

    old["info"]["version"] = "0.9.0"  # the app's major version is higher: breaks allowed
    write(target, old)
    result = runner.invoke(app, ["openapi", "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == render(live_document())

    fresh = tmp_path / "fresh" / "openapi.json"
    result = runner.invoke(app, ["openapi", "--out", str(fresh)])
    assert result.exit_code == 0, result.output
    assert json.loads(fresh.read_text(encoding="utf-8")) == live_document()


def test_check_after_a_major_move_asks_for_regeneration(tmp_path: Path) -> None:
    old = live_document()
    old["info"]["version"] = "0.9.0"
    old["paths"]["/v1/retired"] = {"get": {"responses": {"200": {"description": "OK"}}}}
    target = tmp_path / "openapi.json"
    write(target, old)
    result = runner.invoke(app, ["openapi", "--out", str(target), "--check"])
    assert result.exit_code != 0
    assert "a new major version: regenerate with `make openapi`" in result.output
