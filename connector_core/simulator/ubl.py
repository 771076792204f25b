"""Reading LHDN's UBL 2.1 JSON notation, and turning UBL XML into the same shape.

In the JSON notation every element is a list of objects and a leaf's text sits under "_";
the validator only ever walks that shape, so XML submissions are converted to it first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

Node = dict[str, Any]


def child(node: Node | None, *names: str) -> Node | None:
    """The first occurrence of the element path under ``node``, or None."""
    current = node
    for name in names:
        if not isinstance(current, dict):
            return None
        items = current.get(name)
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            return None
        current = items[0]
    return current


def children(node: Node | None, name: str) -> list[Node]:
    if not isinstance(node, dict):
        return []
    items = node.get(name)
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]


def text(node: Node | None, *names: str) -> str | None:
    """The leaf value at the path as a string (numbers too), or None when absent."""
    leaf = child(node, *names) if names else node
    if not isinstance(leaf, dict) or "_" not in leaf:
        return None
    value = leaf["_"]
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def number(node: Node | None, *names: str) -> float | None:
    value = text(node, *names)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _element_to_json(element: ET.Element) -> Node:
    node: Node = {_local(k): v for k, v in element.attrib.items()}
    kids = list(element)
    if kids:
        for kid in kids:
            node.setdefault(_local(kid.tag), []).append(_element_to_json(kid))
    else:
        node["_"] = (element.text or "").strip()
    return node


def xml_to_json_notation(raw: bytes) -> Node:
    """Convert a UBL XML document to the JSON notation (root under its local name)."""
    root = ET.fromstring(raw)
    return {_local(root.tag): [_element_to_json(root)]}
