"""The shape of the package, checked on the installed modules: each check is a small function
over one graph of who imports what (``module_graph``), read with ``ast`` from the source, so
that an import inside a function counts as much as one at the top (it runs as soon as the
function does)."""

from __future__ import annotations

import ast
import functools
import importlib.util
import pathlib
from dataclasses import dataclass, field

PACKAGE = "conflux"


@dataclass
class Module:
    """One module of the package: its file, and every module it imports (absolute names, as
    written or resolved from a relative import) with the line of the first such import."""

    name: str
    path: pathlib.Path
    is_package: bool
    imports: dict[str, int] = field(default_factory=dict)

    def where(self, line: int) -> str:
        return f"{self.path.relative_to(package_dir().parent)}:{line}"


def package_dir() -> pathlib.Path:
    """The installed package's directory (not the source tree's)."""
    spec = importlib.util.find_spec(PACKAGE)
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _module_name(path: pathlib.Path, root: pathlib.Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool):
    """``(absolute module name, names taken from it, line)`` of every import statement
    anywhere in ``tree`` (functions included; blocks under ``if TYPE_CHECKING:`` excluded:
    they never run). Whether a name taken is a module of its own is decided later."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            yield base, tuple(alias.name for alias in node.names), node.lineno
        stack.extend(ast.iter_child_nodes(node))


@functools.cache
def module_graph() -> dict[str, Module]:
    """Every Python module of the installed package by name. ``imports`` of a module name the
    modules of the package it imports (``from conflux.x import y`` names ``conflux.x.y`` when
    that is a module, else ``conflux.x``) and any other top-level import by its full name."""
    root = package_dir()
    found: dict[str, tuple[Module, ast.AST]] = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name, is_package = _module_name(path, root)
        tree = ast.parse(path.read_bytes(), filename=str(path))
        found[name] = (Module(name, path, is_package), tree)
    for name, (module, tree) in found.items():
        for base, names, line in _imports(tree, name, module.is_package):
            targets = {f"{base}.{n}" if f"{base}.{n}" in found else base for n in names}
            targets = sorted(targets or {base})
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    while target not in found and "." in target:
                        target = target.rsplit(".", 1)[0]  # a name defined in a module
                if target != name:
                    module.imports.setdefault(target, line)
    return {name: module for name, (module, _) in found.items()}


def _ancestor(package: str, name: str) -> bool:
    return name.startswith(package + ".")


def dependencies(graph: dict[str, Module], name: str) -> list[str]:
    """The modules of ``graph`` that ``name`` depends on. A module's import of a package it
    is part of (``conflux.formats.builtin`` of ``conflux.formats``) is not counted: Python
    imports that package before the module anyway, so the edge adds no order of its own; a
    package importing its modules, and the modules taking shared names from their package, is
    how a package is built."""
    return sorted(t for t in graph[name].imports if t in graph and not _ancestor(t, name))


def import_cycles(graph: dict[str, Module]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for each group of modules that import each other,
    directly or through others (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []

    def edges(name):
        return dependencies(graph, name)

    def visit(start):
        # iterative: a recursion per module could run out of stack on a deep chain
        work = [(start, iter(edges(start)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            name, pending = work[-1]
            for target in pending:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges(target))))
                    break
                if target in on_stack:
                    low[name] = min(low[name], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[name])
                if low[name] == index[name]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == name:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return [_cycle_through(graph, group) for group in groups]


def _cycle_through(graph: dict[str, Module], group: list[str]) -> list[str]:
    """A shortest import path from the group's first module back to itself, inside it."""
    members, start = set(group), group[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for name in frontier:
            for target in dependencies(graph, name):
                if target not in members or target in came_from:
                    continue
                came_from[target] = name
                if target == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {group}")  # Tarjan's groups always have one


def describe_cycle(graph: dict[str, Module], cycle: list[str]) -> str:
    steps = [f"{a} -> {b} ({graph[a].where(graph[a].imports[b])})"
             for a, b in zip(cycle, cycle[1:])]
    return "import cycle: " + "; ".join(steps)


def importers_of(graph: dict[str, Module], external: str, *, outside: str = "") -> list[str]:
    """The modules importing ``external`` (or a submodule of it), with where; ``outside`` a
    subpackage whose modules are not counted."""
    return sorted(module.where(line) for module in graph.values()
                  if not (outside and (module.name == outside
                                       or module.name.startswith(outside + ".")))
                  for target, line in module.imports.items()
                  if target == external or target.startswith(external + "."))


# ---------------------------------------------------------------------------------------------
# the checks


def test_the_graph_sees_imports_inside_functions():
    graph = module_graph()
    assert {"conflux.engine", "conflux.kernel", "conflux.cli.daemon"} <= set(graph)
    assert "conflux.daemon" in graph["conflux.cli.daemon"].imports  # in its handler


def test_no_import_cycle():
    graph = module_graph()
    cycles = import_cycles(graph)
    assert not cycles, "\n".join(describe_cycle(graph, c) for c in cycles)


def test_the_cycle_check_finds_a_cycle():
    a = Module("conflux.a", pathlib.Path("a.py"), False, {"conflux.b": 3})
    b = Module("conflux.b", pathlib.Path("b.py"), False, {"conflux.c": 5, "json": 1})
    c = Module("conflux.c", pathlib.Path("c.py"), False, {"conflux.a": 9})
    d = Module("conflux.d", pathlib.Path("d.py"), False, {"conflux.a": 2})
    graph = {m.name: m for m in (a, b, c, d)}
    assert import_cycles(graph) == [["conflux.a", "conflux.b", "conflux.c", "conflux.a"]]
    # a package and a module of its own import each other: the package is imported first
    p = Module("conflux.p", pathlib.Path("p/__init__.py"), True, {"conflux.p.q": 7})
    q = Module("conflux.p.q", pathlib.Path("p/q.py"), False, {"conflux.p": 1})
    assert import_cycles({m.name: m for m in (p, q)}) == []


def test_msgpack_is_imported_by_the_codec_alone():
    # the merge kernel (conflux.kernel) packs its records itself: it defines the format
    found = importers_of(module_graph(), "msgpack", outside="conflux.kernel")
    assert {where.split(":")[0] for where in found} == {"conflux/codec.py"}, found


# -- the shells hand the engine its actor; the engine checks the access rules -----------------

#: Calls that check access: the engine's policy's and the rules' own (conflux.rbac).
_ACCESS_CHECKS = {"require_ops", "require_promote", "require_milestone", "require_read",
                  "may_read", "authorize", "authorize_ops", "allowed", "decide"}
#: What ``conflux rbac``, the rules file's own inspection command, takes from the policy.
_RULES_FILE_TOOLS = {"load_rules", "explain"}


def _access_problems(name: str, tree: ast.AST) -> list[str]:
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems += [f"{name} imports {a.name}" for a in node.names
                         if a.name in ("conflux.rbac", "conflux.engine.policy")]
        elif isinstance(node, ast.ImportFrom) and node.module == "conflux.rbac":
            problems += [f"{name} imports {a.name} from conflux.rbac" for a in node.names
                         if not a.name.isupper()]  # its vocabulary (ACTIONS) for help texts
        elif isinstance(node, ast.ImportFrom) and node.module == "conflux.engine.policy":
            problems += [f"{name} imports {a.name} from conflux.engine.policy"
                         for a in node.names if a.name not in _RULES_FILE_TOOLS]
        elif isinstance(node, ast.Attribute) and node.attr in ("policy", "rbac"):
            problems.append(f"{name}:{node.lineno} reaches for .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in _ACCESS_CHECKS:
            problems.append(f"{name}:{node.lineno} calls .{node.func.attr}()")
    return problems


def _tree(module: Module) -> ast.AST:
    return ast.parse(module.path.read_bytes(), filename=str(module.path))


def test_no_access_check_in_the_cli_or_the_api():
    """The engine authorizes, given the actor: the CLI's commands and the REST resources
    hand it over and never ask the rules themselves."""
    problems = [p for name, module in module_graph().items()
                if name.startswith(("conflux.cli", "conflux.api"))
                for p in _access_problems(name, _tree(module))]
    assert problems == []


def test_the_access_check_finds_a_shell_that_checks_for_itself():
    tree = ast.parse("from conflux.rbac import Rbac\n"
                     "def on_get(req, ctx):\n"
                     "    ctx.access.rbac.require_promote(req.context.actor, 'p', None)\n")
    assert len(_access_problems("conflux.api.x", tree)) == 3


# -- every module readable in one sitting --------------------------------------------------------

MAX_LINES = 800


def test_no_module_of_the_package_is_over_800_lines():
    """The kernel's twins (``conflux.kernel``, from ``kernel/``) are the record format and its
    merge loops, kept whole to be read side by side (and, compiled, for speed); every other
    module stays under ``MAX_LINES``."""
    long = {name: len(module.path.read_bytes().splitlines())
            for name, module in module_graph().items()
            if not (name == "conflux.kernel" or name.startswith("conflux.kernel."))}
    assert {name: n for name, n in long.items() if n > MAX_LINES} == {}


# -- floors: every module imports only from its own floor and the ones below -------------------

#: The package's floors, lowest first, by module name prefix. A module not listed is on the
#: floor of its closest listed parent; the test fails for a module on no floor at all, so a
#: new module is placed on purpose.
FLOORS = (
    ("foundations", ("conflux.errors", "conflux.actors", "conflux.limits", "conflux.codec",
                     "conflux._tomlfile", "conflux._tomlcache", "conflux._gcpause",
                     "conflux.destination", "conflux.formats", "conflux.kernel")),
    ("model and storage", ("conflux.schema", "conflux.store", "conflux.rbac", "conflux.auth",
                           "conflux.signing")),
    ("engine", ("conflux.engine",)),
    ("library over the engine", ("conflux.milestones", "conflux.webhooks",
                                 "conflux.webhooks_shared", "conflux.audit",
                                 "conflux.transfer", "conflux.status", "conflux.original",
                                 "conflux.webhook_registry", "conflux.webhook_bodies",
                                 "conflux.audit_verify", "conflux.rollback")),
    ("shells and processes", ("conflux.api", "conflux.cli", "conflux.daemon", "conflux.rpc",
                              "conflux.__main__")),
)


def floor_of(name: str) -> int | None:
    best, floor = "", None
    for level, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, floor = prefix, level
    return floor


def upward_imports(graph: dict[str, Module]) -> list[str]:
    return [f"{name} ({FLOORS[floor_of(name)][0]}) imports {target} "
            f"({FLOORS[floor_of(target)][0]}) at {graph[name].where(line)}"
            for name in graph if name != PACKAGE
            for target, line in graph[name].imports.items()
            if target in graph and target != PACKAGE and floor_of(target) > floor_of(name)]


def test_every_module_imports_only_downward():
    graph = module_graph()
    unplaced = sorted(n for n in graph if n != PACKAGE and floor_of(n) is None)
    assert unplaced == [], "modules on no floor: place them in FLOORS"
    assert upward_imports(graph) == []


def test_the_floor_check_finds_an_upward_import():
    root = package_dir()
    schema = Module("conflux.schema.x", root / "schema" / "x.py", False, {"conflux.engine.y": 4})
    engine = Module("conflux.engine.y", root / "engine" / "y.py", False, {"conflux.schema.x": 2})
    found = upward_imports({m.name: m for m in (schema, engine)})
    assert len(found) == 1 and found[0].startswith("conflux.schema.x (model and storage) "
                                                   "imports conflux.engine.y (engine)")


# -- one storage interface: nothing above the store sees a transaction's insides ----------------


def test_lmdb_is_imported_by_the_lmdb_store_alone():
    found = importers_of(module_graph(), "lmdb")
    assert {where.split(":")[0] for where in found} == {"conflux/store/lmdb_store.py"}, found


#: What only a store does with LMDB: a cursor, a transaction's own methods, its environment.
_RAW_CALLS = {"cursor", "begin", "putmulti", "set_range", "iternext"}


def _raw_store_uses(name: str, tree: ast.AST) -> list[str]:
    """Where a module reaches past the storage interface: a method called on a transaction
    (``txn.get(...)``, ``self.txn.put(...)``), a table (``.dbs``, a ``db=`` argument), a
    cursor, or the store's LMDB environment (``store.env``)."""
    problems = []

    def is_txn(node):
        return (isinstance(node, ast.Name) and node.id == "txn") or (
            isinstance(node, ast.Attribute) and node.attr == "txn")

    def is_store(node):
        return (isinstance(node, ast.Name) and node.id == "store") or (
            isinstance(node, ast.Attribute) and node.attr == "store")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and is_txn(func.value):
                problems.append(f"{name}:{node.lineno} calls txn.{func.attr}()")
            elif isinstance(func, ast.Attribute) and func.attr in _RAW_CALLS:
                problems.append(f"{name}:{node.lineno} calls .{func.attr}()")
            problems += [f"{name}:{node.lineno} names a table (db=)"
                         for kw in node.keywords if kw.arg == "db"]
        elif isinstance(node, ast.Attribute):
            if node.attr == "dbs":
                problems.append(f"{name}:{node.lineno} reaches for .dbs")
            elif node.attr == "env" and is_store(node.value):
                problems.append(f"{name}:{node.lineno} reaches for store.env")
    return problems


def test_nothing_above_the_store_opens_a_transaction_or_names_a_table():
    """The engine, the milestones, the webhooks, the daemon and the rest hand the store its
    transaction back and call its methods; only ``conflux.store`` (and the merge kernel, given
    a cursor by the store's ``merge_batch``) touches LMDB's."""
    problems = [p for name, module in module_graph().items()
                if not name.startswith(("conflux.store", "conflux.kernel"))
                for p in _raw_store_uses(name, _tree(module))]
    assert problems == []


def test_the_store_check_finds_raw_transactions():
    tree = ast.parse("def f(self, txn):\n"
                     "    raw = txn.get(b'k', db=self.store.dbs['state'])\n"
                     "    with self.txn.cursor() as cur:\n"
                     "        cur.set_range(b'')\n"
                     "    return self.engine.store.env.info()\n")
    found = sorted(_raw_store_uses("conflux.x", tree))
    assert found == ["conflux.x:2 calls txn.get()", "conflux.x:2 names a table (db=)",
                     "conflux.x:2 reaches for .dbs", "conflux.x:3 calls txn.cursor()",
                     "conflux.x:4 calls .set_range()", "conflux.x:5 reaches for store.env"]
