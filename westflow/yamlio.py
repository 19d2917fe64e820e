"""The one way westflow reads a YAML file it is handed: bounded in bytes, aliases and nesting.

Every spec, config (network, tiers, policy) and local profile YAML goes through :func:`read_yaml`
(or :func:`parse_yaml` for text already in memory). Against hostile input it

- reads at most ``max_bytes + 1`` bytes (``/dev/zero`` or a huge file is refused at once);
- decodes strict UTF-8;
- refuses more than :data:`MAX_ALIASES` aliases, any recursive alias, documents whose
  aliases would expand past :data:`MAX_EXPANDED_NODES` nodes beyond the written ones
  (the billion-laughs YAML) and nesting past :data:`MAX_DEPTH` levels, before anything is built;
- refuses duplicate keys in a mapping, naming the key and its line (YAML says keys are
  unique; PyYAML silently keeps the last);
- reads ``1e3`` as a number, as YAML 1.2 does (PyYAML's YAML 1.1 reads it as text).

Failures raise :class:`YamlInputError` (a ``ValueError``) carrying the field (``<file>`` or
``<yaml>``), the value, what is allowed and the problem, so the spec and config loaders
re-raise it as their own typed error (SpecError / ConfigError).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from westflow.errors import field_message

__all__ = [
    "MAX_SPEC_BYTES", "MAX_CONFIG_BYTES", "MAX_ALIASES", "MAX_EXPANDED_NODES", "MAX_DEPTH", "YamlInputError",
    "read_limited", "parse_yaml", "read_yaml",
]

MAX_SPEC_BYTES = 1 << 20     # 1 MiB: a spec is a few hundred bytes
MAX_CONFIG_BYTES = 8 << 20   # 8 MiB: a 1,000-DC network.yaml is under 1 MiB
MAX_ALIASES = 256
MAX_EXPANDED_NODES = 100_000  # nodes aliases may add beyond those written in the file
MAX_DEPTH = 100               # levels of nesting (a spec has 4, network.yaml 5)
MAX_INT_CHARS = 100           # an integer scalar's length


class YamlInputError(ValueError):
    """A YAML file westflow will not read: ``problem field value; must be allowed``."""

    def __init__(self, field: str, value: Any, allowed: str, problem: str = "Invalid") -> None:
        super().__init__(field, value, allowed, problem)
        self.field = field  # "<file>", "<yaml>", "key", "aliases", "alias"
        self.value = value
        self.allowed = allowed
        self.problem = problem

    def __str__(self) -> str:
        return field_message(self.field, self.value, self.allowed, problem=self.problem)


def read_limited(path: Path | str, max_bytes: int) -> str:
    """The UTF-8 text of ``path``, reading at most ``max_bytes + 1`` bytes; YamlInputError otherwise."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(max_bytes + 1)
    except (OSError, ValueError) as exc:  # ValueError: NUL in the path
        raise YamlInputError("<file>", str(p), f"a readable file ({_reason(exc)})", "Cannot read") from None
    if len(raw) > max_bytes:
        raise YamlInputError("<file>", str(p), f"at most {max_bytes:,} bytes (it is larger)", "Too large")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlInputError("<file>", str(p), f"UTF-8 text (byte {exc.start} is not)", "Cannot read") from None


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


# libyaml's parser when PyYAML has it (ten times faster, and it refuses nesting past 1,000 levels itself)
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """A safe loader that refuses duplicate keys while constructing (the resolver reads ``1e3`` as a float)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<: *defaults` may be overridden: that is its purpose
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       "found unhashable key", key_node.start_mark) from None
            if first is not None:
                raise YamlInputError("key", key, f"unique in its mapping (line {line} repeats the key of "
                                     f"line {first})", "Duplicate")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


    def construct_yaml_int(self, node: Node) -> int:
        """An int of at most :data:`MAX_INT_CHARS` characters (Python refuses int() of 4,301 digits)."""
        text = str(node.value)
        if len(text) > MAX_INT_CHARS:
            raise YamlInputError("<yaml>", f"an integer of {len(text):,} characters (line {node.start_mark.line + 1})",
                                 f"integers of at most {MAX_INT_CHARS} characters", "Too large")
        return int(super().construct_yaml_int(node))


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [c for kv in node.value for c in kv]
    return []


def _written(root: Node) -> tuple[int, int]:
    """(distinct nodes, alias references): a node reached again is an alias (``*name``) to it.

    Refuses nesting deeper than :data:`MAX_DEPTH` (repr() and pydantic recurse on what we build).
    """
    seen, aliases, stack = {id(root)}, 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise YamlInputError("<yaml>", f"nesting past level {MAX_DEPTH} (line {node.start_mark.line + 1})",
                                 f"YAML nested at most {MAX_DEPTH} levels deep", "Too deep")
        for child in _children(node):
            if id(child) in seen:
                aliases += 1
            else:
                seen.add(id(child))
                stack.append((child, depth + 1))
    return len(seen), aliases


def _check_expansion(root: Node, limit: int) -> None:
    """Refuse a recursive alias, or a document that expands past ``limit`` nodes (iterative: no recursion)."""
    size: dict[int, int] = {}
    path: set[int] = set()  # the nodes open on the current depth-first path
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > limit:
                raise YamlInputError("alias expansion", f"over {limit:,} nodes", f"at most {MAX_EXPANDED_NODES:,} "
                                     "nodes added by aliases", "Too large")
            continue
        if key in size:
            continue
        path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in path:
                raise YamlInputError("alias", f"line {child.start_mark.line + 1}",
                                     "an alias to a node that does not contain the alias", "Recursive")
            if id(child) not in size:
                stack.append((child, False))


def parse_yaml(text: str) -> Any:
    """Parse one YAML document from ``text`` with the limits above; YamlInputError on any failure."""
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise YamlInputError("<yaml>", _yaml_problem(exc), "valid YAML") from None
    try:
        return _compose_checked(loader)
    except RecursionError:
        raise YamlInputError("<yaml>", "nesting too deep", "YAML nested less deeply") from None
    except yaml.YAMLError as exc:
        raise YamlInputError("<yaml>", _yaml_problem(exc), "valid YAML") from None
    except YamlInputError:
        raise
    except (ValueError, OverflowError) as exc:  # a constructor's int()/float()/date() refusing the scalar
        raise YamlInputError("<yaml>", str(exc), "valid YAML scalars") from None
    finally:
        loader.dispose()


def _compose_checked(loader: _Loader) -> Any:
    """Compose the document (aliases stay shared nodes: small), refuse an alias bomb, then build it."""
    node = loader.get_single_node()
    if node is None:
        return None
    written, aliases = _written(node)
    if aliases > MAX_ALIASES:
        raise YamlInputError("aliases", aliases, f"at most {MAX_ALIASES} in one file", "Too many")
    if aliases:
        _check_expansion(node, written + MAX_EXPANDED_NODES)
    return loader.construct_document(node)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What PyYAML found wrong, and where: ``found unhashable key (line 1)``."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else exc.problem
    return str(exc).splitlines()[0]


def read_yaml(path: Path | str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Read and parse the YAML file ``path`` (at most ``max_bytes``); YamlInputError on any failure."""
    return parse_yaml(read_limited(path, max_bytes))
