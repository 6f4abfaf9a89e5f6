"""Task files: JSONL validation (errors name file and line), round trip, subsets, names, chance."""

from __future__ import annotations

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import pytest

from layerfast import tasks
from layerfast.errors import UsageError
from layerfast.tasks import Item, Task, TaskFormatError, read_jsonl

GOOD = {
    "context": "Q: What is the capital of Peru?\nA:",
    "choices": ["Lima", "Quito"],
    "gold": 0,
    "id": "pe",
}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def bad_file(tmp_path, bad_row_text):
    """A file whose line 1 is valid, line 2 blank and line 3 the bad one."""
    return write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), "", bad_row_text])


def with_(**changes):
    row = {**GOOD, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize(
    "line, words",
    [
        (with_(gold=_DROP), ["missing", "gold"]),
        (with_(context=_DROP, choices=_DROP), ["missing", "context", "choices"]),
        (with_(gold=2), ["gold", "2"]),
        (with_(gold=-1), ["gold", "-1"]),
        (with_(gold=True), ["gold", "True"]),
        (with_(gold="0"), ["gold", "'0'"]),
        (with_(gold=0.0), ["gold"]),
        (with_(choices="Lima"), ["choices"]),
        (with_(choices={"a": "Lima", "b": "Quito"}), ["choices"]),
        (with_(choices=["Lima"]), ["choices", "at least 2"]),
        (with_(choices=[]), ["choices", "at least 2"]),
        (with_(choices=["Lima", ""]), ["choices", "non-empty"]),
        (with_(choices=["Lima", 3]), ["choices"]),
        (with_(choices=["Lima", "Quito", "Lima"]), ["choices", "repeats", "'Lima'"]),
        (with_(context=5), ["context"]),
        (with_(answer=1), ["unknown", "answer"]),
        ('{"context": "Q:", "choices": ["a", "b"], "gold": 0', ["not valid JSON"]),
        ("[1, 2, 3]", ["JSON object", "list"]),
    ],
)
def test_bad_line_error_names_file_and_line(tmp_path, line, words):
    path = bad_file(tmp_path, line)
    with pytest.raises(TaskFormatError) as err:
        read_jsonl(path)
    message = str(err.value)
    assert f"{path}:3" in message  # blank line 2 still counts
    for word in words:
        assert word in message, (word, message)
    # the same through tasks.load, and it is a ValueError for callers that catch those
    with pytest.raises(ValueError, match="bad.jsonl:3"):
        tasks.load(path)


def test_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.jsonl"
    latin1 = json.dumps(GOOD, ensure_ascii=False).replace("Peru", "Per\xfa").encode("latin-1")
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\n" + latin1 + b"\n")
    with pytest.raises(TaskFormatError) as err:
        read_jsonl(path)
    message = str(err.value)
    assert f"{path}:3" in message and "not UTF-8" in message and "0xfa" in message


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    row = {**GOOD, "context": "Q: Capital of Japan?\nA:", "choices": ["東京", "Lima"]}
    path.write_bytes(("\ufeff" + json.dumps(row, ensure_ascii=False) + "\r\n").encode("utf-8"))
    task = read_jsonl(path)
    assert len(task) == 1 and task.items[0].context == row["context"]
    assert task.items[0].choices == ("東京", "Lima")


def test_a_folder_is_not_a_task(tmp_path):
    with pytest.raises(UsageError, match="is a folder"):
        tasks.load(str(tmp_path))
    with pytest.raises(TaskFormatError, match="is a folder"):
        read_jsonl(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n   \n\t\n"], ids=["empty", "blank-lines"])
def test_file_without_items(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TaskFormatError, match="no items") as err:
        read_jsonl(path)
    assert str(path) in str(err.value)


def test_valid_file_round_trips(tmp_path):
    rows = [
        {
            "context": "Q: Capital of Japan?\nA:",
            "choices": ["東京", "Москва", "Lima"],
            "gold": 0,
            "id": "jp",
        },
        {"context": 'He said "hi"', "choices": ["élan", "naïve"], "gold": 1},  # no id
        {"context": "", "choices": ["a", "b", "c", "d"], "gold": 3, "id": 7},
    ]
    src = write_lines(
        tmp_path / "src.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows] + [""]
    )
    task = read_jsonl(src)
    assert task.name == "src"
    assert len(task) == 3
    expected = [
        Item(r["context"], tuple(r["choices"]), r["gold"], str(r.get("id", n)))
        for n, r in enumerate(rows, start=1)
    ]  # default id: the line number
    assert task.items == expected

    out = tmp_path / "out.jsonl"
    task.to_jsonl(out)
    again = read_jsonl(out)
    assert again.items == task.items
    assert again.fingerprint() == task.fingerprint()
    # each written line is a plain JSON object with the four fields
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == [
        "jp",
        "2",
        "7",
    ]


@pytest.fixture
def twenty(tmp_path):
    rows = [
        {"context": f"item {k}:", "choices": ["yes", "no"], "gold": k % 2, "id": f"i{k}"}
        for k in range(20)
    ]
    return write_lines(tmp_path / "twenty.jsonl", [json.dumps(r) for r in rows])


def test_limit_subset_reproducible_sized_ordered(twenty):
    full = tasks.load(twenty)
    assert len(full) == 20
    order = {it.id: k for k, it in enumerate(full.items)}
    a = tasks.load(twenty, limit=7, seed=3)
    b = tasks.load(twenty, limit=7, seed=3)
    assert len(a) == 7
    assert a.items == b.items
    positions = [order[it.id] for it in a.items]
    assert positions == sorted(positions) and len(set(positions)) == 7
    assert set(a.items) <= set(full.items)
    # different seeds pick different subsets (deterministic for this fixed seed set)
    subsets = {tuple(it.id for it in tasks.load(twenty, limit=7, seed=s).items) for s in range(5)}
    assert len(subsets) > 1
    assert tasks.load(twenty, limit=7, seed=0).items != tasks.load(twenty, limit=7, seed=1).items


def test_limit_edges(twenty):
    assert len(tasks.load(twenty, limit=None)) == 20
    assert len(tasks.load(twenty, limit=20)) == 20
    assert len(tasks.load(twenty, limit=500)) == 20
    assert len(tasks.load(twenty, limit=1, seed=9)) == 1
    with pytest.raises(ValueError, match="limit"):
        tasks.load(twenty, limit=0)


def test_subset_of_a_task_object(twenty):
    task = read_jsonl(twenty)
    assert tasks.load(task, limit=5, seed=2).items == task.subset(5, seed=2).items
    assert tasks.load(task) is task


def test_unknown_task_name_lists_builtins():
    with pytest.raises(ValueError) as err:
        tasks.load("no_such_task")
    message = str(err.value)
    assert "no_such_task" in message
    for name in ("capitals", "analogies"):
        assert name in message


@pytest.mark.parametrize("spec", ["missing.jsonl", "some/dir/missing", "missing.json"])
def test_missing_file(tmp_path, spec):
    path = tmp_path / spec
    with pytest.raises(FileNotFoundError) as err:
        tasks.load(str(path))
    assert str(path) in str(err.value)


def test_chance_for_mixed_choice_counts():
    counts = [2, 3, 4, 4, 5]
    items = [
        Item(f"c{k}", tuple(f"x{j}" for j in range(n)), 0, str(k)) for k, n in enumerate(counts)
    ]
    task = Task("mixed", items)
    expected = sum(Fraction(1, n) for n in counts) / len(counts)
    assert task.chance == pytest.approx(float(expected), abs=1e-12)


def test_task_without_items_is_rejected():
    with pytest.raises(TaskFormatError):
        Task("nothing", [])


def test_delimiter_changes_fingerprint(twenty):
    assert read_jsonl(twenty).fingerprint() != read_jsonl(twenty, delimiter="").fingerprint()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LAYERFAST_OFFLINE") == "1", reason="LAYERFAST_OFFLINE=1")
@pytest.mark.parametrize("name, at_least", [("capitals", 150), ("analogies", 10_000)])
def test_builtin_tasks_parse(name, at_least):
    task = tasks.load(name)
    assert len(task) >= at_least
    assert all(len(it.choices) == 4 for it in task.items)
    assert all(len(set(it.choices)) == 4 for it in task.items)
    assert all(0 <= it.gold < 4 for it in task.items)
    assert task.chance == pytest.approx(0.25)
    sub = tasks.load(name, limit=10, seed=1)
    assert len(sub) == 10 and sub.items == tasks.load(name, limit=10, seed=1).items


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LAYERFAST_OFFLINE") == "1", reason="LAYERFAST_OFFLINE=1")
def test_readme_item_counts_match_the_builtin_tasks():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for name, pattern in [
        ("capitals", r"`capitals`\s+\(([\d,]+) questions"),
        ("analogies", r"`analogies` \(([\d,]+) Google analogy items"),
    ]:
        found = re.search(pattern, readme)
        assert found, f"README gives no item count for {name}"
        assert int(found.group(1).replace(",", "")) == len(tasks.load(name)), name
