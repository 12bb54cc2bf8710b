"""Operations as clients send them: checked, completed and turned into the kernel's ``Op``.

Everything that can be checked without the store is checked here, before any write
transaction: shape, known environment, entity type and field, value types and ranges, and
signatures.
"""

from __future__ import annotations

import os
import re

from conflux.actors import Actor
from conflux.codec import packb
from conflux.engine.settings import now_ms
from conflux.errors import InputError, ValidationError
from conflux.limits import value_problem
from conflux.schema import _clip, is_utf8
from conflux.store import PLACE_KEY


_OP_KEYS = frozenset({"type", "entity_id", "field", "value", "elements", "env", "intent",
                      "op_id", "hlc", "base", "observed", "override", "signature", "key_id",
                      "parent", "position"})

#: The longest position text of a move (a fractional index is a few characters).
_MAX_POSITION = 256


_MAX_OP_ID = 128


# The op ids stores generate (``core.stamp_ops``): node id, dash, sequence number in hex. The
# merge core reads an or-set tag of this form as the node's causal position (a remove that saw
# it kills that node's earlier adds of the element too), so clients may not send one.
_STORE_OP_ID = re.compile(r"[0-9a-f]{8}-[1-9a-f][0-9a-f]{0,15}")


_MAX_INTENT = 4096


def _plain_extras(raw: dict) -> bool:
    env, intent = raw.get("env", "-"), raw.get("intent", "")
    return type(env) is str and env != "" and type(intent) is str


def _packed(value, label) -> bytes:
    try:
        return packb(value, use_bin_type=True)
    except (UnicodeEncodeError, ValueError, TypeError, OverflowError) as exc:
        raise ValidationError(f"{label}: the value cannot be stored ({exc})") from None


def _located(fn, value, where):
    try:
        return fn(value)
    except ValidationError as exc:
        if where:
            exc.message = where + exc.message
            exc.args = (exc.message,)
        raise


def _within(spec, value, label) -> None:
    """Refuse a value breaking its field's own constraints (docs/concepts.md, validation)."""
    if spec.min is None and spec.max is None and spec.pattern is None and spec.one_of is None:
        return
    broken = spec.violations(value, label="element" if spec.kind == "list" else "value")
    if broken:
        raise ValidationError(f"{label}: {'; '.join(broken)}", field=spec.name)


def _natural(value):
    return (type(value).__name__, value if not isinstance(value, (dict, list)) else repr(value))


class Operations:
    """Checking client operations (a part of ``Engine``)."""

    def common_shapes(self, raw_ops: list, actor: Actor) -> list[bool]:
        """Which of ``raw_ops`` (client op dicts) the compiled core builds as they are: the
        common shape (a ``set_field`` or ``add_elements`` of plain values with nothing but
        ``env``, ``intent`` and a printable ASCII ``op_id`` besides, on a declared field,
        within its constraints), checked
        without Python code. The REST API holds only the others to its request-body schemas:
        an op of the common shape fits them by construction. PERF: the schema check, in
        Python, cost about 27 us per op of a 1,000-op batch, more than the whole commit;
        this costs about 1 us. On the pure-Python core no op is taken here."""
        ops = self.core.prepare_ops(raw_ops, self._table, actor.id, actor.cls,
                                    lambda raw, index: None)
        # the core reads a missing, null or empty env as the base and a null intent as none;
        # the body schemas want them absent or text
        return [op is not None and _plain_extras(raw) for op, raw in zip(ops, raw_ops)]

    def _fast_table(self):
        """What the compiled ``prepare_ops`` needs to build a common op without Python:
        ``(env ids, base env, {type: (type id, {field: (field id, record kind, number tag,
        value kind, limits)})})``, the value kinds being the kernel layout's (``VALUE_KINDS``:
        int, float, string, bool, duration, map; ``VALUE_ELEMENTS`` + the item's kind for set
        and grow fields; ``VALUE_OTHER`` anything else, sent to the full validator); limits
        None, or the field's own constraints on a value (or each element) in normal form,
        ``(min, max, allowed values, pattern's search)`` with None for those it has not: a
        value breaking one goes to the full validator, which refuses it."""
        core = self.core
        vkinds = core.VALUE_KINDS
        other = core.VALUE_OTHER
        types = {}
        for type_name, et in self.schema.types.items():
            fields = {}
            for f in et.fields.values():
                kind = self._kinds[(type_name, f.name)]
                num = core.NUM_NONE
                if kind in (core.MAX, core.MIN):
                    num = core.NUM_FLOAT if f.kind == "float" else core.NUM_INT
                if f.is_set:
                    item = vkinds.get(f.item_kind, other)
                    # an item is a scalar: a map item goes to the full validator
                    vkind = core.VALUE_ELEMENTS + item if item not in (other, core.VALUE_MAP) \
                        else other
                else:
                    vkind = vkinds.get(f.kind, other)
                limits = None
                if f.min is not None or f.max is not None or f.pattern is not None or \
                        f.one_of is not None:
                    try:
                        allowed = None if f.one_of is None else frozenset(f.one_of)
                    except TypeError:  # unhashable choices: the validator compares them
                        allowed, vkind = None, other
                    limits = (f.min, f.max, allowed,
                              None if f.pattern is None else f.pattern.search)
                    if vkind == core.VALUE_MAP:
                        vkind = other
                fields[f.name] = (self._field_ids[(type_name, f.name)], kind, num, vkind,
                                  limits)
            types[type_name] = (self._type_ids[type_name], fields)
        return (dict(self._env_ids), self.schema.base_env, types,
                self.settings.max_value_bytes)

    def prepare(self, raw: dict, actor: Actor, where: str = ""):
        """Validate one operation as sent by a client and turn it into a core ``Op``.

        Everything that can be checked without the store is checked here, before any write
        transaction: shape, known environment, entity type and field, value types and ranges.
        """
        core = self.core
        if not isinstance(raw, dict):
            raise ValidationError(f"{where}an operation must be an object, got "
                                  f"{type(raw).__name__}")
        unknown = raw.keys() - _OP_KEYS
        if unknown:
            names = sorted(_clip(str(k)) for k in unknown)
            raise ValidationError(f"{where}unknown key(s) {_clip(', '.join(names), 200)}"
                                  f" (allowed: {', '.join(sorted(_OP_KEYS))})",
                                  field=names[0])
        type_name = raw.get("type")
        op_type = core.OP_TYPES.get(type_name) if isinstance(type_name, str) else None
        if op_type is None or op_type == core.PROMOTE:
            allowed = ", ".join(n for n in core.OP_TYPES if n != "promote")
            raise ValidationError(f"{where}type {type_name!r} is not an operation type "
                                  f"({allowed}; promotions go through promote)", field="type")
        env = raw.get("env") or self.schema.base_env
        if not isinstance(env, str) or env not in self.schema.parents:
            raise ValidationError(f"{where}unknown environment {_clip(repr(env))} (declared: "
                                  f"{', '.join(self.schema.environments)})", field="env")
        entity_id = raw.get("entity_id")
        if not isinstance(entity_id, str):
            raise ValidationError(f"{where}entity_id must be a string like 'service.checkout'",
                                  field="entity_id")
        self.schema.split_entity_id(entity_id)
        if op_type == core.MOVE_ENTITY:
            op = self._move_op(env, entity_id, raw, where)
        else:
            for key in ("parent", "position"):
                if raw.get(key) is not None:
                    raise ValidationError(f"{where}{key} goes with move_entity", field=key)
            op = self._field_op(op_type, env, entity_id, raw.get("field"), raw, where)
        op.actor, op.actor_class = actor.id, actor.cls
        intent = raw.get("intent", "")
        if intent is None:
            intent = ""
        if not isinstance(intent, str) or len(intent) > _MAX_INTENT or not is_utf8(intent):
            raise ValidationError(f"{where}intent must be text of at most {_MAX_INTENT} "
                                  "characters", field="intent")
        op.intent = intent
        op_id = raw.get("op_id")
        if op_id is not None:
            if (not isinstance(op_id, str) or not op_id or len(op_id.encode()) > _MAX_OP_ID
                    or not op_id.isprintable()):
                raise ValidationError(f"{where}op_id must be a non-empty printable string of at "
                                      f"most {_MAX_OP_ID} bytes", field="op_id")
            if _STORE_OP_ID.fullmatch(op_id):
                raise ValidationError(f"{where}op_id {op_id!r}: ids of the form <node>-<seq> (8 "
                                      "hex digits, a dash, hex digits) are reserved for the ids "
                                      "stores generate; pick another form", field="op_id")
            op.op_id = op_id
        if raw.get("hlc") is not None:
            op.hlc = core.hlc_parse(raw["hlc"])
            if op.hlc == 0:
                raise ValidationError(f"{where}hlc must be positive", field="hlc")
        override = raw.get("override", False)
        if not isinstance(override, bool):
            raise ValidationError(f"{where}override must be true or false", field="override")
        op.override = override
        base = raw.get("base")
        if base is not None:
            if not isinstance(base, list) or not all(isinstance(b, str) for b in base):
                raise ValidationError(f"{where}base must be a list of op ids", field="base")
            if op_type not in (core.SET_FIELD, core.UNSET_FIELD, core.RESOLVE):
                raise ValidationError(f"{where}base applies to set_field, unset_field and "
                                      "resolve", field="base")
            op.base = sorted(set(base))
        if raw.get("signature") is not None or raw.get("key_id") is not None:
            sig, key_id = raw.get("signature"), raw.get("key_id")
            if not isinstance(sig, str) or not isinstance(key_id, str):
                raise ValidationError(f"{where}signature and key_id go together, as text",
                                      field="signature")
            op.signature, op.key_id = sig, key_id
        return op

    def _move_op(self, env, entity_id, raw, where=""):
        """A ``move_entity``: the entity goes under ``parent`` (None: it is a root) at
        ``position`` (text, a fractional index such as ``"a0"``, or an integer; None: after
        its siblings that have one). The parent's type must declare children of the entity's
        type (``[entity.<type>.children]``). What the store must be asked (the parent exists,
        the move makes no cycle) is checked when it commits (``Commits._check_moves``)."""
        core, schema = self.core, self.schema
        if env != schema.base_env:
            raise ValidationError(f"{where}move_entity: the entity tree is kept once, in the "
                                  f"base environment {schema.base_env!r}, and every "
                                  "environment shows it: leave env out", field="env")
        for key in ("field", "value", "elements", "observed"):
            if raw.get(key) is not None:
                raise ValidationError(f"{where}move_entity takes no {key}", field=key)
        if raw.get("override"):
            raise ValidationError(f"{where}move_entity takes no override", field="override")
        type_name = entity_id.partition(".")[0]
        parent = raw.get("parent")
        if parent is not None:
            if not isinstance(parent, str):
                raise ValidationError(f"{where}parent must be an entity id like 'route.api', "
                                      "or null for a root", field="parent")
            parent_type, _ = schema.split_entity_id(parent)
            if parent == entity_id:
                raise ValidationError(f"{where}{entity_id} cannot be its own parent",
                                      field="parent")
            if schema.collection(parent_type, type_name) is None:
                allowed = schema.parent_types(type_name)
                raise ValidationError(
                    f"{where}{entity_id} cannot go under {parent}: entity type "
                    f"{parent_type!r} declares no children of type {type_name!r} (schema: "
                    f"[entity.{parent_type}.children]; {type_name} entities may go under "
                    f"{', '.join(allowed) if allowed else 'no type'})", field="parent")
        position = raw.get("position")
        if position is not None and not (
                (isinstance(position, str) and len(position) <= _MAX_POSITION
                 and is_utf8(position))
                or (type(position) is int and -(1 << 63) <= position < (1 << 63))):
            raise ValidationError(f"{where}position must be text of at most {_MAX_POSITION} "
                                  "characters (a fractional index such as 'a0') or a 64-bit "
                                  "integer", field="position")
        op = core.Op()
        op.type, op.env, op.entity = core.MOVE_ENTITY, env, entity_id
        self._place(op, [parent, position])
        return op

    def _place(self, op, value) -> None:
        """A move's kind, key and packed value."""
        op.kind = self.core.PLACE
        op.key = self._key(op.env, op.entity, None)[:-2] + PLACE_KEY
        op.value = value
        op.vbytes = packb(value, use_bin_type=True)

    def _field_op(self, op_type, env, entity_id, field_name, raw, where="", *,
                  constrained=True):
        """A core ``Op`` for one entity or field, with value, kind and key material set.
        Values bigger than ``[limits] max_value_bytes`` or nested too deep are refused before
        they are copied or encoded (a YAML alias can make a small document a huge value).

        With ``constrained``, a value (or added element) that breaks its field's own
        constraints (``min``, ``max``, ``pattern``, ``one_of``) is refused: it could only ever
        be recorded as a violation. A promotion copies resolved values as they are.

        A ``remove_elements`` or an ``add_elements`` may name the add tags it observed
        (``observed``, one list per element); otherwise it observes every live tag of its
        elements in this store. A client's list is only checked for shape here: when the op
        is accepted, the core keeps its plain tags (client op ids) as named, so the op kills
        them whether it arrives before or after them, and its store-generated tags only if
        live here, so a client cannot kill what this store does not hold (see
        ``_bind_observed`` in the core).
        """
        core = self.core
        op = core.Op()
        op.type, op.env, op.entity = op_type, env, entity_id
        type_name = entity_id.partition(".")[0]
        if op_type == core.DELETE_ENTITY:
            if field_name is not None:
                raise ValidationError(f"{where}delete_entity takes no field", field="field")
            for key in ("value", "elements"):
                if raw.get(key) is not None:
                    raise ValidationError(f"{where}delete_entity takes no {key}", field=key)
            op.kind = core.ENTITY
            op.key = self._key(env, entity_id, None)
            return op
        if not isinstance(field_name, str):
            raise ValidationError(f"{where}{core.OP_NAMES[op_type]} needs a field",
                                  field="field")
        spec = self.schema.field(type_name, field_name)
        op.field = field_name
        op.kind = self._kinds[(type_name, field_name)]
        op.key = self._key(env, entity_id, field_name)
        label = f"{where}{entity_id}.{field_name}"
        if op_type in (core.SET_FIELD, core.RESOLVE):
            if spec.is_set:
                raise ValidationError(f"{label} is a {spec.merge} field: use add_elements or "
                                      "remove_elements", field=field_name)
            if op_type == core.RESOLVE and spec.merge != "review":
                raise ValidationError(f"{label} is a {spec.merge} field: only review fields "
                                      "have conflicts to resolve", field=field_name)
            if raw.get("value") is None:
                raise ValidationError(f"{label}: {core.OP_NAMES[op_type]} needs a value (use "
                                      "unset_field to remove one)", field=field_name)
            if raw.get("elements") is not None:
                raise ValidationError(f"{label}: elements go with add_elements and "
                                      "remove_elements", field=field_name)
            self._check_value(raw["value"], label, field_name)
            value = _located(spec.coerce, raw["value"], where)
            if constrained:
                _within(spec, value, label)
            op.value = value
            op.vbytes = _packed(value, label)
            self._check_stored(len(op.vbytes), label, field_name)
            if op.kind in (core.MAX, core.MIN):
                op.num_tag = core.NUM_FLOAT if spec.kind == "float" else core.NUM_INT
        elif op_type == core.UNSET_FIELD:
            if spec.merge == "grow":
                raise ValidationError(f"{label} is a grow-only field: it cannot be unset",
                                      field=field_name)
            for key in ("value", "elements"):
                if raw.get(key) is not None:
                    raise ValidationError(f"{label}: unset_field takes no {key}",
                                          field=field_name)
        else:  # add_elements / remove_elements
            name = core.OP_NAMES[op_type]
            if not spec.is_set:
                raise ValidationError(f"{label} is a {spec.merge} field: {name} needs a set or "
                                      "grow field (use set_field)", field=field_name)
            if op_type == core.REMOVE_ELEMENTS and spec.merge == "grow":
                raise ValidationError(f"{label} is grow-only: elements cannot be removed",
                                      field=field_name)
            elements = raw.get("elements")
            if raw.get("value") is not None:
                raise ValidationError(f"{label}: {name} takes elements, not value",
                                      field=field_name)
            if not isinstance(elements, list) or not elements:
                raise ValidationError(f"{label}: {name} needs a non-empty list of elements",
                                      field=field_name)
            self._check_value(elements, label, field_name)
            by_bytes = {}
            for item in elements:
                item = _located(spec.coerce_element, item, where)
                by_bytes[_packed(item, label)] = item
            op.ebytes = sorted(by_bytes)
            self._check_stored(sum(map(len, op.ebytes)), label, field_name)
            op.elements = [by_bytes[b] for b in op.ebytes]
            if constrained and op_type == core.ADD_ELEMENTS:
                _within(spec, op.elements, label)
            observed = raw.get("observed")
            if observed is not None:
                if spec.merge == "grow" or not (
                        isinstance(observed, list) and len(observed) == len(elements)
                        and all(isinstance(o, list) and all(isinstance(t, str) for t in o)
                                for o in observed)):
                    raise ValidationError(f"{label}: observed must be a list of op-id lists, "
                                          f"one per element of the {name} on a set field",
                                          field="observed")
                paired = {}
                for item, tags in zip(elements, observed):
                    key = packb(spec.coerce_element(item), use_bin_type=True)
                    paired[key] = sorted(set(paired.get(key, [])) | set(tags))
                op.observed = [paired[b] for b in op.ebytes]
        return op

    def _check_value(self, value, label, field_name) -> None:
        """A value as sent, before anything copies or encodes it (a walk that stops at the
        bounds): the depth, and the size as a lower bound of what it will be stored as."""
        problem = value_problem(value, self.settings.max_value_bytes)
        if problem is not None:
            raise ValidationError(f"{label}: {problem}", field=field_name)

    def _check_stored(self, size: int, label, field_name) -> None:
        limit = self.settings.max_value_bytes
        if size > limit:
            raise ValidationError(f"{label}: the value is {size:,} bytes stored, larger than "
                                  f"{limit:,} bytes, the most a field value may be (config.toml: "
                                  "[limits] max_value_bytes)", field=field_name)

    def signatures_to_check(self, raw_ops, actor) -> bool:
        """Whether a batch has signatures to verify (or must have them)."""
        return actor.cls in self.settings.require_signatures or any(
            isinstance(op, dict) and op.get("signature") is not None for op in raw_ops)

    def check_signatures(self, raw_ops, actor) -> None:
        """Validate a batch and verify its signatures, writing nothing (a daemon worker does
        this before handing the batch to the commit service, so that the one service process
        does not spend its time on Ed25519)."""
        self._maker(raw_ops, actor)()

    def _check_signatures(self, ops, actor) -> None:
        """Refuse the batch if a signature does not hold, or if ``actor``'s class must sign
        (``[signatures] require``) and an operation is unsigned (``conflux.signing``)."""
        required = actor.cls in self.settings.require_signatures
        signed = [i for i, op in enumerate(ops) if op.signature is not None]
        if not signed and not required:
            return  # PERF: the common case costs one pass
        from conflux.signing import SignatureRefused, content_of_op

        where = (lambda i: "") if len(ops) == 1 else (lambda i: f"op {i}: ")
        if required and len(signed) < len(ops):
            i = next(i for i, op in enumerate(ops) if op.signature is None)
            raise SignatureRefused(f"{where(i)}operations by {actor.cls} actors must be signed "
                                   "(config.toml: [signatures] require)")
        registry, now = self.signatures.refresh(), now_ms()
        for i in signed:
            op = ops[i]
            if not op.op_id or not op.hlc:
                raise SignatureRefused(f"{where(i)}a signed operation carries its own op_id "
                                       "and hlc: both are signed")
            if op.base is None and op.kind == self.core.STRATEGY_KINDS["review"] and \
                    op.type in (self.core.SET_FIELD, self.core.UNSET_FIELD):
                raise SignatureRefused(f"{where(i)}a signed write to a review field carries "
                                       "its base (the op ids it saw; [] for none): the store "
                                       "would otherwise bind one the signature does not cover")
            reason = registry.check(content_of_op(self, op), op.signature, op.key_id,
                                    actor.id, actor.cls, now, refresh=False)
            if reason is not None:
                hint = (" (sign the content as the store logs it: values in normal form, "
                        "durations in ms, refs as full ids; see conflux/signing.py)"
                        if reason.startswith("the signature does not match") else "")
                raise SignatureRefused(f"{where(i)}signature refused: {reason}{hint}",
                                       field="signature")

    @property
    def signatures(self):
        """The key registry (``keys.json``), read again whenever the file changes."""
        if self._signatures is None:
            from conflux.signing import REGISTRY_FILE, Registry

            self._signatures = Registry(os.path.join(self.root, REGISTRY_FILE))
        return self._signatures

    _signatures = None

    def sign(self, op: dict, actor: Actor, signing_key, *, key_file: str = "the key") -> dict:
        """Complete a client op with what its signature covers — its environment, an op id
        (``cli-<uuid>`` when it has none), its HLC and, for a review field, the base it
        supersedes — and sign it with ``signing_key`` (``conflux.signing``), whose public
        key must be in the project's registry. A retry of a logged op (same op id, same
        actor) signs the logged HLC and base again, so that it is that op."""
        import uuid

        from conflux.signing import public_key_text, sign_op

        public = public_key_text(signing_key)
        key = self.signatures.by_public_key(public)
        if key is None:
            raise InputError(f"{key_file}: this key is not in the registry; register it with "
                             f"'conflux keys register --key-id ID --actor {actor.id} "
                             f"--public-key {public}'")
        op["env"] = op.get("env") or self.schema.base_env
        op["op_id"] = op.get("op_id") or f"cli-{uuid.uuid4()}"
        logged = self.op(op["op_id"])
        if logged is not None and logged.actor != actor.id:
            logged = None  # not a retry: the engine refuses the op id
        op["hlc"] = logged.hlc if logged is not None else self.next_hlc()
        spec = (self.schema.field(op["entity_id"].partition(".")[0], op["field"])
                if op.get("field") is not None else None)
        if spec is not None and spec.merge == "review" and op["type"] in ("set_field", "unset_field") and \
                op.get("base") is None:
            op["base"] = (list(logged.base or []) if logged is not None else
                          self.review_base(op["entity_id"], op["field"], op["env"]))
        sign_op(op, signing_key, key.key_id, actor.id)
        return op
