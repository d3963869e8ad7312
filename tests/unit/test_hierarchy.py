"""Hierarchical taxonomies: the tree and its checks, roll-up, answers that fall back to a parent, the
hierarchy-aware metrics, and the taxonomy file's ``parent`` column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from app.taxonomy import Taxonomy
from models.hierarchy import Hierarchy, HierarchyError
from models.metrics import lca_score, level_accuracy
from tests.conftest import make_settings

# ISCO-like: 2 major groups, 2-digit sub-majors below them, one 3-digit unit below "21"
LABELS = ["1", "2", "11", "12", "21", "22", "211"]
PARENTS = {"11": "1", "12": "1", "21": "2", "22": "2", "211": "21"}


@pytest.fixture
def tree() -> Hierarchy:
    return Hierarchy(LABELS, PARENTS)


def test_the_tree_paths_depths_leaves_and_lca(tree: Hierarchy) -> None:
    assert tree.roots == ("1", "2") and tree.leaves == ("11", "12", "22", "211")
    assert tree.path("211") == ("2", "21", "211") and tree.depth("211") == 2 and tree.depth("1") == 0
    assert tree.n_levels == 3 and not tree.is_flat
    assert tree.ancestor_at("211", 1) == "21" and tree.ancestor_at("12", 2) is None
    assert tree.lca("211", "22") == "2" and tree.lca("11", "211") is None and tree.lca("12", "12") == "12"
    flat = Hierarchy.flat(["a", "b"])
    assert flat.is_flat and flat.leaves == flat.roots == ("a", "b") and flat.n_levels == 1


@pytest.mark.parametrize(
    ("parents", "message"),
    [
        ({"11": "9"}, r"unknown parent .*'11' → '9'"),
        ({"1": "1"}, r"parent cycle: '1' → '1'"),
        ({"1": "11", "11": "1"}, r"parent cycle: '1' → '11' → '1'"),
        ({"x": "1"}, r"not in the list: 'x'"),
    ],
    ids=["unknown", "self", "cycle", "stray"],
)
def test_a_broken_tree_is_one_clear_error(parents: dict[str, str], message: str) -> None:
    with pytest.raises(HierarchyError, match=message):
        Hierarchy(LABELS, parents)


def test_rollup_sums_the_leaves_below_every_node(tree: Hierarchy) -> None:
    classes = list(tree.leaves)  # 11, 12, 22, 211
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]])
    rolled = tree.rollup(probs, classes)
    by = {lab: rolled[0, i] for i, lab in enumerate(tree.labels)}
    assert by["1"] == pytest.approx(0.3) and by["2"] == pytest.approx(0.7) and by["21"] == pytest.approx(0.4)
    assert by["211"] == pytest.approx(0.4) and by["12"] == pytest.approx(0.2)
    assert rolled[1, tree.index["1"]] == pytest.approx(1.0) and rolled[1, tree.index["2"]] == 0.0
    with pytest.raises(HierarchyError, match="'99'"):
        tree.rollup(probs, ["11", "12", "22", "99"])


def test_the_answer_falls_back_to_the_parent_before_abstaining(tree: Hierarchy) -> None:
    classes = list(tree.leaves)  # 11, 12, 22, 211
    sure = tree.answers(np.array([[0.05, 0.05, 0.1, 0.8]]), classes, 0.5)[0]
    assert (sure.label, sure.level, sure.path) == ("211", 2, ("2", "21", "211"))
    assert sure.confidence == pytest.approx(0.8)
    # no leaf reaches 0.5, but their group "1" does: the parent answers, level 0
    parent = tree.answers(np.array([[0.3, 0.3, 0.2, 0.2]]), classes, 0.5)[0]
    assert (parent.label, parent.level, parent.path) == ("1", 0, ("1",)) and parent.confidence == pytest.approx(0.6)
    # siblings outweigh the most probable leaf: the descent follows the rolled-up mass (2 = 0.55), not 11
    mass = tree.answers(np.array([[0.45, 0.0, 0.3, 0.25]]), classes, 0.2)[0]
    assert mass.path == ("2", "22")
    none = tree.answers(np.array([[0.25, 0.25, 0.25, 0.25]]), classes, 0.6)[0]
    assert none.label is None and none.level is None and none.path == () and none.confidence == pytest.approx(0.5)


def test_a_flat_hierarchy_answers_like_the_single_threshold() -> None:
    flat = Hierarchy.flat(["a", "b", "c"])
    probs = np.array([[0.2, 0.5, 0.3], [0.34, 0.33, 0.33], [0.4, 0.4, 0.2]])
    answers = flat.answers(probs, ["a", "b", "c"], 0.35)
    assert [a.label for a in answers] == ["b", None, "a"]  # ties: the first, as argmax
    assert answers[0].level == 0 and answers[0].path == ("b",)


def test_level_accuracy_and_lca_score_against_hand_counts(tree: Hierarchy) -> None:
    true = ["211", "211", "11", "22"]
    pred: list[str | None] = ["211", "22", "1", None]
    levels = level_accuracy(tree, true, pred)
    # level 0: 211→2 ✓, 22→2 ✓, 1 ✓, None ✗; level 1: 21 ✓, 22 ✗, (1 is shallower) ✗, ✗; level 2: ✓ ✗
    assert levels[0] == {"accuracy": 0.75, "n": 4.0}
    assert levels[1]["accuracy"] == pytest.approx(0.25) and levels[2] == {"accuracy": 0.5, "n": 2.0}
    # 1, 1/3 (LCA "2" of a 3-node path), 1/2 (the right parent of "11"), 0
    assert lca_score(tree, true, pred) == pytest.approx((1 + 1 / 3 + 1 / 2 + 0) / 4)
    assert lca_score(tree, [], []) == 0.0


# ---- the taxonomy file's parent column --------------------------------------------------------
def test_a_parent_column_makes_a_hierarchical_taxonomy(tmp_path: Path) -> None:
    path = tmp_path / "isco.csv"
    path.write_text(
        "id,label,display_name,parent\n"
        "1,Managers,Managers,\n2,Professionals,,\n21,Science professionals,,2\n25,ICT professionals,,Professionals\n"
        "11,Chief executives,,1\n"
    )
    taxonomy = Taxonomy.from_csv(path)
    assert taxonomy.is_hierarchical
    assert taxonomy.leaves == ("Science professionals", "ICT professionals", "Chief executives")
    # by id ("2", "1") or by label ("Professionals")
    assert taxonomy.hierarchy.path("ICT professionals") == ("Professionals", "ICT professionals")
    assert taxonomy.hierarchy.path("Chief executives") == ("Managers", "Chief executives")
    assert taxonomy.not_a_leaf("Professionals") is not None and taxonomy.not_a_leaf("Chief executives") is None
    flat = tmp_path / "flat.csv"
    flat.write_text("id,label,display_name\n1,Managers,Managers\n2,Professionals,\n")
    blank = tmp_path / "blank.csv"
    blank.write_text("id,label,display_name,parent\n1,Managers,Managers,\n2,Professionals,,\n")
    # an empty parent column is a flat taxonomy, with the same digest: its models stay valid
    assert Taxonomy.from_csv(blank).digest == Taxonomy.from_csv(flat).digest != taxonomy.digest
    same = Taxonomy.from_csv(blank)
    assert not same.is_hierarchical and same.leaves == ("Managers", "Professionals")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("A,\nB,Z\n", r"line 3: label 'B' has parent 'Z', which is not a label of the file"),
        ("A,B\nB,A\n", r"parent cycle: 'A' → 'B' → 'A'"),
    ],
    ids=["unknown-parent", "cycle"],
)
def test_a_broken_parent_column_stops_start_up_with_one_line(tmp_path: Path, rows: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("label,parent\n" + rows)
    with pytest.raises(ValueError, match=message):
        Taxonomy.from_csv(path)
    with pytest.raises(ValidationError, match=message + r".*JOBCLASS_TAXONOMY_PATH"):
        make_settings(tmp_path, taxonomy_path=path)
