"""The one serializer behind every --json document, and the schema names it writes."""

import dataclasses
import json
import re
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import ClassVar

import pytest

from tcpmax.model.schema import Schema, document, to_jsonable

DOCS = Path(__file__).resolve().parents[2] / "docs" / "json.md"


class Colour(StrEnum):
    RED = "red"


class Level(IntEnum):
    HIGH = 3


@dataclasses.dataclass(frozen=True)
class Box:
    __json_extra__: ClassVar[tuple[str, ...]] = ("area",)

    width: int
    height: int
    cache: object = dataclasses.field(default=None, metadata={"json": False})

    @property
    def area(self) -> int:
        return self.width * self.height


@pytest.mark.parametrize("value", [None, True, 0, 7, 2.5, "text"])
def test_plain_values_stay_as_they_are(value):
    assert to_jsonable(value) == value
    assert type(to_jsonable(value)) is type(value)


def test_an_enum_becomes_its_value():
    assert to_jsonable(Colour.RED) == "red" and type(to_jsonable(Colour.RED)) is str
    assert to_jsonable(Level.HIGH) == 3 and type(to_jsonable(Level.HIGH)) is int


def test_a_path_becomes_its_text():
    assert to_jsonable(Path("/var/lib/tcpmax")) == "/var/lib/tcpmax"


def test_tuples_and_lists_become_arrays():
    assert to_jsonable((1, (2, 3), [Colour.RED])) == [1, [2, 3], ["red"]]


def test_sets_become_sorted_arrays():
    assert to_jsonable({"b", "c", "a"}) == ["a", "b", "c"]
    assert to_jsonable(frozenset({3, 1, 2})) == [1, 2, 3]


def test_mapping_keys_become_text_and_enum_keys_their_value():
    assert to_jsonable({Colour.RED: 1, 2: Path("/x")}) == {"red": 1, "2": "/x"}


def test_a_dataclass_gives_its_fields_in_order_with_its_extras_and_without_hidden_ones():
    data = to_jsonable(Box(2, 3, cache=object()))
    assert list(data) == ["width", "height", "area"]
    assert data == {"width": 2, "height": 3, "area": 6}


def test_nested_values_are_converted_all_the_way_down():
    data = to_jsonable({"boxes": (Box(1, 1),), "where": Path("/p")})
    assert json.loads(json.dumps(data)) == {"boxes": [{"width": 1, "height": 1, "area": 1}],
                                            "where": "/p"}


def test_a_value_with_no_json_form_is_refused_by_name():
    with pytest.raises(TypeError, match="bytes"):
        to_jsonable(b"raw")


def test_a_document_names_its_schema_first_then_parts_then_fields():
    doc = document(Schema.PLAN, Box(2, 3), {"extra": Colour.RED}, last=(1, 2))
    assert list(doc) == ["schema", "width", "height", "area", "extra", "last"]
    assert doc["schema"] == "tcpmax.plan/1" and doc["last"] == [1, 2]


def test_a_part_that_already_names_the_same_schema_is_merged_once():
    inner = document(Schema.SERVE_STATS, {"workers": 2})
    doc = document(Schema.SERVE_STATS, inner, stopped="SIGINT")
    assert doc == {"schema": "tcpmax.serve.stats/1", "workers": 2, "stopped": "SIGINT"}


def test_a_part_of_another_schema_is_refused():
    with pytest.raises(ValueError, match=re.escape("tcpmax.doctor/1")):
        document(Schema.LOAD, document(Schema.DOCTOR))


def test_a_part_that_is_not_an_object_is_refused():
    with pytest.raises(TypeError):
        document(Schema.LOAD, [1, 2])


def test_every_schema_is_documented_in_docs_json_md():
    text = DOCS.read_text()
    missing = [s.value for s in Schema if f"## `{s.value}`" not in text]
    assert not missing
