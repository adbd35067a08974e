"""The README's spec reference is what the schema says, and its spec examples run as written
against the bundled fixtures."""

import re
import textwrap

import pytest
import yaml

from pytest_rknn import spec as schema
from pytest_rknn.early_checks import check_against_model
from pytest_rknn.inputs import prepare_inputs
from pytest_rknn.onnx_model import read_model_info
from pytest_rknn.spec import spec_from_dict
from pytest_rknn.spec_reference import COMMAND, readme_section, render

from conftest import FIXTURES

REPO = FIXTURES.parent
README = REPO / "README.md"
EXAMPLE = REPO / "example.rknn.yaml"  # where the README says to save an example: paths are relative to it

# Blocks that show a part of a spec are checked on the fixture model they fit: (a key they hold, model).
FRAGMENTS = [
    ("checks.cosine.slices", "fixtures/models/concat_ranges.onnx"),  # output y, boxes 0:4 and scores 4: on axis 1
    ("checks.placement", "fixtures/models/avgpool.onnx"),
    ("gate", "fixtures/models/cnn.onnx"),
]


def yaml_blocks():
    """(line, text) of every ```yaml block of the README, list-item indentation removed."""
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^( *)```yaml\n(.*?)^\1```", text, flags=re.M | re.S):
        indent = len(match.group(1))
        body = "".join(line[indent:] for line in match.group(2).splitlines(keepends=True))
        blocks.append((text.count("\n", 0, match.start()) + 1, textwrap.dedent(body)))
    return blocks


BLOCKS = yaml_blocks()


def keys(data, prefix=""):
    for key, value in data.items():
        yield prefix + str(key)
        if isinstance(value, dict):
            yield from keys(value, f"{prefix}{key}.")


def as_spec(text):
    data = yaml.safe_load(text)
    if "model" in data:
        return data
    for key, model in FRAGMENTS:
        if key in set(keys(data)):
            return {"model": model, **data}
    pytest.fail(f"a README yaml block without `model:` that FRAGMENTS does not place on a fixture model:\n{text}")


def test_the_spec_reference_in_the_readme_is_what_the_schema_renders():
    section = readme_section(README.read_text())
    assert section is not None, "README.md has lost its <!-- spec-reference --> markers"
    assert section == render(), f"README.md's spec reference is out of date: run `{COMMAND}` to update it"


def schema_keys(model, prefix=""):
    """Every key of the schema, walked here without the renderer's help."""
    for name, info in model.model_fields.items():
        yield prefix + name, info
        nested = {}
        for candidate in [info.annotation, *getattr(info.annotation, "__args__", ())]:
            for inner in [candidate, *getattr(candidate, "__args__", ())]:
                if isinstance(inner, type) and issubclass(inner, schema.BaseModel):
                    nested[inner] = nested.get(inner) or getattr(candidate, "__origin__", None) is list
        for inner, list_of in nested.items():
            yield from schema_keys(inner, f"{prefix}{name}{'[]' if list_of else ''}.")


def test_every_key_of_the_schema_is_in_the_reference_with_its_default():
    section = readme_section(README.read_text())
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([\w.\[\]]+)` \| ([^|]+) \| ([^|]+) \|", line)
        if match:
            rows.setdefault(match.group(1), []).append(match.group(2).strip())
            if match.group(1) in schema.BaselineGate.model_fields:  # the gates' table: `gate` | `baseline_gate`
                rows[match.group(1)].append(match.group(3).strip())
    missing = []
    walked = [*schema_keys(schema.SpecModel)]
    for kind in schema.INPUT_KINDS.values():
        walked += schema_keys(kind, "inputs.NAME.")
    for key, info in walked:
        column = slice(None)
        if key.startswith(("gate.", "baseline_gate.")):  # one table for both, a column each
            column = slice(0, 1) if key.startswith("gate.") else slice(1, 2)
            key = key.split(".", 1)[1]
        if key not in rows:
            missing.append(key)
        elif not info.is_required() and not isinstance(info.default, schema.BaseModel):
            default = list(info.default) if isinstance(info.default, tuple) else info.default
            text = yaml.safe_dump(default, default_flow_style=True).replace("\n...", "").strip()
            if not any(cell == f"`{text}`" for cell in rows[key][column]):
                missing.append(f"{key} default {text}, README says {rows[key]}")
    assert missing == []
    # What the issue found undocumented, in the words a reader looks for:
    assert "| `checks.yolov5.count_tolerance` | `1` |" in section and "null switches the count check off" in section
    assert "| `inputs.NAME.color` | `rgb` |" in section
    assert "| `convert.quantize.preprocess` | `true` |" in section and "NCHW `.npy` arrays" in section
    assert "| `checks.yolov5.min_agreement_map50` | `null` |" in section


@pytest.mark.parametrize("line, text", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_every_yaml_example_in_the_readme_validates_against_the_fixtures(line, text):
    """Schema, the checks against the ONNX graph (for every version it overrides), the input data."""
    data = as_spec(text)
    spec = spec_from_dict(data, path=EXAMPLE)
    model = read_model_info(spec.model_path)
    for version_spec in [spec, *(spec.for_version(v) for v in spec.raw.get("versions", {}))]:
        check_against_model(version_spec, model)
        prepare_inputs(version_spec, model)
    if spec.checks.yolov5 is not None and spec.checks.yolov5.labels:
        assert spec.resolve(spec.checks.yolov5.labels).exists()


def test_the_readme_has_the_examples_this_test_places():
    assert len(BLOCKS) >= 5
    fragments = [text for _, text in BLOCKS if "model" not in yaml.safe_load(text)]
    assert len(fragments) == len(FRAGMENTS)  # a fragment that no longer exists leaves its FRAGMENTS row behind
    assert "model" in yaml.safe_load(BLOCKS[0][1])  # the first example is a whole spec


def test_the_first_example_runs_as_written_end_to_end(run_pytest, pytester):
    """Saved at the top of the repository as the README says (here: a folder with the fixtures in it)."""
    (pytester.path / "fixtures").symlink_to(FIXTURES)
    (pytester.path / EXAMPLE.name).write_text(BLOCKS[0][1])
    result, _ = run_pytest(EXAMPLE.name)
    result.assert_outcomes(passed=1, warnings=1)  # the warning: its 2.3.2 overrides do nothing in a 2.5.0 run
    assert re.search(r"example\s+2\.5\.0\s+sim\s+logits 0\.99", result.stdout.str())
