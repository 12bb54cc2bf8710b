"""The original Conflux's REST interface on a real daemon: its routes, its request bodies (one
case per route and operation type) and its answers' keys, beside Conflux's own."""

from __future__ import annotations

import pytest
import requests

from test_daemon import daemon, key, make_project


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("original"))
    with daemon(project) as (url, _):
        yield url


def post(url, path, body, actor="zara"):
    return requests.post(f"{url}{path}", json=body, headers=key(actor), timeout=10)


def get(url, path, actor="zara", **params):
    return requests.get(f"{url}{path}", params=params, headers=key(actor), timeout=10)


def entity(url, entity_id, env=None):
    r = get(url, f"/v1/entities/{entity_id}", **({"env": env} if env else {}))
    return {k: v["value"] for k, v in r.json()["fields"].items()} if r.status_code == 200 \
        else r.status_code


# -- operations --------------------------------------------------------------------------------

def test_set_field_answers_with_the_originals_keys_and_conflux_s(live):
    r = post(live, "/v1/ops", {"type": "set_field", "entity_id": "service.o-api",
                               "field": "replicas", "value": 5, "intent": "Scale for traffic"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["operation_id"] == body["op_id"] and body["timestamp"] == body["hlc"]
    assert body["conflict"] is False and "conflict_info" not in body
    assert body["applied"] is True and body["value"] == 5 and body["seq"] >= 1
    assert entity(live, "service.o-api") == {"replicas": 5}


def test_insert_entity_writes_its_fields_together(live):
    r = post(live, "/v1/ops", {"type": "insert_entity", "entity_id": "service.o-ins",
                               "entity_type": "service",
                               "fields": {"image": "api:1", "replicas": 2}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["operation_ids"]) == 2 and body["operation_id"] == body["operation_ids"][0]
    assert entity(live, "service.o-ins") == {"image": "api:1", "replicas": 2}


@pytest.mark.parametrize("body, status, words", [
    ({"type": "insert_entity", "entity_id": "service.o-x", "entity_type": "service"}, 422,
     "initial fields"),
    ({"type": "insert_entity", "entity_id": "service.o-x", "entity_type": "route",
      "fields": {"path": "/"}}, 422, "entity_type"),
    ({"type": "insert_entity", "entity_id": "service.o-x", "entity_type": "service",
      "parent_id": "service.o-api", "fields": {"image": "x"}}, 422, "parent_id"),
    ({"type": "move_entity", "entity_id": "service.o-x", "new_parent_id": "service.o-api",
      "new_position": "a"}, 422, "entity tree"),
    ({"type": "set_override", "entity_id": "service.o-x", "field": "replicas", "value": 2},
     422, "environment"),
    ({"type": "set_override", "entity_id": "service.o-x", "field": "replicas",
      "environment": "qa", "value": 2}, 422, "qa"),
    ({"type": "resolve_conflict", "entity_id": "service.o-x", "field": "tier"}, 422,
     "chosen_value"),
    ({"type": "set_override", "entity_id": "service.o-x", "field": "replicas",
      "environment": "staging", "value": 9000}, 422, "replicas"),
])
def test_bad_original_operations_are_refused_and_write_nothing(live, body, status, words):
    before = get(live, "/v1/ops", after=0, limit=10000).json()["next"]
    r = post(live, "/v1/ops", body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]
    assert get(live, "/v1/ops", after=0, limit=10000).json()["next"] == before


def test_set_override_remove_entity_and_resolve_conflict(live):
    post(live, "/v1/ops", {"type": "set_field", "entity_id": "service.o-env", "field": "replicas",
                           "value": 3})
    r = post(live, "/v1/ops", {"type": "set_override", "entity_id": "service.o-env",
                               "field": "replicas", "environment": "staging", "value": 1})
    assert r.status_code == 200, r.text
    assert entity(live, "service.o-env", "staging")["replicas"] == 1
    assert entity(live, "service.o-env")["replicas"] == 3
    # a review conflict: two writes of which neither saw the other
    post(live, "/v1/ops", {"type": "set_field", "entity_id": "service.o-env", "field": "tier",
                           "value": "web"})
    r = post(live, "/v1/ops", {"type": "set_field", "entity_id": "service.o-env", "field": "tier",
                               "value": "batch", "base": []})
    body = r.json()
    assert body["conflict"] is True
    assert body["conflict_info"]["entity_id"] == "service.o-env"
    assert sorted(body["conflict_info"]["contending_values"]) == ["batch", "web"]
    r = post(live, "/v1/ops", {"type": "resolve_conflict", "entity_id": "service.o-env",
                               "field": "tier", "chosen_value": "web"})
    assert r.status_code == 200 and r.json()["conflict"] is False
    assert get(live, "/v1/conflicts").json()["conflicts"] == []
    r = post(live, "/v1/ops", {"type": "remove_entity", "entity_id": "service.o-env"})
    assert r.status_code == 200, r.text
    assert entity(live, "service.o-env") == 404


def test_the_originals_batch_is_atomic(live):
    ops = [{"type": "set_field", "entity_id": "service.o-b1", "field": "image", "value": "a"},
           {"type": "insert_entity", "entity_id": "service.o-b2", "entity_type": "service",
            "fields": {"image": "b"}, "intent": "new"},
           {"type": "set_override", "entity_id": "service.o-b1", "field": "image",
            "environment": "staging", "value": "a-staging"}]
    r = post(live, "/v1/ops/batch", {"operations": ops})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["conflicts"], len(body["results"])) == (3, 0, 3)
    assert all(res["operation_id"] and res["timestamp"].startswith("hlc:")
               for res in body["results"])
    assert entity(live, "service.o-b2") == {"image": "b", "replicas": 1}
    assert entity(live, "service.o-b1", "staging")["image"] == "a-staging"
    # one bad op: nothing of the batch is written
    before = get(live, "/v1/ops", after=0, limit=10000).json()["next"]
    bad = [{"type": "set_field", "entity_id": "service.o-b3", "field": "image", "value": "c"},
           {"type": "set_field", "entity_id": "service.o-b3", "field": "replicas",
            "value": -1}]
    r = post(live, "/v1/ops/batch", {"operations": bad})
    assert r.status_code == 422 and "op 1" in r.json()["error"]["message"]
    assert get(live, "/v1/ops", after=0, limit=10000).json()["next"] == before
    for body in ({}, {"operations": []}, {"operations": "x"}, {"ops": ops}):
        r = post(live, "/v1/ops/batch", body)
        assert r.status_code == 422 and "operations" in r.json()["error"]["message"]
    # a reader may not write: 403, nothing written
    r = post(live, "/v1/ops/batch", {"operations": ops[:1]}, actor="reader-1")
    assert r.status_code == 403
    assert get(live, "/v1/ops", after=0, limit=10000).json()["next"] == before
