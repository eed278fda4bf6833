"""The layout registry: every registered layout is detected on a miniature of its own (also inside
a wrapper folder), labels the files it was detected on, and is documented where people look:
README.md's layout table and the params.yaml comment on ``data.source``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from fakeface import CLASS_NAMES
from fakeface.ingest.layouts import detect_layout, get_layout, list_layouts, markdown_table, register
from ingest_data import build_140k, build_artifact, build_ciplab, build_csv_set, build_plain, build_split_folders

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- layouts:start -->", "<!-- layouts:end -->"

#: Layout name -> a builder of the smallest folder in that layout (returns the folder).
FIXTURES: dict[str, Callable[[Path], Path]] = {
    "140k": lambda root: build_140k(root, per_class=1).parents[1],
    "splits": lambda root: build_split_folders(root, (("Train", 1), ("Validation", 1), ("Test", 1))),
    "folders": lambda root: build_plain(root, per_class=2),
    "ciplab": build_ciplab,
    "artifact": lambda root: build_artifact(root, per_generator=1),
    "csv": lambda root: build_csv_set(root, with_split=False).parent,
}


def test_every_registered_layout_has_a_fixture() -> None:
    assert sorted(list_layouts()) == sorted(FIXTURES), "add a miniature to FIXTURES for a new layout"


@pytest.mark.parametrize("name", list_layouts())
def test_layout_is_detected_on_its_own_shape(name: str, tmp_path: Path) -> None:
    found = detect_layout(FIXTURES[name](tmp_path / name))
    assert found is not None and found.name == name
    assert isinstance(found, get_layout(name))


@pytest.mark.parametrize("name", list_layouts())
def test_layout_is_detected_inside_a_wrapper_folder(name: str, tmp_path: Path) -> None:
    FIXTURES[name](tmp_path / "archive" / "wrapper")
    (tmp_path / "archive" / "__MACOSX").mkdir()  # what macOS zips add: never a data set
    found = detect_layout(tmp_path / "archive")
    assert found is not None and found.name == name


@pytest.mark.parametrize("name", list_layouts())
def test_layout_labels_every_image_it_was_detected_on(name: str, tmp_path: Path) -> None:
    root = FIXTURES[name](tmp_path / name)
    entries = detect_layout(root).scan(root, str)
    assert entries
    assert [e.path for e in entries] == sorted(e.path for e in entries)
    for entry in entries:
        assert entry.path.endswith(".jpg"), f"{entry.path}: the data set's own lists are not entries"
        assert entry.reason is None and entry.label in CLASS_NAMES, entry


def test_an_exactly_spelt_split_tree_is_140k_and_another_spelling_is_splits(tmp_path: Path) -> None:
    """The two split-folder layouts differ only in spelling; the order of the registry and the
    140k adapter's exact spelling keep them apart."""
    build_split_folders(tmp_path / "exact", (("train", 1), ("valid", 1), ("test", 1)))
    build_split_folders(tmp_path / "mixed", (("train", 1), ("val", 1), ("test", 1)))
    assert detect_layout(tmp_path / "exact").name == "140k"
    assert detect_layout(tmp_path / "mixed").name == "splits"


def test_nothing_recognisable_is_no_layout(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    assert detect_layout(tmp_path) is None


def test_registry_lookups_say_what_exists() -> None:
    assert list_layouts()[0] == "140k" and len(set(list_layouts())) == len(list_layouts())
    with pytest.raises(ValueError, match="unknown layout 'nope'; expected one of 140k"):
        get_layout("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register(get_layout("csv"))


# --------------------------------------------------------------------------- documentation


def test_readme_layout_table_is_rendered_from_the_registry() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Real data", 1)[1].split("\n## ", 1)[0]
    assert START in section and END in section, "README.md's 'Real data' section holds the layout table"
    block = section.split(START, 1)[1].split(END, 1)[0]
    assert block.strip() == markdown_table().strip(), (
        "README.md's layout table differs from the registry: replace the lines between the "
        "layouts markers with fakeface.ingest.layouts.markdown_table()"
    )
    for name in list_layouts():
        assert f"| `{name}` |" in block


def _data_source_comment() -> str:
    """The comment on params.yaml's ``data.source`` line and the comment lines right below it."""
    lines = (ROOT / "params.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^  source:", line))
    comment = [lines[start].split("#", 1)[1]]
    for line in lines[start + 1 :]:
        if not line.strip().startswith("#"):
            break
        comment.append(line.strip()[1:])
    return " ".join(part.strip() for part in comment)


def test_params_yaml_names_every_layout_in_detection_order() -> None:
    match = re.search(r"layouts\b[^:]*:\s*([\w, ]+)", _data_source_comment())
    assert match, "params.yaml's data.source comment lists the folder layouts after 'layouts ...:'"
    named = [name.strip() for name in match.group(1).split(",") if name.strip()]
    assert named == list_layouts()
