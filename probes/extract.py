"""Values from an HTTP answer into samples: the http probe's `extract:` (JSON or XML).

A tiny JSONPath subset, documented in docs/probes.md: `$` then steps `.name`, `['name']`,
`[3]` (negative from the end), `[*]` (every item; on an object that is not a list, the object
itself, since Mirth's XStream JSON gives a one-element list as a bare object) and `.*` (every
member). No recursive descent, no filters. XML uses ElementTree's path syntax
(`./channelStatistics/received`, `.//name`), the element's text, or an attribute with a final
`/@name`; expat expands no external entity and refuses entity bombs.

Bounds: at most MAX_VALUES values per extraction, label values cut to MAX_LABEL chars and
sanitised, an answer read only up to the check's max_body_bytes (a cut answer is refused).
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from vigie.core.results import Sample
from vigie.core.sanitise import sanitise

__all__ = ["MAX_VALUES", "ExtractError", "ExtractSpec", "extract", "json_path"]

MAX_VALUES = 1000
"""Values one extraction may produce (one per series): a bound on what a target can make."""
MAX_LABEL = 128
"""Characters kept of a label value read from the answer."""
_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_@$][A-Za-z0-9_@$-]*)
      | \.(?P<star>\*)
      | \[\s*(?:'(?P<quoted>[^']*)'|"(?P<dquoted>[^"]*)"|(?P<index>-?\d+)|(?P<all>\*))\s*\]""",
    re.X,
)

MetricName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
Path = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class ExtractError(ValueError):
    """An answer that does not give what an extraction asks for."""


class ExtractSpec(BaseModel):
    """One metric read from the answer: its values by path, labels by parallel paths."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: MetricName = Field(description="Metric name, e.g. mirth_channel_received_total.")
    json_path: Path | None = Field(
        None, alias="json", description="JSONPath (subset) of the values, e.g. $.list[*].received."
    )
    xml: Path | None = Field(
        None, description="ElementTree path of the values, e.g. ./channelStatistics/received."
    )
    labels: dict[LabelName, Path] = Field(
        default_factory=dict,
        description="Label name -> path (same syntax) giving one value per value, or one for"
        " all, e.g. {channel: $.list[*].name}.",
    )
    type: Literal["gauge", "counter"] = Field("gauge", description="counter for totals.")
    help: str = Field("", max_length=200, description="HELP text of the metric.")
    map: dict[str, float] = Field(
        default_factory=dict,
        description="Text values to numbers, e.g. {STARTED: 1, PAUSED: 0, STOPPED: 0}.",
    )

    @model_validator(mode="after")
    def _one_path(self) -> Self:
        """Exactly one of json and xml; JSON paths parse."""
        if (self.json_path is None) == (self.xml is None):
            raise ValueError(f"extract {self.name}: give exactly one of json and xml")
        if self.json_path is not None:
            for path in (self.json_path, *self.labels.values()):
                _steps(path)
        return self


def _steps(path: str) -> list[tuple[str, Any]]:
    """Parse a JSONPath (subset) into steps; ValueError names the unreadable part."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} must start with $")
    steps: list[tuple[str, Any]] = []
    pos = 1
    while pos < len(path):
        match = _STEP.match(path, pos)
        if match is None:
            raise ValueError(
                f"JSON path {path!r}: cannot read {path[pos:]!r} (steps: .name ['name'] [n] [*] .*)"
            )
        pos = match.end()
        if match.group("name") is not None:
            steps.append(("key", match.group("name")))
        elif match.group("quoted") is not None or match.group("dquoted") is not None:
            steps.append(("key", match.group("quoted") or match.group("dquoted") or ""))
        elif match.group("index") is not None:
            steps.append(("index", int(match.group("index"))))
        elif match.group("all") is not None:
            steps.append(("all", None))
        else:
            steps.append(("members", None))
    return steps


def json_path(document: Any, path: str) -> list[Any]:
    """Return what the path selects in a parsed JSON document, at most MAX_VALUES + 1 items."""
    nodes: list[Any] = [document]
    for kind, arg in _steps(path):
        out: list[Any] = []
        for node in nodes:
            out.extend(_step(node, kind, arg))
            if len(out) > MAX_VALUES:
                break
        nodes = out[: MAX_VALUES + 1]
    return nodes


def _step(node: Any, kind: str, arg: Any) -> Iterator[Any]:
    """Apply one step to one node."""
    if kind == "key":
        if isinstance(node, dict) and arg in node:
            yield node[arg]
    elif kind == "index":
        if isinstance(node, list) and -len(node) <= arg < len(node):
            yield node[arg]
    elif kind == "all":
        if isinstance(node, list):
            yield from node
        elif isinstance(node, dict):
            yield node  # XStream's one-element list
    elif isinstance(node, dict):
        yield from node.values()
    elif isinstance(node, list):
        yield from node


def _xml_path(root: ET.Element, path: str) -> list[Any]:
    """Return the texts (or attributes, with a final /@name) the ElementTree path selects."""
    attribute = None
    if "/@" in path:
        path, attribute = path.rsplit("/@", 1)
    try:
        found = root.findall(path) if path not in ("", ".") else [root]
    except (SyntaxError, KeyError) as exc:
        raise ExtractError(f"XML path {path!r}: {exc}") from None
    if attribute is not None:
        return [e.get(attribute) for e in found[: MAX_VALUES + 1] if e.get(attribute) is not None]
    return [(e.text or "").strip() for e in found[: MAX_VALUES + 1]]


def _number(value: Any, spec: ExtractSpec, path: str) -> float:
    """Return a selected value as a number: numbers, booleans, numeric text, or mapped text."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in spec.map:
            return spec.map[value]
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if not math.isnan(number):
                return number
    shown = sanitise(json.dumps(value) if not isinstance(value, str) else repr(value), 60)
    raise ExtractError(f"extract {spec.name}: {path} gave {shown}, not a number (add it to map:)")


def _label_text(value: Any) -> str:
    """Return a label value read from the answer, sanitised and bounded."""
    text = value if isinstance(value, str) else json.dumps(value)
    return sanitise(text, MAX_LABEL)


def extract(specs: Iterable[ExtractSpec], body: bytes, charset: str | None = None) -> list[Sample]:
    """Return the samples the specs read from an answer; ExtractError says what is missing."""
    specs = list(specs)
    document: Any = None
    root: ET.Element | None = None
    if any(s.json_path is not None for s in specs):
        try:
            document = json.loads(body.decode(charset or "utf-8", errors="replace"))
        except (ValueError, RecursionError) as exc:
            raise ExtractError(f"the answer is not JSON: {sanitise(str(exc), 120)}") from None
    if any(s.xml is not None for s in specs):
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise ExtractError(f"the answer is not XML: {sanitise(str(exc), 120)}") from None
    samples: list[Sample] = []
    for spec in specs:
        path = spec.json_path or spec.xml or ""

        def select(where: str, spec: ExtractSpec = spec) -> list[Any]:
            if spec.json_path is not None:
                return json_path(document, where)
            assert root is not None
            return _xml_path(root, where)

        values = select(path)
        if not values:
            raise ExtractError(f"extract {spec.name}: {path} matched nothing")
        if len(values) > MAX_VALUES:
            raise ExtractError(f"extract {spec.name}: {path} matched over {MAX_VALUES} values")
        columns: list[tuple[str, list[Any]]] = []
        for label, label_path in sorted(spec.labels.items()):
            found = select(label_path)
            if len(found) not in (1, len(values)):
                raise ExtractError(
                    f"extract {spec.name}: label {label} ({label_path}) gave {len(found)}"
                    f" values for {len(values)}"
                )
            columns.append((label, found))
        seen: set[tuple[tuple[str, str], ...]] = set()
        for i, value in enumerate(values):
            labels = tuple(
                (label, _label_text(found[i] if len(found) > 1 else found[0]))
                for label, found in columns
            )
            if labels in seen:
                raise ExtractError(f"extract {spec.name}: two values with labels {dict(labels)}")
            seen.add(labels)
            samples.append(
                Sample(spec.name, _number(value, spec, path), labels, spec.type, spec.help)
            )
    return samples
