"""A writer process for the durability tests (tests/test_durability.py).

    python _writer.py PROJECT_DIR TAG [SECONDS [journal]]

Opens the project through the Engine API and applies batch after batch, each one
``apply()`` call of ``BATCH_OPS`` operations with known content (see ``batch_ops``). After
each ``apply()`` returns it prints ``ack <n>`` and flushes, so the test knows which batches
were acknowledged before it kills this process with SIGKILL. It stops by itself after
SECONDS (default 60) so that it can never outlive a test run that lost track of it. With
``journal`` it commits as the daemon's commit service does (``Engine(journal=True)``).

The test imports this module for ``batch_ops``/``expected_fields``, so the content is defined
in one place.
"""

from __future__ import annotations

import sys
import time

BATCH_OPS = 50
FIELDS_PER_ENTITY = 5  # image, replicas, env_vars, ports, labels
ENTITIES_PER_BATCH = BATCH_OPS // FIELDS_PER_ENTITY


def entity_id(tag: str, n: int, k: int) -> str:
    return f"service.{tag}-b{n}-e{k}"


def op_id(tag: str, n: int, i: int) -> str:
    return f"{tag}-b{n}-{i}"


def expected_fields(tag: str, n: int, k: int) -> dict:
    """The resolved fields of entity ``k`` of batch ``n`` once the batch is applied."""
    return {
        "image": f"registry.local/{tag}:{n}.{k}",
        "replicas": 1 + (n * 7 + k) % 400,                  # max field, within 0..500
        "env_vars": {"BATCH": str(n), "K": str(k), "WRITER": tag},
        "ports": sorted([8000 + k, 9000 + n % 1000]),      # observed-remove set
        "labels": sorted([f"batch-{n}", f"writer-{tag}"]),  # grow-only set
    }


def batch_ops(tag: str, n: int) -> list[dict]:
    """The ``BATCH_OPS`` operations of batch ``n``, with client op ids ``<tag>-b<n>-<i>``."""
    ops = []
    for k in range(ENTITIES_PER_BATCH):
        want = expected_fields(tag, n, k)
        eid = entity_id(tag, n, k)
        ops.append({"type": "set_field", "entity_id": eid, "field": "image",
                    "value": want["image"]})
        ops.append({"type": "set_field", "entity_id": eid, "field": "replicas",
                    "value": want["replicas"]})
        ops.append({"type": "set_field", "entity_id": eid, "field": "env_vars",
                    "value": want["env_vars"]})
        ops.append({"type": "add_elements", "entity_id": eid, "field": "ports",
                    "elements": want["ports"]})
        ops.append({"type": "add_elements", "entity_id": eid, "field": "labels",
                    "elements": want["labels"]})
    for i, op in enumerate(ops):
        op["op_id"] = op_id(tag, n, i)
        op["intent"] = f"durability batch {n}"
    assert len(ops) == BATCH_OPS
    return ops


def main(argv: list[str]) -> int:
    from conflux.actors import Actor
    from conflux.engine import Engine

    project, tag = argv[0], argv[1]
    seconds = float(argv[2]) if len(argv) > 2 else 60.0
    engine = Engine(project, journal=len(argv) > 3 and argv[3] == "journal")
    actor = Actor(f"writer-{tag}", "service")
    print(f"ready {engine.core.IMPLEMENTATION}", flush=True)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        engine.apply(batch_ops(tag, n), actor)
        print(f"ack {n}", flush=True)
        n += 1
    print("done", flush=True)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
