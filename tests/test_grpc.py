"""The gRPC service (``conflux.v1.ConfluxService``), for real: a daemon started with
``--grpc-port`` and a client built from the repository's proto, every rpc, the original's
operations, credentials and access rules, watch filters, snapshot and resume, 1,000 idle
streams, a watcher that stopped reading, TLS and mutual TLS."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest
import requests
from google.protobuf import descriptor_pb2

from conflux.rpc import conflux_pb2 as pb
from conflux.rpc import conflux_pb2_grpc as pb_grpc
from test_daemon import KEYS, daemon, free_port, key, make_project, tls_project, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO = os.path.join(ROOT, "src", "conflux", "rpc", "conflux.proto")


def creds(actor):
    return (("x-api-key", KEYS[actor][1]),)


def set_field(entity, field, value, **extra):
    return pb.SubmitRequest(set_field=pb.SetFieldOp(entity_id=entity, field=field,
                                                    value_json=json.dumps(value)), **extra)


class Live:
    def __init__(self, url, project, port, proc):
        self.url, self.project, self.port, self.proc = url, project, port, proc
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.ConfluxServiceStub(self.channel)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("grpc"))
    port = free_port()
    with daemon(project, "--grpc-port", str(port)) as (url, proc):
        live = Live(url, project, port, proc)
        yield live
        live.channel.close()


def code_of(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


# -- the interface ------------------------------------------------------------------------------

def test_the_generated_modules_match_the_proto(tmp_path):
    out = tmp_path / "set.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "src"),
                    f"--descriptor_set_out={out}", "conflux/rpc/conflux.proto"], check=True)
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in fresh.message_type:  # the descriptor set names each field's JSON name
        for field in message.field:  # too; the generated module leaves it to the runtime
            field.ClearField("json_name")
        for nested in message.nested_type:
            for field in nested.field:
                field.ClearField("json_name")
    kept = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert kept == fresh, "conflux_pb2.py is out of date: run 'make proto'"
    methods = [m.name for m in fresh.service[0].method]
    stub = pb_grpc.ConfluxServiceStub(grpc.insecure_channel("127.0.0.1:1"))
    assert all(hasattr(stub, m) for m in methods)
    assert all(hasattr(pb_grpc.ConfluxServiceServicer, m) for m in methods)


# The original's wire interface: package, service, rpcs, and each message's field numbers.
ORIGINAL = {
    "WatchRequest": {"entity_filter": 1, "field_filter": 2, "include_initial_state": 3},
    "StateChange": {"change_type": 1, "entity_id": 2, "field": 3, "value_json": 4,
                    "actor_id": 5, "actor_class": 6, "timestamp": 7, "intent": 8,
                    "operation_id": 9},
    "SubmitRequest": {"actor_id": 1, "actor_class": 2, "set_field": 10, "insert_entity": 11,
                      "remove_entity": 12, "set_override": 13, "resolve_conflict": 14,
                      "intent": 20},
    "SetFieldOp": {"entity_id": 1, "field": 2, "value_json": 3},
    "InsertEntityOp": {"entity_id": 1, "entity_type": 2, "parent_id": 3, "position": 4,
                       "initial_fields_json": 5},
    "RemoveEntityOp": {"entity_id": 1},
    "SetOverrideOp": {"entity_id": 1, "field": 2, "environment": 3, "value_json": 4},
    "ResolveConflictOp": {"entity_id": 1, "field": 2, "environment": 3, "value_json": 4},
    "SubmitResponse": {"operation_id": 1, "timestamp": 2, "has_conflict": 3},
    "GetStateRequest": {"environment": 1},
    "GetStateResponse": {"state_json": 1, "latest_timestamp": 2},
    "GetEntityRequest": {"entity_id": 1, "environment": 2},
    "GetEntityResponse": {"entity_json": 1, "exists": 2},
}


def test_the_service_keeps_the_original_wire_interface():
    assert pb.DESCRIPTOR.package == "conflux.v1"
    service = pb.DESCRIPTOR.services_by_name["ConfluxService"]
    rpcs = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming)
            for m in service.methods}
    assert {k: rpcs[k] for k in ("WatchState", "SubmitOperation", "GetState", "GetEntity")} == {
        "WatchState": ("WatchRequest", "StateChange", True),
        "SubmitOperation": ("SubmitRequest", "SubmitResponse", False),
        "GetState": ("GetStateRequest", "GetStateResponse", False),
        "GetEntity": ("GetEntityRequest", "GetEntityResponse", False)}
    for message, fields in ORIGINAL.items():
        found = pb.DESCRIPTOR.message_types_by_name[message].fields_by_name
        assert {name: found[name].number for name in fields} == fields, message
    enum = pb.DESCRIPTOR.enum_types_by_name["ChangeType"]
    assert [(v.name, v.number) for v in enum.values] == [
        ("CHANGE_TYPE_UNSPECIFIED", 0), ("CHANGE_TYPE_SET_FIELD", 1),
        ("CHANGE_TYPE_INSERT_ENTITY", 2), ("CHANGE_TYPE_REMOVE_ENTITY", 3),
        ("CHANGE_TYPE_MOVE_ENTITY", 4), ("CHANGE_TYPE_SET_OVERRIDE", 5),
        ("CHANGE_TYPE_RESOLVE_CONFLICT", 6)]


# -- writes and reads ---------------------------------------------------------------------------

def test_submit_then_read_back_with_the_key_as_actor(live):
    answer = live.stub.SubmitOperation(
        set_field("service.grpc-a", "image", "web:1", actor_id="mallory", actor_class="human",
                  intent="roll out"), metadata=creds("zara"))
    assert answer.operation_id and answer.timestamp.startswith("hlc:") and answer.seq > 0
    assert not answer.has_conflict and not answer.duplicate
    got = live.stub.GetEntity(pb.GetEntityRequest(entity_id="service.grpc-a"),
                              metadata=creds("zara"))
    assert got.exists and json.loads(got.entity_json) == {"image": "web:1", "replicas": 1}
    log = requests.get(f"{live.url}/v1/ops", params={"after": answer.seq - 1, "limit": 1},
                       headers=key("zara"), timeout=10).json()["ops"][0]
    # the credentials name the actor, never the request's actor_id
    assert (log["op_id"], log["actor"], log["intent"]) == (answer.operation_id, "zara",
                                                          "roll out")
    missing = live.stub.GetEntity(pb.GetEntityRequest(entity_id="service.nobody"),
                                  metadata=creds("zara"))
    assert not missing.exists and missing.entity_json == "null"


def test_the_originals_operations(live):
    stub, zara = live.stub, creds("zara")
    inserted = stub.SubmitOperation(pb.SubmitRequest(insert_entity=pb.InsertEntityOp(
        entity_id="service.grpc-b", entity_type="service",
        initial_fields_json={"image": '"api:2"', "replicas": "3"})), metadata=zara)
    assert len(inserted.operation_ids) == 2 and inserted.operation_id == \
        inserted.operation_ids[0]
    # under a parent, at an int64 position; with no fields, an entity exists by its place
    under = stub.SubmitOperation(pb.SubmitRequest(insert_entity=pb.InsertEntityOp(
        entity_id="route.grpc-r", entity_type="route", parent_id="service.grpc-b",
        position=3)), metadata=zara)
    assert under.operation_id and not under.has_conflict
    place = requests.get(f"{live.url}/v1/tree", params={"entity": "route.grpc-r"},
                         headers=key("zara"), timeout=10).json()
    assert (place["parent"], place["position"]) == ("service.grpc-b", 3)
    assert stub.GetEntity(pb.GetEntityRequest(entity_id="route.grpc-r"), metadata=zara).exists
    stub.SubmitOperation(pb.SubmitRequest(set_override=pb.SetOverrideOp(
        entity_id="service.grpc-b", field="replicas", environment="staging",
        value_json="7")), metadata=zara)
    base = json.loads(stub.GetState(pb.GetStateRequest(), metadata=zara).state_json)
    staging = stub.GetState(pb.GetStateRequest(environment="staging"), metadata=zara)
    assert base["service.grpc-b"] == {"image": "api:2", "replicas": 3}
    assert json.loads(staging.state_json)["service.grpc-b"] == {"image": "api:2",
                                                                "replicas": 7}
    assert staging.latest_timestamp.startswith("hlc:") and staging.seq >= inserted.seq
    stub.SubmitOperation(pb.SubmitRequest(remove_entity=pb.RemoveEntityOp(
        entity_id="service.grpc-b")), metadata=zara)
    assert not stub.GetEntity(pb.GetEntityRequest(entity_id="service.grpc-b"),
                              metadata=zara).exists
    # Conflux's own operation types
    stub.SubmitOperation(pb.SubmitRequest(add_elements=pb.ElementsOp(
        entity_id="service.grpc-c", field="ports", elements_json="[80, 443]")), metadata=zara)
    stub.SubmitOperation(pb.SubmitRequest(remove_elements=pb.ElementsOp(
        entity_id="service.grpc-c", field="ports", elements_json="[80]")), metadata=zara)
    got = stub.GetEntity(pb.GetEntityRequest(entity_id="service.grpc-c"), metadata=zara)
    assert json.loads(got.entity_json)["ports"] == [443]


def test_a_review_conflict_is_reported_and_resolved(live):
    stub, zara = live.stub, creds("zara")
    first = stub.SubmitOperation(set_field("service.grpc-r", "tier", "web"), metadata=zara)
    assert not first.has_conflict
    # a write that saw nothing of the first (a Conflux op with its base, as JSON)
    second = stub.SubmitOperation(pb.SubmitRequest(op_json=json.dumps(
        {"type": "set_field", "entity_id": "service.grpc-r", "field": "tier",
         "value": "batch", "base": []})), metadata=zara)
    assert second.has_conflict
    conflicts = requests.get(f"{live.url}/v1/conflicts", headers=key("zara"),
                             timeout=10).json()["conflicts"]
    assert [c["entity_id"] for c in conflicts] == ["service.grpc-r"]
    settled = stub.SubmitOperation(pb.SubmitRequest(resolve_conflict=pb.ResolveConflictOp(
        entity_id="service.grpc-r", field="tier", value_json='"batch"')), metadata=zara)
    assert not settled.has_conflict
    assert requests.get(f"{live.url}/v1/conflicts", headers=key("zara"),
                        timeout=10).json()["conflicts"] == []
    got = stub.GetEntity(pb.GetEntityRequest(entity_id="service.grpc-r"), metadata=zara)
    assert json.loads(got.entity_json)["tier"] == "batch"


def test_a_batch_is_atomic_and_a_retry_is_not_applied_twice(live):
    stub, zara = live.stub, creds("zara")
    before = stub.GetState(pb.GetStateRequest(), metadata=zara).seq
    code, details = code_of(lambda: stub.SubmitBatch(pb.SubmitBatchRequest(operations=[
        set_field("service.grpc-d", "image", "ok"),
        set_field("service.grpc-d", "replicas", 9000)]), metadata=zara))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "replicas" in details
    assert stub.GetState(pb.GetStateRequest(), metadata=zara).seq == before
    first = stub.SubmitOperation(set_field("service.grpc-d", "image", "v1",
                                           operation_id="deploy-41"), metadata=zara)
    again = stub.SubmitOperation(set_field("service.grpc-d", "image", "v1",
                                           operation_id="deploy-41"), metadata=zara)
    assert (again.operation_id, again.seq, again.duplicate) == ("deploy-41", first.seq, True)
    code, _ = code_of(lambda: stub.SubmitOperation(
        set_field("service.grpc-d", "image", "v2", operation_id="deploy-41"), metadata=zara))
    assert code == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize("request_, words", [
    (pb.SubmitRequest(), "operation required"),
    (set_field("service.x", "image", None), None),
    (pb.SubmitRequest(set_field=pb.SetFieldOp(entity_id="service.x", field="image",
                                              value_json="{nope")), "value_json is not JSON"),
    (pb.SubmitRequest(set_field=pb.SetFieldOp(entity_id="service.x", field="image",
                                              value_json="[" * 200 + "]" * 200)), "nested"),
    (set_field("nosuchtype.x", "image", "a"), "nosuchtype"),
    (pb.SubmitRequest(insert_entity=pb.InsertEntityOp(entity_id="service.x",
                                                      entity_type="route",
                                                      initial_fields_json={"path": '"/"'})),
     "entity_type"),
    (pb.SubmitRequest(insert_entity=pb.InsertEntityOp(
        entity_id="service.x", entity_type="service", parent_id="service.y",
        initial_fields_json={"image": '"a"'})), "declares no children"),
    (pb.SubmitRequest(insert_entity=pb.InsertEntityOp(
        entity_id="route.x", entity_type="route", parent_id="service.nowhere",
        initial_fields_json={"path": '"/x"'})), "does not exist"),
])
def test_bad_operations_are_invalid_argument_and_write_nothing(live, request_, words):
    stub, zara = live.stub, creds("zara")
    before = stub.GetState(pb.GetStateRequest(), metadata=zara).seq
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitOperation(request_, metadata=zara)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    if words is not None:
        assert words in caught.value.details()
    trailing = dict(caught.value.trailing_metadata() or ())
    assert trailing.get("conflux-error-code")
    assert stub.GetState(pb.GetStateRequest(), metadata=zara).seq == before


def test_credentials_and_access_rules(live):
    stub = live.stub
    for metadata in ((), (("x-api-key", "not-a-key-0123456789"),)):
        code, _ = code_of(lambda: stub.GetState(pb.GetStateRequest(), metadata=metadata))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    before = stub.GetState(pb.GetStateRequest(), metadata=creds("reader-1")).seq
    code, details = code_of(lambda: stub.SubmitOperation(
        set_field("service.grpc-e", "image", "x"), metadata=creds("reader-1")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "reader-1" in details
    # the autoscaler may write route weights only
    code, _ = code_of(lambda: stub.SubmitOperation(set_field("service.grpc-e", "image", "x"),
                                                   metadata=creds("autoscaler-7")))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert stub.GetState(pb.GetStateRequest(), metadata=creds("reader-1")).seq == before
    code, _ = code_of(lambda: stub.GetState(pb.GetStateRequest(environment="nope"),
                                            metadata=creds("zara")))
    assert code == grpc.StatusCode.NOT_FOUND


# -- watching -----------------------------------------------------------------------------------

class Reader:
    """A stream read by a thread of its own into a queue; ``take`` waits, bounded in time."""

    def __init__(self, stream):
        self.stream, self.queue, self.error = stream, queue.Queue(), None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for message in self.stream:
                self.queue.put(message)
        except grpc.RpcError as exc:
            self.error = exc
        self.queue.put(None)

    def take(self, n, timeout=20.0) -> list:
        got, deadline = [], time.monotonic() + timeout
        while len(got) < n:
            try:
                message = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message is None:
                self.queue.put(None)
                break
            got.append(message)
        return got

    def cancel(self):
        self.stream.cancel()


def test_watch_filters_snapshot_and_resume(live):
    stub, zara = live.stub, creds("zara")
    stub.SubmitOperation(set_field("service.w-1", "image", "a:1"), metadata=zara)
    stub.SubmitOperation(set_field("route.w-1", "path", "/w"), metadata=zara)
    stub.SubmitOperation(set_field("service.w-2", "replicas", 4), metadata=zara)
    # the snapshot, then every change after it, with no gap and no repeat
    watch = Reader(stub.WatchState(pb.WatchRequest(
        entity_filter="service.w-", field_filter="image", include_initial_state=True),
        metadata=zara))
    snapshot = watch.take(1)  # service.w-2 has no image: only service.w-1's
    assert [(m.entity_id, m.field, json.loads(m.value_json), m.initial, m.environment)
            for m in snapshot] == [("service.w-1", "image", "a:1", True, "production")]
    stub.SubmitOperation(set_field("route.w-1", "path", "/other"), metadata=zara)  # filtered
    stub.SubmitOperation(set_field("service.w-2", "replicas", 5), metadata=zara)  # filtered
    wrote = stub.SubmitOperation(set_field("service.w-2", "image", "b:1", intent="go"),
                                 metadata=zara)
    change = watch.take(1)[0]
    assert (change.entity_id, change.field, json.loads(change.value_json), change.seq,
            change.operation_id, change.actor_id, change.intent, change.initial,
            change.change_type) == ("service.w-2", "image", "b:1", wrote.seq,
                                    wrote.operation_id, "zara", "go", False,
                                    pb.CHANGE_TYPE_SET_FIELD)
    assert snapshot[0].seq < wrote.seq - 2  # the three writes after it came as changes
    assert watch.take(1, timeout=0.5) == []
    watch.cancel()
    # resume after a sequence number: everything since, in order, once
    resumed = Reader(stub.WatchState(pb.WatchRequest(after_seq=wrote.seq - 3),
                                     metadata=zara))
    assert [m.seq for m in resumed.take(4, timeout=3)] == [wrote.seq - 2, wrote.seq - 1,
                                                             wrote.seq]
    resumed.cancel()
    # an environment's changes only, marked as the original's overrides
    staging = Reader(stub.WatchState(pb.WatchRequest(environment="staging"), metadata=zara))
    time.sleep(0.3)
    stub.SubmitOperation(set_field("service.w-2", "replicas", 6), metadata=zara)
    stub.SubmitOperation(pb.SubmitRequest(set_override=pb.SetOverrideOp(
        entity_id="service.w-2", field="replicas", environment="staging", value_json="2")),
        metadata=zara)
    assert [(m.environment, m.change_type, m.value_json) for m in staging.take(1)] == [
        ("staging", pb.CHANGE_TYPE_SET_OVERRIDE, "2")]
    staging.cancel()
    # a move is the original's move change, its value the place it asked for
    moves = Reader(stub.WatchState(pb.WatchRequest(entity_filter="route.w-"), metadata=zara))
    time.sleep(0.3)
    stub.SubmitOperation(pb.SubmitRequest(op_json=json.dumps(
        {"type": "move_entity", "entity_id": "route.w-1", "parent": "service.w-2",
         "position": "a"})), metadata=zara)
    change = moves.take(1)[0]
    assert (change.change_type, change.operation_type, json.loads(change.value_json)) == (
        pb.CHANGE_TYPE_MOVE_ENTITY, "move_entity", {"parent": "service.w-2", "position": "a"})
    moves.cancel()


def test_a_watcher_sees_only_what_its_actor_may_read(tmp_path):
    project = make_project(tmp_path)
    rbac = os.path.join(project, ".conflux", "rbac.toml")
    with open(rbac, "a") as fh:  # the reader may read services only
        fh.write('\n[role.services]\npermissions = [{ actions = ["read"], '
                 'resource = "service.*" }]\n\n[[assign]]\nactor = "pipeline:ci"\n'
                 'roles = ["services"]\n')
    keys = os.path.join(project, ".conflux", "api-keys.toml")
    from conflux.auth import hash_key
    with open(keys, "a") as fh:
        fh.write(f'\n[[key]]\nhash = "{hash_key("ci-key-0123456789abcdef")}"\n'
                 'actor = "ci"\nclass = "pipeline"\n')
    port = free_port()
    with daemon(project, "--grpc-port", str(port)):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ConfluxServiceStub(channel)
            ci = (("x-api-key", "ci-key-0123456789abcdef"),)
            code, _ = code_of(lambda: next(iter(stub.WatchState(pb.WatchRequest(),
                                                                 metadata=ci))))
            assert code == grpc.StatusCode.PERMISSION_DENIED  # all of it: no
            watch = Reader(stub.WatchState(pb.WatchRequest(entity_filter="s"), metadata=ci))
            time.sleep(0.3)
            stub.SubmitOperation(set_field("route.r", "path", "/x"), metadata=creds("zara"))
            stub.SubmitOperation(set_field("service.s", "image", "y"), metadata=creds("zara"))
            assert [m.entity_id for m in watch.take(1)] == ["service.s"]
            watch.cancel()
            # the state it reads is what it may read
            state = stub.GetState(pb.GetStateRequest(), metadata=ci)
            assert list(json.loads(state.state_json)) == ["service.s"] and state.seq == 2
            assert state.latest_timestamp.startswith("hlc:")
            code, _ = code_of(lambda: stub.GetEntity(pb.GetEntityRequest(entity_id="route.r"),
                                                     metadata=ci))
            assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_thousand_idle_watch_streams_hold_no_thread_each(live):
    stub, zara = live.stub, creds("zara")
    pid = _grpc_pid(live)
    before = len(os.listdir(f"/proc/{pid}/task"))
    streams = [stub.WatchState(pb.WatchRequest(entity_filter="service.many"), metadata=zara)
               for _ in range(1000)]
    time.sleep(2.0)  # every stream open and waiting
    during = len(os.listdir(f"/proc/{pid}/task"))
    assert during - before < 10, (before, during)
    wrote = stub.SubmitOperation(set_field("service.many", "image", "all"), metadata=zara)
    # every stream gets it
    seqs = [next(s).seq for s in streams]
    assert seqs == [wrote.seq] * 1000
    for s in streams:
        s.cancel()


def _grpc_pid(live) -> int:
    from test_daemon import _children, _comm

    found = wait_until(lambda: [p for p in _children(live.proc.pid)
                                if _comm(p) == "conflux-grpc"])
    assert found, "no conflux-grpc process"
    return found[0]


def test_a_watcher_that_stops_reading_is_ended_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFLUX_GRPC_STALL_S", "2")  # the daemon's (default 30 s)
    project = make_project(tmp_path)
    port = free_port()
    with daemon(project, "--grpc-port", str(port)):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub, zara = pb_grpc.ConfluxServiceStub(channel), creds("zara")
            stalled = stub.WatchState(pb.WatchRequest(), metadata=zara)  # never read
            time.sleep(0.3)
            big = "x" * (512 << 10)
            slowest = 0.0
            for i in range(40):  # 20 MiB of changes: far more than any window holds
                started = time.monotonic()
                last = stub.SubmitOperation(set_field(f"service.big-{i}", "image", big),
                                            metadata=zara)
                slowest = max(slowest, time.monotonic() - started)
            assert slowest < 5.0  # writes never wait for a watcher
            time.sleep(4)  # past the stall limit, the watcher still reading nothing
            reader = Reader(stalled)
            got = reader.take(41, timeout=30)
            error = reader.error
            assert error is not None and len(got) < 40, "the stalled watcher was not ended"
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            trailing = dict(error.trailing_metadata())
            assert trailing["conflux-error-code"] == "watch_stalled"
            hint = int(trailing["conflux-resume-after"])
            assert f"after_seq={hint}" in error.details()
            # what was received is a prefix of the log, and the hint no later than its end
            received = [m.seq for m in got]
            assert received == list(range(1, len(received) + 1)) and hint <= received[-1]
            # resuming after the last one received gets every later change, once
            after = received[-1]
            resumed = Reader(stub.WatchState(pb.WatchRequest(after_seq=after), metadata=zara))
            seqs = [m.seq for m in resumed.take(last.seq - after, timeout=30)]
            assert seqs == list(range(after + 1, last.seq + 1))
            resumed.cancel()


def test_tls_and_mutual_tls(tmp_path):
    files, project = tls_project(tmp_path)
    read = lambda name: (tmp_path / name).read_bytes()  # noqa: E731
    tls = ("--tls-cert", files["server.pem"], "--tls-key", files["server.key"])
    port = free_port()
    with daemon(project, *tls, "--grpc-port", str(port), scheme="https",
                verify=files["ca.pem"]):
        trust = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
        with grpc.secure_channel(f"127.0.0.1:{port}", trust) as channel:
            stub = pb_grpc.ConfluxServiceStub(channel)
            assert stub.SubmitOperation(set_field("service.t", "image", "x"),
                                        metadata=creds("zara")).seq == 1
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:  # no TLS: no answer
            code, _ = code_of(lambda: pb_grpc.ConfluxServiceStub(plain).GetState(
                pb.GetStateRequest(), metadata=creds("zara"), timeout=5))
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    port = free_port()
    with daemon(project, *tls, "--client-ca", files["ca.pem"], "--grpc-port", str(port),
                scheme="https", verify=files["ca.pem"],
                cert=(files["client.pem"], files["client.key"])):
        mutual = grpc.ssl_channel_credentials(read("ca.pem"), read("client.key"),
                                              read("client.pem"))
        with grpc.secure_channel(f"127.0.0.1:{port}", mutual) as channel:
            stub = pb_grpc.ConfluxServiceStub(channel)
            wrote = stub.SubmitOperation(set_field("service.t", "image", "y"))  # no key
            assert wrote.seq == 2
            watch = Reader(stub.WatchState(pb.WatchRequest(after_seq=1)))
            change = watch.take(1)[0]
            assert (change.seq, change.actor_id, change.actor_class) == (2, "ci-pipeline",
                                                                         "pipeline")
            watch.cancel()
        trust = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
        with grpc.secure_channel(f"127.0.0.1:{port}", trust) as channel:  # no certificate
            code, _ = code_of(lambda: pb_grpc.ConfluxServiceStub(channel).GetState(
                pb.GetStateRequest(), metadata=creds("zara"), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE


def test_the_grpc_port_from_config_and_a_port_in_use(tmp_path):
    project = make_project(tmp_path)
    port = free_port()
    with open(os.path.join(project, ".conflux", "config.toml"), "a") as fh:
        fh.write(f"\n[daemon]\ngrpc_port = {port}\n")
    with daemon(project):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ConfluxServiceStub(channel)
            assert stub.GetState(pb.GetStateRequest(), metadata=creds("zara")).seq == 0
        # a second daemon cannot take the port: it says so and does not start
        run = subprocess.run([sys.executable, "-m", "conflux", "--dir", project, "daemon",
                              "--port", str(free_port()), "--grpc-port", str(port)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        assert f"--grpc-port {port}" in run.stderr.strip().splitlines()[-1]
    for bad, words in (("0", "TCP port"), ('"x"', "TCP port")):
        with open(os.path.join(project, ".conflux", "config.toml"), "w") as fh:
            fh.write(f"[daemon]\ngrpc_port = {bad}\n")
        run = subprocess.run([sys.executable, "-m", "conflux", "--dir", project, "daemon"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and words in run.stderr and "config.toml" in run.stderr


def test_conflux_watch_over_grpc(live):
    stub, zara = live.stub, creds("zara")
    first = stub.SubmitOperation(set_field("service.cli-w", "image", "one"), metadata=zara)
    stub.SubmitOperation(set_field("service.cli-w", "replicas", 3), metadata=zara)
    stub.SubmitOperation(set_field("service.cli-w", "image", "two", intent="bump"),
                         metadata=zara)
    base = [sys.executable, "-m", "conflux", "--dir", live.project, "watch", "--grpc",
            f"127.0.0.1:{live.port}", "--api-key", KEYS["zara"][1], "--after",
            str(first.seq - 1), "--entity", "service.cli-w", "--field", "image",
            "--timeout", "3"]
    run = subprocess.run(base + ["-o", "json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    entries = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(e["field"], e["value"], e["actor"], e["intent"]) for e in entries] == [
        ("image", "one", "zara", ""), ("image", "two", "zara", "bump")]
    assert entries[0]["seq"] == first.seq and entries[0]["op_id"] == first.operation_id
    plain = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 2
    assert "service.cli-w.image \"two\"  (bump)" in plain.stdout
    denied = subprocess.run(base[:-2] + ["--timeout", "2", "--api-key", "wrong-key-0123456789"],
                            capture_output=True, text=True, timeout=60)
    assert denied.returncode == 2 and "UNAUTHENTICATED" in denied.stderr
    assert len(denied.stderr.strip().splitlines()) == 1


def test_without_auth_the_request_names_its_actor(tmp_path):
    project = make_project(tmp_path, rbac=False)
    with open(os.path.join(project, ".conflux", "config.toml"), "a") as fh:
        fh.write('\n[daemon]\nauth = "none"\n')
    port = free_port()
    with daemon(project, "--grpc-port", str(port)):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ConfluxServiceStub(channel)
            wrote = stub.SubmitOperation(set_field("service.n", "image", "x",
                                                   actor_id="ci-bot", actor_class="pipeline"))
            change = Reader(stub.WatchState(pb.WatchRequest(after_seq=wrote.seq - 1),
                                            metadata=(("x-conflux-actor", "watcher"),)))
            got = change.take(1)[0]
            assert (got.actor_id, got.actor_class) == ("ci-bot", "pipeline")
            change.cancel()
            code, details = code_of(lambda: stub.SubmitOperation(set_field("service.n",
                                                                           "image", "y")))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "actor" in details
