"""Schemathesis against a live daemon: requests generated from the ``/v1/openapi.json`` it
serves, both fitting the document and not, over every operation.

What must hold: no answer is a 5xx; every answer fits the document (status codes, bodies,
content types; a 4xx is the documented error shape); a request that does not fit the document
is refused; and a request that fits it is, nearly always, accepted. That last one is the
document being exact: a client generated from it sends what the daemon takes. "Nearly": some
refusals stay the store's to make and no document can foresee them (an ``hlc`` too far ahead
of the daemon's clock, a ``base`` that no longer matches, a review conflict that is not
there), so acceptance is measured, not demanded of every single case.
"""

from __future__ import annotations

import collections
import json

import jsonschema_rs
import msgpack
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from test_daemon import daemon, key, make_project

EXAMPLES = 25
#: Statuses that accept a request that fits the document, or refuse it for what only the store
#: knows (the defaults of schemathesis' positive_data_acceptance check)
ACCEPTING = {200, 201, 401, 403, 404, 409}


#: Registering a webhook makes the daemon POST to its URL: generated URLs would send requests
#: off this machine (tests use loopback only). test_original_api.py checks these routes'
#: bodies, their refusals and their deliveries against receivers on loopback.
_OUTBOUND = {"POST /v1/webhooks", "PUT /v1/webhooks/{webhook_id}"}


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("schemathesis"))
    with daemon(project) as (url, _):
        yield url


def test_api_never_fails_keeps_its_promises_and_takes_what_it_documents(live_api):
    schema = schemathesis.openapi.from_url(f"{live_api}/v1/openapi.json")
    positive = collections.defaultdict(collections.Counter)
    why = collections.defaultdict(set)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if operation.path == "/v1/watch":
            continue  # a stream: test_watch_events_are_the_documented_objects reads it
        if label in _OUTBOUND:
            continue  # would deliver to the URLs it generates: see _OUTBOUND
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call_and_validate(
                    base_url=live_api, headers=key("zara"), timeout=30,
                    excluded_checks=[positive_data_acceptance, negative_data_rejection],
                    additional_checks=[_negative_data_sent_is_refused])
                assert response.status_code < 500, (label, response.text)
                if mode is GenerationMode.POSITIVE:
                    positive[label][response.status_code] += 1
                    if response.status_code not in ACCEPTING:
                        why[label].add(response.text[:200])
            try:
                check()
            except Unsatisfiable:
                # nothing in the document to break: a route without parameters or body
                assert mode is GenerationMode.NEGATIVE and not _has_inputs(operation), label
        checked.append(label)
    # every operation but the watch stream and the document itself (schemathesis skips it)
    document = requests.get(f"{live_api}/v1/openapi.json", timeout=10).json()
    served = [f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item]
    assert sorted(checked) == sorted(set(served) - {"GET /v1/watch", "GET /v1/openapi.json",
                                                    *_OUTBOUND}), checked
    refused = {label: {s: n for s, n in counts.items() if s not in ACCEPTING}
               for label, counts in positive.items()}
    for label, counts in positive.items():
        total = sum(counts.values())
        assert sum(refused[label].values()) <= total * 0.5, (label, dict(counts), why[label])
    overall = sum(sum(c.values()) for c in positive.values())
    assert sum(sum(r.values()) for r in refused.values()) <= overall * 0.1, (refused, why)


def _negative_data_sent_is_refused(ctx, response, case):
    """schemathesis' negative_data_rejection, for the request as it was sent: a case whose
    only breaks are an extra query parameter that serialises to nothing and the API key it
    dropped (which this test sends anyway) reaches the daemon as a valid request, and is
    rightly answered as one."""
    if response.request.body is None and _query_is_valid(case.operation, response.request.url):
        return None
    return negative_data_rejection(ctx, response, case)


def _query_is_valid(operation, url: str) -> bool:
    """Whether every query parameter of ``url`` is documented for ``operation`` and fits its
    schema (the checks the daemon makes on them)."""
    import re
    from urllib.parse import parse_qsl, urlsplit

    documented = {p["name"]: p.get("schema", {}) for p in
                  operation.definition.raw.get("parameters", ()) if p.get("in") == "query"}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        schema = documented.get(name)
        if schema is None:
            return False
        if schema.get("type") == "integer":
            if not (value.isascii() and value.isdigit()) or not (
                    schema.get("minimum", 0) <= int(value) <= schema.get("maximum", 2 ** 63)):
                return False
        elif schema.get("type") == "string":
            if len(value) > schema.get("maxLength", 10 ** 9) or (
                    "enum" in schema and value not in schema["enum"]) or (
                    "pattern" in schema and not re.search(schema["pattern"], value)):
                return False
        else:
            return False
    return True


def _has_inputs(operation) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


def _validator(document, name):
    text = json.dumps(document["components"]["schemas"]).replace(
        "#/components/schemas/", "#/definitions/")
    schemas = json.loads(text)
    return jsonschema_rs.Draft4Validator({"$ref": f"#/definitions/{name}",
                                          "definitions": schemas})


def test_watch_events_are_the_documented_objects(live_api):
    document = requests.get(f"{live_api}/v1/openapi.json", timeout=10).json()
    answer = document["paths"]["/v1/watch"]["get"]["responses"]["200"]["content"]
    assert answer["text/event-stream"]["schema"]["items"] == \
        {"$ref": "#/components/schemas/WatchEvent"}
    body = {"ops": [{"type": "set_field", "entity_id": "route.watched", "field": "weight",
                     "value": 5},
                    {"type": "add_elements", "entity_id": "service.watched", "field": "ports",
                     "elements": [80, 443]}]}
    start = requests.get(f"{live_api}/v1/ops", params={"after": 0, "limit": 10000},
                         headers=key("zara"), timeout=10).json()["next"]
    r = requests.post(f"{live_api}/v1/ops", json=body, headers=key("zara"), timeout=10)
    assert r.status_code == 200, r.text
    with requests.get(f"{live_api}/v1/watch", params={"after": start, "timeout": 2},
                      headers=key("zara"), stream=True, timeout=30) as stream:
        text = stream.text
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if lines:
            fields = dict(line.split(": ", 1) for line in lines)
            events.append({"id": int(fields["id"]), "event": fields["event"],
                           "data": json.loads(fields["data"])})
    assert len(events) == 2
    validator = _validator(document, "WatchEvent")
    for event in events:
        validator.validate(event)
    assert validator.is_valid({"id": 1, "event": "op", "data": "a string"}) is False


def test_msgpack_bodies_and_answers_are_documented_and_served(live_api):
    document = requests.get(f"{live_api}/v1/openapi.json", timeout=10).json()
    ops = document["paths"]["/v1/ops"]["post"]
    assert "application/msgpack" in ops["requestBody"]["content"]
    for status in ("200", "422"):
        assert "application/msgpack" in ops["responses"][status]["content"]
    headers = {**key("zara"), "Content-Type": "application/msgpack",
               "Accept": "application/msgpack"}
    op = {"type": "set_field", "entity_id": "route.packed", "field": "weight", "value": 7}
    r = requests.post(f"{live_api}/v1/ops", data=msgpack.packb(op), headers=headers, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/msgpack"
    _validator(document, "Ack").validate(msgpack.unpackb(r.content))
    r = requests.post(f"{live_api}/v1/ops", data=msgpack.packb({**op, "value": None}),
                      headers=headers, timeout=10)
    assert r.status_code == 422 and r.headers["Content-Type"] == "application/msgpack"
    _validator(document, "Error").validate(msgpack.unpackb(r.content))
