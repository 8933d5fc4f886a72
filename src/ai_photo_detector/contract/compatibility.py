"""Breaking changes between two OpenAPI documents, for the routes clients hold us to: ``/v1``.

A change breaks a client written against ``old`` when ``new``:

- removes a path, or a method of one;
- answers a 2xx status with less: the status or one of its content types gone, a field of a
  response schema gone or no longer always present, or a field's type widened beyond what the
  client reads (``integer`` to ``number``, ``string`` to ``string | null``, any change of kind);
- asks more of a request: a new required body field or parameter, a field or parameter that
  became required, a request body that became required, a content type no longer accepted, or
  a type narrowed (``number`` to ``integer``), or a field no longer accepted by a closed schema.

Schemas are followed through local ``$ref``s, nested objects, arrays, maps
(``additionalProperties``) and ``anyOf``/``oneOf`` unions (``null`` branches and OpenAPI 3.0's
``nullable`` included). Additions (routes, optional request fields, response fields, statuses)
are not breaks. Not compared: enum values, formats, bounds (lengths, ranges, patterns),
headers of responses, non-2xx responses, security schemes, and a renamed path parameter, which
reads as a removed route.

Pydantic and the standard library only: this module installs with the client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

__all__ = ["PREFIX", "breaking_changes", "check", "major_version"]

PREFIX = "/v1"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
MAX_DEPTH = 64  # no real schema nests this deep; a guard against pathological documents

Direction = Literal["response", "request"]
Types = frozenset[str] | None  # the JSON types a schema allows; None: any value


def breaking_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = PREFIX
) -> list[str]:
    """Every change from ``old`` to ``new`` that breaks a client of a route under ``prefix``,
    one readable line each (``METHOD /path: what``), in the old document's order."""
    found: list[str] = []
    old_paths: Mapping[str, Any] = old.get("paths") or {}
    new_paths: Mapping[str, Any] = new.get("paths") or {}
    for path, old_item in old_paths.items():
        if not (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
            continue
        if path not in new_paths:
            found.append(f"{path}: route removed")
            continue
        new_item = _resolve(new, new_paths[path])[0]
        old_item = _resolve(old, old_item)[0]
        for method in METHODS:
            if method not in old_item:
                continue
            where = f"{method.upper()} {path}"
            if method not in new_item:
                found.append(f"{where}: method removed")
                continue
            pair = _Pair(old, new)
            found.extend(
                f"{where}: {problem}"
                for problem in pair.operation(
                    old_item[method], new_item[method], old_item, new_item
                )
            )
    return list(dict.fromkeys(found))  # one line per break, even where schemas are shared


def check(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = PREFIX) -> list[str]:
    """The breaks of :func:`breaking_changes`, unless ``info.version``'s major number moved up
    (then none: a new major version may break what it likes)."""
    old_major, new_major = major_version(old), major_version(new)
    if old_major is not None and new_major is not None and new_major > old_major:
        return []
    return breaking_changes(old, new, prefix)


def major_version(document: Mapping[str, Any]) -> int | None:
    """The major number of ``info.version`` (``"1.4.0"`` and ``"v1"`` give 1), or None."""
    version = (document.get("info") or {}).get("version")
    match = re.match(r"\s*v?(\d+)", str(version)) if version is not None else None
    return int(match.group(1)) if match else None


def _resolve(document: Mapping[str, Any], node: Any) -> tuple[Mapping[str, Any], str | None]:
    """``node`` with its local ``$ref``s followed, and the name of the last one followed."""
    name = None
    seen: set[str] = set()
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref: str = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            break  # a remote or circular reference: left as it is
        seen.add(ref)
        target: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        if target is None:
            break
        node, name = target, ref
    return (node if isinstance(node, Mapping) else {}), name


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _covers(wide: Types, narrow: Types) -> bool:
    """Whether every value of type ``narrow`` is one of type ``wide`` (integers are numbers)."""
    if wide is None:
        return True
    if narrow is None:
        return False
    return all(kind in wide or (kind == "integer" and "number" in wide) for kind in narrow)


def _show(types: Types) -> str:
    if types is None:
        return "any"
    order = ("object", "array", "string", "number", "integer", "boolean", "null")
    return " | ".join(sorted(types, key=lambda t: order.index(t) if t in order else len(order)))


def _field(at: str) -> str:
    return f"field `{at}` " if at else ""


class _Pair:
    """One old document and one new, compared operation by operation."""

    def __init__(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        self.old, self.new = old, new

    def operation(
        self,
        old_op: Mapping[str, Any],
        new_op: Mapping[str, Any],
        old_item: Mapping[str, Any],
        new_item: Mapping[str, Any],
    ) -> Iterator[str]:
        yield from self.parameters(
            self._parameters(self.old, old_item, old_op),
            self._parameters(self.new, new_item, new_op),
        )
        yield from self.request_body(
            _resolve(self.old, old_op.get("requestBody"))[0],
            _resolve(self.new, new_op.get("requestBody"))[0],
            "requestBody" in old_op,
        )
        old_responses: Mapping[str, Any] = old_op.get("responses") or {}
        new_responses: Mapping[str, Any] = new_op.get("responses") or {}
        for status, old_response in old_responses.items():
            if not str(status).startswith("2"):
                continue
            if status not in new_responses:
                yield f"response {status} removed"
                continue
            old_content = _resolve(self.old, old_response)[0].get("content") or {}
            new_content = _resolve(self.new, new_responses[status])[0].get("content") or {}
            for media, old_media in old_content.items():
                if media not in new_content:
                    yield f"response {status}: content type {media} removed"
                    continue
                if not _is_json(media):
                    continue
                for problem in self.schema(
                    (old_media or {}).get("schema"),
                    (new_content[media] or {}).get("schema"),
                    "response",
                ):
                    yield f"response {status} {media}: {problem}"

    def _parameters(
        self, document: Mapping[str, Any], item: Mapping[str, Any], op: Mapping[str, Any]
    ) -> dict[tuple[str, str], Mapping[str, Any]]:
        """The operation's parameters by (location, name), the path item's beneath its own."""
        found: dict[tuple[str, str], Mapping[str, Any]] = {}
        for raw in [*(item.get("parameters") or []), *(op.get("parameters") or [])]:
            parameter = _resolve(document, raw)[0]
            location, name = parameter.get("in"), parameter.get("name")
            if isinstance(location, str) and isinstance(name, str):
                key = (location, name.lower() if location == "header" else name)
                found[key] = parameter
        return found

    def parameters(
        self,
        old: dict[tuple[str, str], Mapping[str, Any]],
        new: dict[tuple[str, str], Mapping[str, Any]],
    ) -> Iterator[str]:
        for (location, name), parameter in new.items():
            required = bool(parameter.get("required")) or location == "path"
            label = f"{location} parameter `{parameter.get('name', name)}`"
            if (location, name) not in old:
                if required:
                    yield f"new required {label}"
                continue
            before = old[(location, name)]
            if required and not (before.get("required") or location == "path"):
                yield f"{label} became required"
            for problem in self.schema(before.get("schema"), parameter.get("schema"), "request"):
                yield f"{label}: {problem}"

    def request_body(
        self, old: Mapping[str, Any], new: Mapping[str, Any], had_body: bool
    ) -> Iterator[str]:
        if new.get("required") and not old.get("required"):
            yield "request body became required" if had_body else "new required request body"
        old_content: Mapping[str, Any] = old.get("content") or {}
        new_content: Mapping[str, Any] = new.get("content") or {}
        for media, old_media in old_content.items():
            if media not in new_content:
                yield f"request content type {media} removed"
                continue
            for problem in self.schema(
                (old_media or {}).get("schema"), (new_content[media] or {}).get("schema"), "request"
            ):
                yield f"request {media}: {problem}"

    def schema(self, old: Any, new: Any, direction: Direction) -> Iterator[str]:
        if old is None or new is None:
            return  # an undocumented body on either side: nothing to compare
        yield from self._schema(old, new, direction, "", frozenset(), 0)

    def _schema(
        self,
        old: Any,
        new: Any,
        direction: Direction,
        at: str,
        seen: frozenset[tuple[str | None, str | None]],
        depth: int,
    ) -> Iterator[str]:
        old_schema, old_ref = _resolve(self.old, old)
        new_schema, new_ref = _resolve(self.new, new)
        if ((old_ref or new_ref) and (old_ref, new_ref) in seen) or depth > MAX_DEPTH:
            return  # a recursive schema, already being compared further up
        if old_ref or new_ref:
            seen = seen | {(old_ref, new_ref)}
        old_types = self._types(self.old, old_schema, 0)
        new_types = self._types(self.new, new_schema, 0)
        if direction == "response" and not _covers(old_types, new_types):
            yield f"{_field(at)}type changed from {_show(old_types)} to {_show(new_types)}"
            return
        if direction == "request" and not _covers(new_types, old_types):
            yield f"{_field(at)}type changed from {_show(old_types)} to {_show(new_types)}"
            return
        for old_branch, new_branch in self._matched_branches(old_schema, new_schema):
            yield from self._shape(old_branch, new_branch, direction, at, seen, depth + 1)

    def _shape(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        direction: Direction,
        at: str,
        seen: frozenset[tuple[str | None, str | None]],
        depth: int,
    ) -> Iterator[str]:
        """Fields, items and map values of one non-union schema against another."""

        def inner(name: str) -> str:
            return f"{at}.{name}" if at else name

        old_props: Mapping[str, Any] = old.get("properties") or {}
        new_props: Mapping[str, Any] = new.get("properties") or {}
        old_required = set(old.get("required") or ())
        new_required = set(new.get("required") or ())
        if direction == "response":
            for name, old_prop in old_props.items():
                if name not in new_props:
                    yield f"field `{inner(name)}` removed"
                    continue
                if name in old_required and name not in new_required:
                    yield f"field `{inner(name)}` no longer always present"
                yield from self._schema(
                    old_prop, new_props[name], direction, inner(name), seen, depth
                )
        else:
            listed = [*new_props, *(n for n in new.get("required") or () if n not in new_props)]
            for name in listed:
                if name in new_required and name not in old_required:
                    yield (
                        f"field `{inner(name)}` became required"
                        if name in old_props
                        else f"new required field `{inner(name)}`"
                    )
            closed = new.get("additionalProperties") is False
            for name, old_prop in old_props.items():
                if name in new_props:
                    yield from self._schema(
                        old_prop, new_props[name], direction, inner(name), seen, depth
                    )
                elif closed:
                    yield f"field `{inner(name)}` no longer accepted"
        if "items" in old and "items" in new:
            yield from self._schema(old["items"], new["items"], direction, f"{at}[]", seen, depth)
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, Mapping) and isinstance(new_extra, Mapping):
            yield from self._schema(old_extra, new_extra, direction, f"{at}{{}}", seen, depth)

    def _branches(
        self, document: Mapping[str, Any], schema: Mapping[str, Any], depth: int = 0
    ) -> list[tuple[Mapping[str, Any], str | None]]:
        """The non-null alternatives of a schema, each resolved, with the ref it came from."""
        union = schema.get("anyOf") or schema.get("oneOf")
        members = schema.get("allOf")
        if union is None and isinstance(members, list) and len(members) == 1:
            union = members  # pydantic's `allOf: [{$ref}]` wrapper: the one member itself
        if not isinstance(union, list) or depth > MAX_DEPTH:
            return [(schema, None)]
        found: list[tuple[Mapping[str, Any], str | None]] = []
        for member in union:
            resolved, ref = _resolve(document, member)
            if self._types(document, resolved, depth + 1) == frozenset({"null"}):
                continue
            inner = self._branches(document, resolved, depth + 1)
            found.extend((branch, branch_ref or ref) for branch, branch_ref in inner)
        return found

    def _matched_branches(
        self, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
        """Pairs of alternatives to compare further: the one of each side, else those of the
        same ``$ref``, else those alone of their type on both sides."""
        old_branches = self._branches(self.old, old)
        new_branches = self._branches(self.new, new)
        if len(old_branches) == 1 and len(new_branches) == 1:
            yield old_branches[0][0], new_branches[0][0]
            return
        for old_branch, old_ref in old_branches:
            same_ref = [b for b, ref in new_branches if old_ref and ref == old_ref]
            if same_ref:
                yield old_branch, same_ref[0]
                continue
            old_types = self._types(self.old, old_branch, 0)
            if old_types is None:
                continue
            alike_old = [b for b, _ in old_branches if self._types(self.old, b, 0) == old_types]
            alike_new = [b for b, _ in new_branches if self._types(self.new, b, 0) == old_types]
            if len(alike_old) == 1 and len(alike_new) == 1:
                yield old_branch, alike_new[0]

    def _types(self, document: Mapping[str, Any], schema: Mapping[str, Any], depth: int) -> Types:
        """The JSON types ``schema`` allows (None: it does not say, so any)."""
        schema = _resolve(document, schema)[0]
        types: Types
        declared = schema.get("type")
        union = schema.get("anyOf") or schema.get("oneOf")
        members = schema.get("allOf")
        if isinstance(declared, str):
            types = frozenset({declared})
        elif isinstance(declared, list):
            types = frozenset(str(kind) for kind in declared)
        elif isinstance(union, list) and union and depth <= MAX_DEPTH:
            parts = [self._types(document, member, depth + 1) for member in union]
            known = [p for p in parts if p is not None]
            types = frozenset().union(*known) if len(known) == len(parts) else None
        elif isinstance(members, list) and members and depth <= MAX_DEPTH:
            parts = [self._types(document, member, depth + 1) for member in members]
            known = [p for p in parts if p is not None]
            types = frozenset.intersection(*known) if known else None
        elif "const" in schema:
            types = frozenset({_kind(schema["const"])})
        elif isinstance(schema.get("enum"), list) and schema["enum"]:
            types = frozenset(_kind(value) for value in schema["enum"])
        elif "properties" in schema or "additionalProperties" in schema:
            types = frozenset({"object"})
        elif "items" in schema:
            types = frozenset({"array"})
        else:
            types = None
        if types is not None and schema.get("nullable") is True:
            types = types | {"null"}
        return types


def _is_json(media: str) -> bool:
    kind = media.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")
