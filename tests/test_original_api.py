"""The original Conflux's REST interface on a real daemon: its routes, its request bodies (one
case per route and operation type) and its answers' keys, beside Conflux's own."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time

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
    # one write per field; no parent_id: no place in the tree
    assert len(body["operation_ids"]) == 2 and body["operation_id"] == body["operation_ids"][0]
    assert entity(live, "service.o-ins") == {"image": "api:1", "replicas": 2}
    log = get(live, "/v1/log/service.o-ins").json()["operations"]
    assert sorted(o["type"] for o in log) == ["set_field", "set_field"]
    # with a parent, the move comes last: the answer is the first field's
    r = post(live, "/v1/ops", {"type": "insert_entity", "entity_id": "route.o-ins",
                               "entity_type": "route", "parent_id": "service.o-ins",
                               "op_id": "ins-7", "fields": {"path": "/o", "place": "x"}})
    assert r.status_code == 422 and "place" in r.text  # (no such field: nothing written)
    r = post(live, "/v1/ops", {"type": "insert_entity", "entity_id": "route.o-ins",
                               "entity_type": "route", "parent_id": "service.o-ins",
                               "op_id": "ins-7", "fields": {"path": "/o"}})
    assert r.status_code == 200 and r.json()["operation_ids"] == ["ins-7/path",
                                                                  "ins-7/~place"], r.text
    assert r.json()["value"] == "/o"


def test_entities_have_a_parent_a_position_and_children(live):
    ops = [{"type": "insert_entity", "entity_id": "service.t-shop", "entity_type": "service"},
           {"type": "insert_entity", "entity_id": "route.t-b", "entity_type": "route",
            "parent_id": "service.t-shop", "position": "b",
            "fields": {"path": "/b", "service": "t-shop"}},
           {"type": "insert_entity", "entity_id": "route.t-a", "entity_type": "route",
            "parent_id": "service.t-shop", "position": "a",
            "fields": {"path": "/a", "service": "t-shop"}}]
    r = post(live, "/v1/ops/batch", {"operations": ops})
    assert r.status_code == 200, r.text
    shop = get(live, "/v1/state/service.t-shop").json()
    # an entity inserted with no fields exists: its defaults, its place, its children
    assert shop["fields"] == {"replicas": 1} and shop["parent_id"] is None
    assert shop["children"] == ["route.t-a", "route.t-b"]
    a = get(live, "/v1/state/route.t-a").json()
    assert a["parent_id"] == "service.t-shop" and a["position"] == "a"
    # the original's move: a new position among its siblings
    r = post(live, "/v1/ops", {"type": "move_entity", "entity_id": "route.t-a",
                               "new_parent_id": "service.t-shop", "new_position": "c"})
    assert r.status_code == 200 and r.json()["applied"] is True, r.text
    assert get(live, "/v1/state/service.t-shop").json()["children"] == ["route.t-b",
                                                                        "route.t-a"]
    log = get(live, "/v1/log/route.t-a").json()["operations"]
    assert (log[0]["type"], log[0]["new_parent_id"], log[0]["new_position"]) == (
        "move_entity", "service.t-shop", "c")
    # Conflux's own move and its tree route
    r = post(live, "/v1/ops", {"type": "move_entity", "entity_id": "route.t-b",
                               "parent": "service.t-shop", "position": "d"})
    assert r.status_code == 200, r.text
    tree = get(live, "/v1/tree").json()
    assert tree["entities"]["service.t-shop"]["children"] == ["route.t-a", "route.t-b"]
    assert "service.t-shop" in tree["roots"]
    one = get(live, "/v1/tree", entity="route.t-b", env="staging").json()
    assert (one["parent"], one["position"], one["env"]) == ("service.t-shop", "d", "staging")
    assert get(live, "/v1/tree", entity="route.t-none").status_code == 404
    r = post(live, "/v1/ops", {"type": "move_entity", "entity_id": "route.t-b",
                               "parent": "service.t-shop", "position": {"x": 1}})
    assert r.status_code in (400, 422) and "position" in r.text
    # every environment shows the tree; the roots are the entities with no parent
    staging = get(live, "/v1/envs/staging/state").json()
    shown = {e["entity_id"]: e for e in staging["entities"]}
    assert shown["route.t-b"]["parent_id"] == "service.t-shop"
    assert "service.t-shop" in staging["root_entities"]
    assert "route.t-b" not in staging["root_entities"]
    # a removed parent leaves its children under the nearest ancestor left: here, roots
    assert post(live, "/v1/ops", {"type": "remove_entity",
                                  "entity_id": "service.t-shop"}).status_code == 200
    assert get(live, "/v1/state/route.t-b").json()["parent_id"] is None
    assert get(live, "/v1/state/service.t-shop").status_code == 404


@pytest.mark.parametrize("body, status, words", [
    ({"type": "insert_entity", "entity_id": "service.o-x", "entity_type": "service",
      "fields": []}, 422, "fields"),
    ({"type": "insert_entity", "entity_id": "service.o-x", "entity_type": "route",
      "fields": {"path": "/"}}, 422, "entity_type"),
    ({"type": "insert_entity", "entity_id": "service.o-x", "entity_type": "service",
      "parent_id": "service.o-api", "fields": {"image": "x"}}, 422, "declares no children"),
    ({"type": "insert_entity", "entity_id": "route.o-x", "entity_type": "route",
      "parent_id": "service.o-nowhere", "fields": {"path": "/x", "service": "o-api"}}, 422,
     "does not exist"),
    ({"type": "move_entity", "entity_id": "route.o-x", "new_parent_id": "route.o-y",
      "new_position": "a"}, 422, "declares no children"),
    ({"type": "move_entity", "entity_id": "route.o-x", "new_parent_id": "service.o-api",
      "new_position": ["a"]}, 422, "position"),
    ({"type": "move_entity", "entity_id": "route.o-x", "new_position": "a"}, 422,
     "new_parent_id"),
    ({"type": "move_entity", "entity_id": "route.o-x", "new_parent_id": 0,
      "new_position": "a"}, 422, "parent"),
    ({"type": "move_entity", "entity_id": "route.o-x", "new_parent_id": "service.o-api",
      "new_position": "a", "parent": None}, 422, "parent"),
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


@pytest.mark.parametrize("body", [{"type": []}, {"type": {"a": 1}},
                                  {"ops": [{"type": ["x"], "entity_id": "service.a"}]},
                                  [{"type": "set_field"}], "text"])
def test_a_malformed_type_is_a_4xx_never_a_500(live, body):
    for path in ("/v1/ops", "/v1/ops/batch"):
        r = post(live, path, body if path == "/v1/ops" else {"operations": [body]})
        assert 400 <= r.status_code < 500, (path, body, r.text)


def test_a_gitops_remote_never_carries_its_credentials():
    from conflux.webhook_bodies import _public

    assert _public("https://bot:s3cret@git.example.com/infra.git") == \
        "https://git.example.com/infra.git"
    assert _public("git@github.com:acme/infra.git") == "github.com:acme/infra.git"
    assert _public("/srv/git/infra.git") == "/srv/git/infra.git"


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


# -- reads -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded(live):
    """A few entities and overrides, written the original's way."""
    ops = [{"type": "insert_entity", "entity_id": "service.r-api", "entity_type": "service",
            "fields": {"image": "api:1"}, "intent": "create"},
           {"type": "set_override", "entity_id": "service.r-api", "field": "image",
            "environment": "staging", "value": "api:2-rc"}]
    assert post(live, "/v1/ops/batch", {"operations": ops}).status_code == 200
    assert post(live, "/v1/ops", {"type": "add_elements", "entity_id": "upstream.r-pool",
                                  "field": "targets", "elements": ["10.0.0.1"]},
                actor="zara").status_code == 200
    return live


def test_health_as_the_original_answers_it(live):
    r = requests.get(f"{live}/health", timeout=10)  # no credentials needed
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["version"]


def test_an_entitys_state_in_the_originals_shape(seeded):
    r = get(seeded, "/v1/state/service.r-api")
    assert r.status_code == 200, r.text
    assert r.json() == {"entity_id": "service.r-api", "entity_type": "service",
                        "fields": {"image": "api:1", "replicas": 1}, "parent_id": None,
                        "children": [], "tombstoned": False, "env": "production"}
    assert get(seeded, "/v1/state/service.r-api", env="staging").json()["fields"]["image"] == \
        "api:2-rc"
    assert get(seeded, "/v1/state/service.nobody").status_code == 404
    assert get(seeded, "/v1/state/nosuch.x").status_code in (404, 422)


def test_the_log_in_the_originals_shape(seeded):
    r = get(seeded, "/v1/log", entity_id="service.r-api")
    assert r.status_code == 200, r.text
    body = r.json()
    ops = body["operations"]
    assert [(o["type"], o.get("environment"), o.get("value")) for o in ops] == [
        ("set_override", "staging", "api:2-rc"), ("set_field", None, "api:1")]
    assert ops[1]["intent"] == "create" and ops[1]["actor_id"] == "zara"
    assert ops[1]["id"] and ops[1]["timestamp"].startswith("hlc:") and ops[0]["seq"] > \
        ops[1]["seq"]
    assert body["has_more"] is False and body["total"] >= 3
    assert get(seeded, "/v1/log/service.r-api").json()["operations"] == ops
    page = get(seeded, "/v1/log", limit=1, offset=1, entity_id="service.r-api").json()
    assert page["operations"] == ops[1:] and page["has_more"] is False
    page = get(seeded, "/v1/log", limit=1, entity_id="service.r-api").json()
    assert page["operations"] == ops[:1] and page["has_more"] is True
    mine = get(seeded, "/v1/log", actor_id="zara", limit=10000).json()["operations"]
    assert mine and all(o["actor_id"] == "zara" for o in mine)
    assert get(seeded, "/v1/log", actor_id="nobody").json()["operations"] == []
    # the original's vocabulary where it has one; Conflux's own types keep their names
    kinds = {o["type"] for o in get(seeded, "/v1/log", limit=10000).json()["operations"]}
    assert {"set_field", "set_override", "add_elements"} <= kinds
    for params, status in (({"limit": "0"}, 400), ({"offset": "-1"}, 400),
                           ({"entity_id": "bad id"}, 400), ({"frm": "x"}, 400)):
        assert get(seeded, "/v1/log", **params).status_code == status, params
    assert get(seeded, "/v1/log", actor="reader-1").status_code == 200  # the reader reads all


def test_environments_their_state_with_sources_and_their_diff(seeded):
    assert get(seeded, "/v1/envs").json() == {
        "base": "production", "environments": ["production", "staging", "development"],
        "inheritance": {"staging": "production", "development": "staging"}}
    r = get(seeded, "/v1/envs/development/state")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["environment"] == "development"
    api = next(e for e in body["entities"] if e["entity_id"] == "service.r-api")
    assert api["fields"] == {"image": "api:2-rc", "replicas": 1}
    assert api["field_sources"] == {"image": "staging", "replicas": "default"}
    assert "service.r-api" in body["root_entities"]
    prod = get(seeded, "/v1/envs/production/state").json()
    api = next(e for e in prod["entities"] if e["entity_id"] == "service.r-api")
    assert api["field_sources"] == {"image": "base", "replicas": "default"}
    assert get(seeded, "/v1/envs/qa/state").status_code == 404
    diff = get(seeded, "/v1/envs/diff", **{"from": "production", "to": "staging"}).json()
    assert diff["from_env"] == "production" and diff["to_env"] == "staging"
    assert {"entity_id": "service.r-api", "field": "image", "from_value": "api:1",
            "to_value": "api:2-rc"} in diff["differences"]
    assert all(d["from_value"] != d["to_value"] for d in diff["differences"])
    assert get(seeded, "/v1/envs/diff", **{"from": "production", "to": "qa"}
               ).status_code == 404
    assert get(seeded, "/v1/envs/diff", to="staging").status_code == 400


# -- webhooks managed over REST ----------------------------------------------------------------

def test_webhooks_registered_over_rest_deliver_the_originals_payload(tmp_path):
    from test_webhooks import Receiver, signature_ok

    project = make_project(tmp_path / "p")
    receiver, filtered, pushed = Receiver(), Receiver(), Receiver()
    with open(os.path.join(project, ".conflux", "webhooks.toml"), "w") as fh:
        fh.write(f'[[webhook]]\nname = "from-file"\nurl = "{receiver.url}"\n'
                 'secret = "file-secret"\n')
    try:
        with daemon(project) as (url, _):
            r = post(url, "/v1/webhooks", {"url": receiver.url, "secret": "s3cret",
                                           "entity_filter": "service.hook-"})
            assert r.status_code == 200, r.text
            hook = r.json()
            assert hook["enabled"] is True and hook["url"] == receiver.url
            r = post(url, "/v1/webhooks", {"url": filtered.url, "field_filter": "image",
                                           "event_filter": "conflicts"})
            conflicts_only = r.json()["id"]
            gitops = post(url, "/v1/webhooks", {"url": pushed.url, "format": "gitops",
                                                "secret": "g1t"}).json()["id"]
            listed = get(url, "/v1/webhooks").json()
            assert listed["total"] == 4
            assert [(w["source"], w.get("entity_filter")) for w in listed["webhooks"]] == [
                ("webhooks.toml", None), ("api", "service.hook-"), ("api", None),
                ("api", None)]
            assert all("secret" not in w for w in listed["webhooks"])
            time.sleep(2.5)  # the delivery process starts and picks the registrations up
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.hook-a",
                                  "field": "replicas", "value": 2, "intent": "scale"})
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.other",
                                  "field": "replicas", "value": 2})
            # the original's payload, one change per POST, signed with the secret
            assert receiver.wait_for(lambda r: any(
                b'"event_type"' in body for _, body, _ in r.requests))
            originals = [(h, json.loads(b)) for h, b, _ in receiver.requests
                         if b'"event_type"' in b]
            headers, change = originals[0]
            assert {k: change[k] for k in ("event_type", "entity_id", "field", "value_json",
                                           "actor_id", "intent", "has_conflict")} == {
                "event_type": "set_field", "entity_id": "service.hook-a",
                "field": "replicas", "value_json": "2", "actor_id": "zara",
                "intent": "scale", "has_conflict": False}
            assert signature_ok(headers, json.dumps(change, ensure_ascii=False,
                                                    separators=(",", ":")).encode(),
                                "s3cret")
            assert len(originals) == 1  # service.other is not for it
            # the file's webhook gets Conflux's batches, as before
            assert receiver.wait_for(lambda r: any(b'"ops"' in body
                                                   for _, body, _ in r.requests))
            # conflicts only: a plain write is not sent, a conflicting one is
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.hook-c",
                                  "field": "tier", "value": "web"})
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.hook-c",
                                  "field": "image", "value": "x"})
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.hook-c",
                                  "field": "tier", "value": "batch", "base": []})
            # (field_filter image: the tier conflict is not its field either)
            time.sleep(2.0)
            assert filtered.requests == []
            r = requests.put(f"{url}/v1/webhooks/{conflicts_only}", headers=key("zara"),
                             json={"field_filter": "tier"}, timeout=10)
            assert r.status_code == 200 and r.json()["field_filter"] == "tier"
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.hook-d",
                                  "field": "tier", "value": "web"})
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.hook-d",
                                  "field": "tier", "value": "batch", "base": []})
            assert filtered.wait_for(lambda r: len(r.requests) >= 1)
            sent = [json.loads(b) for _, b, _ in filtered.requests]
            assert {(s["entity_id"], s["has_conflict"]) for s in sent} <= {
                ("service.hook-c", True), ("service.hook-d", True)}
            assert "x-conflux-signature" not in {k.lower() for k in filtered.requests[0][0]}
            # gitops: a milestone is a GitHub push event
            r = post(url, "/v1/milestones", {"message": "release 7", "force": True})
            assert r.status_code == 201, r.text
            assert pushed.wait_for(lambda r: len(r.requests) >= 1)
            headers, body, _ = pushed.requests[0]
            headers = {k.lower(): v for k, v in headers.items()}
            event = json.loads(body)
            assert headers["x-github-event"] == "push"
            assert headers["x-hub-signature-256"] == "sha256=" + hmac.new(
                b"g1t", body, hashlib.sha256).hexdigest()
            assert event["after"] == r.json()["commit"] and event["ref"] == "refs/heads/main"
            assert event["head_commit"]["message"].startswith("release 7")
            assert event["repository"]["clone_url"] == "milestones.git"  # no server path
            # disabled: nothing more; deleted: gone
            r = requests.put(f"{url}/v1/webhooks/{hook['id']}", headers=key("zara"),
                             json={"enabled": False}, timeout=10)
            assert r.status_code == 200 and r.json()["enabled"] is False
            r = requests.delete(f"{url}/v1/webhooks/{gitops}", headers=key("zara"), timeout=10)
            assert r.json() == {"deleted": True, "id": gitops}
            assert get(url, f"/v1/webhooks/{gitops}").status_code == 404
            assert requests.delete(f"{url}/v1/webhooks/from-file", headers=key("zara"),
                                   timeout=10).status_code == 409
    finally:
        for r in (receiver, filtered, pushed):
            r.close()


def test_webhook_registrations_are_checked_and_need_admin(tmp_path):
    project = make_project(tmp_path / "p")
    with daemon(project) as (url, _):
        for body, words in (({}, "url"), ({"url": "gopher://x/"}, "http"),
                             ({"url": "http://x/", "event_filter": "some"}, "event_filter"),
                             ({"url": "http://x/", "format": "xml"}, "format"),
                             ({"url": "http://x/", "entity_filter": "a b"}, "entity_filter"),
                             ({"url": "http://x/", "bogus": 1}, "bogus"),
                             ({"url": "http://x/", "enabled": "yes"}, "enabled")):
            r = post(url, "/v1/webhooks", body)
            assert r.status_code == 422 and words in r.json()["error"]["message"], (body, r.text)
        assert get(url, "/v1/webhooks").json() == {"webhooks": [], "total": 0}
        r = post(url, "/v1/webhooks", {"url": "http://127.0.0.1:9/"}, actor="reader-1")
        assert r.status_code == 403
        assert get(url, "/v1/webhooks", actor="reader-1").status_code == 403
        assert get(url, "/v1/webhooks/nope").status_code == 404
        assert not os.path.exists(os.path.join(project, ".conflux", "webhooks.json"))
        r = post(url, "/v1/webhooks", {"url": "http://127.0.0.1:9/", "secret": "k"})
        mode = os.stat(os.path.join(project, ".conflux", "webhooks.json")).st_mode & 0o777
        assert r.status_code == 200 and mode == 0o600


# -- callers who name themselves (auth = "none", loopback only) --------------------------------

def test_without_auth_callers_name_themselves_on_loopback_only(tmp_path):
    import subprocess
    import sys

    project = make_project(tmp_path / "p", rbac=False)
    with open(os.path.join(project, ".conflux", "config.toml"), "a") as fh:
        fh.write('\n[daemon]\nauth = "none"\n')
    run = subprocess.run([sys.executable, "-m", "conflux", "--dir", project, "daemon",
                          "--host", "0.0.0.0", "--port", "9"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "loopback" in run.stderr, run.stderr
    with daemon(project) as (url, _):
        named = {"X-Conflux-Actor": "test-user", "X-Conflux-Actor-Class": "Pipeline"}
        r = requests.post(f"{url}/v1/ops", headers=named, timeout=10, json={
            "type": "insert_entity", "entity_id": "route.api", "entity_type": "route",
            "fields": {"path": "/api"}})
        assert r.status_code == 200, r.text
        log = requests.get(f"{url}/v1/log", headers=named, timeout=10).json()["operations"]
        assert (log[0]["actor_id"], log[0]["actor_class"]) == ("test-user", "pipeline")
        r = requests.post(f"{url}/v1/ops", timeout=10, json={
            "type": "set_field", "entity_id": "route.api", "field": "path", "value": "/x"})
        assert r.status_code == 401 and "X-Conflux-Actor" in r.json()["error"]["message"]
        r = requests.post(f"{url}/v1/ops", timeout=10, headers={
            "X-Conflux-Actor": "test-user", "X-Conflux-Actor-Class": "robot"}, json={
            "type": "set_field", "entity_id": "route.api", "field": "path", "value": "/x"})
        assert r.status_code == 400 and "robot" in r.json()["error"]["message"]
        # a key still names its own actor
        r = post(url, "/v1/ops", {"type": "set_field", "entity_id": "route.api",
                                  "field": "path", "value": "/k"})
        assert r.status_code == 200
        log = requests.get(f"{url}/v1/log", headers=named, timeout=10).json()["operations"]
        assert log[0]["actor_id"] == "zara" and len(log) == 2


def test_the_audit_export_with_the_originals_filters_and_headers(tmp_path):
    import subprocess
    import sys

    project = make_project(tmp_path / "p")
    with daemon(project) as (url, _):
        post(url, "/v1/ops", {"type": "set_field", "entity_id": "route.a", "field": "path",
                              "value": "/a"})
        post(url, "/v1/ops", {"type": "set_field", "entity_id": "route.a", "field": "weight",
                              "value": 5}, actor="autoscaler-7")
        post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.b", "field": "image",
                              "value": "b"})
        r = requests.get(f"{url}/v1/audit/export", headers=key("zara"), timeout=30,
                         params={"actor": "zara", "entity": "route", "verify": "true"})
        assert r.status_code == 200, r.text
        assert r.headers["X-Audit-Operations-Exported"] == "1"
        assert r.headers["X-Audit-Signature-Failures"] == "0"
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert [x.get("seq", x.get("elided")) for x in lines[:-1]] == [1, [2, 3]]
        assert lines[-1]["checkpoint"]["filter"] == {"actor": "zara", "entity": "route"}
        r = requests.get(f"{url}/v1/audit/export", headers=key("zara"), timeout=30)
        assert r.headers["X-Audit-Operations-Exported"] == "3"
        assert "X-Audit-Signature-Failures" not in r.headers
        assert requests.get(f"{url}/v1/audit/export", headers=key("zara"), timeout=30,
                            params={"entity": "bad id"}).status_code == 400
    # the command line: the same filters, and a filtered file verifies
    out = tmp_path / "audit.jsonl"
    run = subprocess.run([sys.executable, "-m", "conflux", "--dir", project, "audit",
                          "export", "--actor", "autoscaler-7", "--verify", "-o", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "1 operation" in run.stderr and "every signature verified" in run.stderr
    check = subprocess.run([sys.executable, "-m", "conflux", "--dir", project, "audit",
                            "verify", str(out), "--key-registry",
                            os.path.join(project, ".conflux", "keys.json")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_contending_values_are_shown_only_to_who_may_read_them(tmp_path):
    from conflux.auth import hash_key

    project = make_project(tmp_path / "p")
    with open(os.path.join(project, ".conflux", "rbac.toml"), "a") as fh:
        fh.write('\n[role.blind]\npermissions = [{ actions = ["write"], '
                 'resource = "service.*" }]\n\n[[assign]]\nactor = "pipeline:ci"\n'
                 'roles = ["blind"]\n')
    with open(os.path.join(project, ".conflux", "api-keys.toml"), "a") as fh:
        fh.write(f'\n[[key]]\nhash = "{hash_key("ci-key-0123456789abcdef")}"\n'
                 'actor = "ci"\nclass = "pipeline"\n')
    ci = {"X-API-Key": "ci-key-0123456789abcdef"}
    with daemon(project) as (url, _):
        post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.c", "field": "tier",
                              "value": "web"})
        r = requests.post(f"{url}/v1/ops", headers=ci, timeout=10, json={
            "type": "set_field", "entity_id": "service.c", "field": "tier", "value": "batch",
            "base": []})
        body = r.json()
        assert r.status_code == 200 and body["conflict"] is True, r.text
        assert body["conflict_info"] == {"entity_id": "service.c", "field": "tier"}
        r = post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.c",
                                  "field": "tier", "value": "web", "base": []})
        assert sorted(r.json()["conflict_info"]["contending_values"]) == ["batch", "web",
                                                                           "web"]


def test_a_bad_webhooks_json_leaves_the_files_webhooks_delivering(tmp_path):
    from test_webhooks import Receiver

    project = make_project(tmp_path / "p")
    receiver = Receiver()
    root = os.path.join(project, ".conflux")
    with open(os.path.join(root, "webhooks.toml"), "w") as fh:
        fh.write(f'[[webhook]]\nname = "file"\nurl = "{receiver.url}"\nsecret = "k"\n')
    with open(os.path.join(root, "webhooks.json"), "w") as fh:
        fh.write('{"webhooks": [{"no": "id"}, 7]}')
    try:
        with daemon(project) as (url, _):
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.w",
                                  "field": "image", "value": "x"})
            assert receiver.wait_for(lambda r: len(r.delivered) >= 1)
            with open(os.path.join(root, "webhooks.json"), "w") as fh:
                fh.write("{not json")
            time.sleep(2.5)  # the delivery process sees the change and carries on
            post(url, "/v1/ops", {"type": "set_field", "entity_id": "service.w",
                                  "field": "image", "value": "y"})
            assert receiver.wait_for(lambda r: len(r.ops()) >= 2)
    finally:
        receiver.close()
