"""The README's spec reference, rendered from the schema in spec.py: every key, its default, the
values it takes and what it means (each field's `description`), so the two cannot drift.

    python -m pytest_rknn.spec_reference            # rewrite the section of ./README.md
    python -m pytest_rknn.spec_reference --check    # exit 1 when README.md is out of date

The section sits between `<!-- spec-reference -->` and `<!-- /spec-reference -->`;
tests/test_readme_examples.py fails when it differs from what this renders.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple, Type

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import spec as schema

BEGIN = "<!-- spec-reference -->"
END = "<!-- /spec-reference -->"
COMMAND = "python -m pytest_rknn.spec_reference"

# What a key takes, where its type says too little (maps whose values are validated elsewhere).
VALUES = {
    "inputs": "map: input name -> one source",
    "versions": 'map: "X.Y.Z" -> keys of this spec',
    "convert.op_target": "map: tensor or op type -> npu / cpu / gpu / auto",
    "checks.cosine.outputs": "map: output -> number -1..1",
    "checks.vs_sim_cosine.outputs": "map: output -> number -1..1",
    "checks.max_abs.outputs": "map: output -> number >= 0",
}

# One table per part of the spec: (heading, key prefix, model); the nested models each get their own.
INPUTS: List[Tuple[str, str, Type[BaseModel]]] = [
    ("**An input given as `file:`**", "inputs.NAME.", schema.FileInput),
    ("**An input given as `images:`**", "inputs.NAME.", schema.ImageInput),
    ("**An input given as `random:`** (and every input left out)", "inputs.NAME.", schema.RandomInput),
]
SKIP: Dict[Type[BaseModel], Set[str]] = {schema.SpecModel: {"gate", "baseline_gate"}}  # rendered together, side by side


def render() -> str:
    """The markdown between the markers (without them)."""
    lines = [f"Generated from `pytest_rknn/spec.py` by `{COMMAND}`; do not edit by hand. `null` is YAML's",
             "none: for a check it means not checked, for a gate that the metric is not compared.", ""]
    lines += _tables("**Top level**", "", schema.SpecModel, first=INPUTS)
    lines += _gates()
    return "\n".join(lines).rstrip() + "\n"


def _tables(heading: str, prefix: str, model: Type[BaseModel], first=()) -> List[str]:
    """The table of `model`'s keys, then `first`'s tables, then one per nested model, depth first."""
    lines = [heading, "", "| key | default | values | meaning |", "|---|---|---|---|"]
    nested = list(first)
    for name, info in model.model_fields.items():
        if name in SKIP.get(model, ()):
            lines.append(_row(prefix + name, "below", "mapping", _description(model, name)))
            continue
        key = prefix + name
        inner = _nested_model(info.annotation)
        default = _default(info)
        if inner is not None:
            is_list = typing.get_origin(_strip_optional(info.annotation)) in (list, List)
            if isinstance(info.default, BaseModel):
                default = "on, as below"
            nested.append((f"**`{key}`**" + (", each" if is_list else ""), key + ("[]." if is_list else "."), inner))
        lines.append(_row(key, default, VALUES.get(key) or _values(info.annotation, info), _description(model, name)))
    if model.model_config.get("extra") == "allow":
        lines.append(_row(prefix + "OTHER", "-", "as the toolkit takes it",
                          "any other argument of `rknn.config`, passed as written; checked against the installed "
                          "toolkit's signature (a misspelt key is a SPEC error)"))
    lines.append("")
    for sub_heading, sub_prefix, sub_model in nested:
        lines += _tables(f"{sub_heading}: {_doc(sub_model)}", sub_prefix, sub_model)
    return lines


def _gates() -> List[str]:
    upgrade, baseline = schema.UpgradeGate, schema.BaselineGate
    lines = [f"**`gate` and `baseline_gate`**: how much worse than a reference a metric may get. `gate`: "
             f"{_doc(upgrade)} `baseline_gate`: {_doc(baseline)} Cosines and mAPs may drop, max abs error and CPU "
             "layers may grow, by this much; cycles, memory and latency by this fraction (0.05: 5% more).", "",
             "| key | `gate` default | `baseline_gate` default | values | meaning |", "|---|---|---|---|---|"]
    assert list(upgrade.model_fields) == list(baseline.model_fields)
    for name, info in upgrade.model_fields.items():
        cells = [f"`{name}`", _code(_default(info)), _code(_default(baseline.model_fields[name])),
                 _values(info.annotation, info), _description(upgrade, name)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    return lines


def _row(key: str, default: str, values: str, meaning: str) -> str:
    return "| " + " | ".join(_cell(c) for c in (f"`{key}`", _code(default), values, meaning)) + " |"


def _code(default: str) -> str:
    return default if default in ("required", "below", "on, as below", "-") else f"`{default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _doc(model: Type[BaseModel]) -> str:
    doc = " ".join((model.__doc__ or "").split())
    if not doc:
        raise ValueError(f"{model.__name__} in pytest_rknn/spec.py has no docstring for the README's spec reference")
    return doc


def _description(model: Type[BaseModel], name: str) -> str:
    """The field's description; a subclass that only changes a default keeps its base's."""
    for cls in model.__mro__:
        info = getattr(cls, "model_fields", {}).get(name)
        if info is not None and info.description:
            return info.description
    raise ValueError(f"{model.__name__}.{name} in pytest_rknn/spec.py has no Field(description=...) "
                     f"for the README's spec reference")


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    return _yaml(value)


def _yaml(value: Any) -> str:
    """A value as a YAML flow literal, as one would write it in a spec."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, BaseModel):
        return _yaml(value.model_dump())
    raise TypeError(f"no YAML form for {value!r}")


def _strip_optional(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        return args[0]
    return annotation


def _nested_model(annotation) -> Optional[Type[BaseModel]]:
    """The spec model a key holds (directly, in an Optional or Union, or as list items)."""
    for candidate in _walk(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _walk(annotation) -> Iterator[Any]:
    yield annotation
    if typing.get_origin(annotation) in (typing.Union, list, List):
        for arg in typing.get_args(annotation):
            yield from _walk(arg)


def _values(annotation, info: Optional[FieldInfo] = None) -> str:
    inner = _strip_optional(annotation)
    text = _type_text(inner)
    bounds = _bounds(info)
    text = f"{text} {bounds}" if bounds else text
    return text + " or null" if inner is not annotation else text


def _bounds(info: Optional[FieldInfo]) -> str:
    found = {}
    for item in (info.metadata if info is not None else []):
        for attr in ("ge", "gt", "le", "lt"):
            if getattr(item, attr, None) is not None:
                found[attr] = getattr(item, attr)
    if "ge" in found and "le" in found:
        return f"{found['ge']:g}..{found['le']:g}"
    parts = [f"{sign} {found[attr]:g}" for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
             if attr in found]
    return ", ".join(parts)


def _type_text(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Union:
        parts = [_type_text(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts)) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return " / ".join(str(a) for a in args)
    if origin in (list, List):
        return f"list of {_plural(_type_text(args[0]))}"
    if origin in (tuple, typing.Tuple):
        pair = " (or N for both)" if args == (int, int) else ""
        return "[" + ", ".join(_type_text(a) for a in args) + "]" + pair
    if origin in (dict, typing.Dict):
        return f"map: {_type_text(args[0])} -> {_type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    names = {bool: "true / false", int: "integer", float: "number", str: "string", typing.Any: "any"}
    if annotation in names:
        return names[annotation]
    raise TypeError(f"no description of the type {annotation!r}")


def _plural(text: str) -> str:
    return {"integer": "integers", "number": "numbers", "string": "strings", "mapping": "mappings"}.get(text, text)


def readme_section(text: str) -> Optional[str]:
    """What the README holds between the markers, or None without them."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def updated(text: str) -> str:
    """The README text with the section rendered anew."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render()}{END}{tail}"


def main(argv: List[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if not a.startswith("--")]
    readme = Path(paths[0] if paths else "README.md")
    text = readme.read_text(encoding="utf-8")
    if readme_section(text) is None:
        print(f"{readme}: no {BEGIN} ... {END} section", file=sys.stderr)
        return 2
    new = updated(text)
    if check:
        if new != text:
            print(f"{readme}: the spec reference is out of date; run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        readme.write_text(new, encoding="utf-8")
        print(f"{readme}: spec reference updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
