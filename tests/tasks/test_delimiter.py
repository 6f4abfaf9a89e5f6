"""The delimiter between context and choice (issue 15, part 4): a JSONL file's settings line,
``lf.tasks.load(delimiter=)``, ``--target-delimiter``, the doubled-space warning, and the
delimiter's effect on tokens and on the Game's cache key."""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

import layerfast
import layerfast as lf
import layerfast.models
from layerfast import cli, tasks
from layerfast.bench.workload import load_workload
from layerfast.errors import LayerfastWarning, UsageError
from layerfast.tasks import Item, Task, TaskFormatError, read_jsonl
from tests.cli.test_cli import record_games, run, save_tiny_model, sweep
from tests.conftest import TINY_ITEMS

ROWS = [
    {"context": "Q: What is the capital of France?\nA:", "choices": ["Paris", "Lima"], "gold": 0},
    {"context": "Q: What is the capital of Peru?\nA:", "choices": ["Lima", "Caracas"], "gold": 0},
    {"context": "the cat sat on the", "choices": ["mat", "log", "dog"], "gold": 0},
]


def spaced(rows=ROWS, lead=" "):
    """``rows`` with every choice led by ``lead`` (lm-eval-style data)."""
    return [{**r, "choices": [lead + c for c in r["choices"]]} for r in rows]


def write(path, *lines):
    """A JSONL file of ``lines``: dicts are dumped as JSON, strings written as they are."""
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def no_warning():
    """A block in which a LayerfastWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        yield


# --- the settings line ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", " ", "\n", "\n\n", " :: ", "\t"])
def test_settings_line_sets_the_delimiter(tmp_path, value):
    path = write(tmp_path / "t.jsonl", {"delimiter": value}, *ROWS)
    task = read_jsonl(path)
    assert task.delimiter == value
    assert [it.context for it in task.items] == [r["context"] for r in ROWS]
    assert [it.id for it in task.items] == ["2", "3", "4"]  # ids are still the line numbers
    assert tasks.load(path).delimiter == value
    assert tasks.load(path, limit=2, seed=1).delimiter == value


def test_settings_line_after_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    body = "\ufeff\n  \n" + json.dumps({"delimiter": ""}) + "\r\n" + json.dumps(ROWS[0]) + "\n"
    path.write_bytes(body.encode("utf-8"))
    task = read_jsonl(path)
    assert task.delimiter == "" and len(task) == 1


def test_empty_settings_object_keeps_the_default(tmp_path):
    assert read_jsonl(write(tmp_path / "t.jsonl", {}, *ROWS)).delimiter == " "


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"delimter": ""}, ["unknown setting", "'delimter'", "allowed: delimiter"]),
        ({"delimiter": "", "target_delimiter": ""}, ["unknown setting", "'target_delimiter'"]),
        ({"fewshot": 5}, ["unknown setting", "'fewshot'"]),
    ],
)
def test_unknown_setting_names_file_line_and_key(tmp_path, settings, words):
    path = write(tmp_path / "t.jsonl", "", settings, *ROWS)
    with pytest.raises(TaskFormatError) as err:
        read_jsonl(path)
    message = str(err.value)
    assert f"{path}:2" in message, message  # the blank line 1 still counts
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("value", [None, 0, 1.5, True, [" "], {"s": " "}])
def test_delimiter_setting_must_be_a_string(tmp_path, value):
    path = write(tmp_path / "t.jsonl", {"delimiter": value}, *ROWS)
    with pytest.raises(TaskFormatError) as err:
        read_jsonl(path)
    message = str(err.value)
    assert f"{path}:1" in message and "'delimiter' must be a string" in message
    assert repr(value) in message


@pytest.mark.parametrize("settings", [{"delimiter": ""}, {}])
def test_settings_line_after_an_item_is_an_error(tmp_path, settings):
    path = write(tmp_path / "t.jsonl", ROWS[0], "", settings, *ROWS[1:])
    with pytest.raises(TaskFormatError) as err:
        read_jsonl(path)
    message = str(err.value)
    assert f"{path}:3" in message and "first line" in message, message


def test_settings_line_twice_is_an_error(tmp_path):
    path = write(tmp_path / "t.jsonl", {"delimiter": ""}, {"delimiter": " "}, *ROWS)
    with pytest.raises(TaskFormatError, match=r"t\.jsonl:2: .*first line"):
        read_jsonl(path)


def test_a_delimiter_field_in_an_item_points_to_the_settings_line(tmp_path):
    path = write(tmp_path / "t.jsonl", {**ROWS[0], "delimiter": ""})
    with pytest.raises(TaskFormatError) as err:
        read_jsonl(path)
    message = str(err.value)
    assert f"{path}:1" in message and "delimiter" in message and "first line" in message


def test_an_item_without_context_is_not_taken_for_settings(tmp_path):
    row = {k: v for k, v in ROWS[0].items() if k != "context"}
    path = write(tmp_path / "t.jsonl", row, *ROWS)
    with pytest.raises(TaskFormatError, match=r"t\.jsonl:1: missing field\(s\) context"):
        read_jsonl(path)


def test_a_file_with_only_settings_has_no_items(tmp_path):
    path = write(tmp_path / "t.jsonl", {"delimiter": ""})
    with pytest.raises(TaskFormatError, match="no items"):
        read_jsonl(path)


# --- precedence: argument > file > " " ------------------------------------------------------------
@pytest.mark.parametrize(
    "in_file, argument, expected",
    [
        (None, None, " "),
        (None, "", ""),
        (None, "\n", "\n"),
        ("", None, ""),
        ("", " ", " "),
        ("\n", "", ""),
        (" ", "\t", "\t"),
    ],
)
def test_argument_wins_over_file_which_wins_over_default(tmp_path, in_file, argument, expected):
    settings = [] if in_file is None else [{"delimiter": in_file}]
    path = write(tmp_path / "t.jsonl", *settings, *ROWS)
    assert read_jsonl(path, delimiter=argument).delimiter == expected
    assert tasks.load(path, delimiter=argument).delimiter == expected
    assert tasks.load(str(path), limit=2, seed=0, delimiter=argument).delimiter == expected


@pytest.mark.parametrize("spec", ["capitals", "analogies", "bigbench:some_task", "lm_eval:arc"])
def test_a_delimiter_for_a_task_by_name_is_an_error_before_it_loads(monkeypatch, spec):
    def fail(*args, **kwargs):
        raise AssertionError("the task was loaded although its delimiter was refused")

    for name in list(tasks.BUILTIN):
        monkeypatch.setitem(tasks.BUILTIN, name, fail)
    monkeypatch.setattr(tasks, "bigbench", fail)
    with pytest.raises(UsageError) as err:
        tasks.load(spec, delimiter="")
    message = str(err.value)
    assert spec in message and "JSONL" in message and "delimiter" in message


def test_a_delimiter_for_a_task_object_is_an_error():
    task = Task("t", [Item("c", ("a", "b"), 0, "0")])
    with pytest.raises(UsageError, match="Task object"):
        tasks.load(task, delimiter="")
    assert tasks.load(task) is task


def test_a_delimiter_does_not_hide_other_task_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown task 'nope'"):
        tasks.load("nope", delimiter="")
    with pytest.raises(FileNotFoundError):
        tasks.load(str(tmp_path / "missing.jsonl"), delimiter="")
    # a file whose name looks like a family spec is still a file
    path = write(tmp_path / "x:y.jsonl", *ROWS)
    assert tasks.load(str(path), delimiter="").delimiter == ""


def test_to_jsonl_round_trips_the_delimiter(tmp_path):
    items = [Item(r["context"], tuple(r["choices"]), r["gold"], str(k)) for k, r in enumerate(ROWS)]
    for delimiter in ["", "\n", " "]:
        task = Task("t", items, delimiter)
        task.to_jsonl(tmp_path / "t.jsonl")
        first = json.loads((tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()[0])
        assert ("context" not in first) == (delimiter != " ")  # " ": no settings line
        again = read_jsonl(tmp_path / "t.jsonl")
        assert again.delimiter == delimiter and again.items == task.items
        assert again.fingerprint() == task.fingerprint()
    # a doubled space on purpose: written as an explicit setting, read back without the warning
    led = [Item(it.context, tuple(" " + c for c in it.choices), it.gold, it.id) for it in items]
    Task("t", led, " ").to_jsonl(tmp_path / "led.jsonl")
    with no_warning():
        again = read_jsonl(tmp_path / "led.jsonl")
    assert again.delimiter == " " and again.items == led


# --- the doubled-space warning -------------------------------------------------------------------
@pytest.mark.parametrize("lead", [" ", "\t", "\n", "\u00a0"])
def test_warning_when_every_choice_starts_with_whitespace(tmp_path, lead):
    path = write(tmp_path / "lmeval.jsonl", *spaced(lead=lead))
    with pytest.warns(LayerfastWarning) as record:
        task = tasks.load(path)
    assert task.delimiter == " "  # a warning, not a change
    assert len(record) == 1
    message = str(record[0].message)
    assert str(path) in message
    assert '--target-delimiter ""' in message and '{"delimiter": ""}' in message
    assert record[0].filename == __file__  # attributed to the caller's line


@pytest.mark.parametrize(
    "settings, argument, rows",
    [
        ([], None, ROWS),  # no choice starts with whitespace
        ([], None, spaced()[:2] + ROWS[2:]),  # one item's choices do not
        ([], None, [{**spaced()[0], "choices": [" Paris", "Lima"]}]),  # one choice does not
        ([{"delimiter": ""}], None, spaced()),  # the file fixes it
        ([], "", spaced()),  # the caller fixes it
        ([{"delimiter": " "}], None, spaced()),  # the file asks for the doubled space
        ([], " ", spaced()),  # so does the caller
        ([{"delimiter": "\n"}], None, spaced()),  # another delimiter
    ],
)
def test_no_warning_otherwise(tmp_path, settings, argument, rows):
    path = write(tmp_path / "t.jsonl", *settings, *rows)
    with no_warning():
        tasks.load(path, delimiter=argument)


# --- tokens and the cache key --------------------------------------------------------------------
def led_task(task_factory, lead: str, delimiter: str, name: str = "tiny") -> Task:
    task = task_factory([(c, [lead + x for x in ch], g) for c, ch, g in TINY_ITEMS], name)
    return Task(task.name, task.items, delimiter)


def test_requests_use_the_delimiter(task_factory, tiny_tokenizer_fixture):
    """Delimiter "" with choices " Paris" gives exactly the tokens of " " with "Paris"."""
    tok = tiny_tokenizer_fixture
    harness = led_task(task_factory, "", " ").requests(tok)
    own_space = led_task(task_factory, " ", "").requests(tok)
    assert own_space == harness
    doubled = led_task(task_factory, " ", " ").requests(tok)
    assert doubled != harness
    newline = led_task(task_factory, "", "\n").requests(tok)
    assert newline != harness
    # the continuation is the delimiter + choice, encoded after the context (harness rule)
    for r in newline:
        item = TINY_ITEMS[r.group]
        whole = tok.encode(item[0] + "\n" + item[1][r.unit])
        assert list(r.input_ids) + [r.targets[-1]] == whole


def test_cache_key_changes_with_the_delimiter(tiny_llama, task_factory, tmp_path):
    """Same items, another delimiter: another key, so cached log-likelihoods are not reused."""
    path = tmp_path / "cache.sqlite"
    masks = np.ones((2, tiny_llama.n_players), bool)
    masks[1, 2] = False

    def game(task):
        g = lf.Game(tiny_llama, task, utility="acc", cache=path, progress=False)
        g(masks)
        return g

    base = game(led_task(task_factory, "", " "))
    assert base.n_forward == 2
    again = game(led_task(task_factory, "", " "))
    assert again.cache_key == base.cache_key and again.n_forward == 0
    for lead, delimiter in [("", "\n"), ("", ""), (" ", "")]:
        other = game(led_task(task_factory, lead, delimiter))
        assert other.cache_key != base.cache_key, (lead, delimiter)
        assert other.n_forward == 2, (lead, delimiter)


# --- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model_factory, tiny_tokenizer_fixture):
    folder = tmp_path_factory.mktemp("model") / "tiny-llama"
    return save_tiny_model(folder, model_factory, tiny_tokenizer_fixture)


@pytest.fixture
def led_file(tmp_path):
    rows = [{"context": c, "choices": [" " + x for x in ch], "gold": g} for c, ch, g in TINY_ITEMS]
    return write(tmp_path / "led.jsonl", *rows[:4])


def unled(task: Task) -> Task:
    """``task`` with each choice's leading space moved into the delimiter " "."""
    items = [
        Item(it.context, tuple(c[1:] for c in it.choices), it.gold, it.id) for it in task.items
    ]
    assert all(c[:1] == " " for it in task.items for c in it.choices)
    return Task(task.name, items, task.delimiter + " ")


class Stop(Exception):
    """Raised in place of loading the model, once the task is known."""


def task_of(monkeypatch, argv) -> Task:
    """The task ``layerfast ARGV`` builds, without loading a model."""
    seen = []
    original = tasks.load

    def load(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(tasks, "load", load)
    monkeypatch.setattr(layerfast.cli.common, "load_model", stop)
    with pytest.raises(Stop):
        cli.main([str(a) for a in argv])
    (task,) = seen
    return task


@pytest.mark.parametrize("verb", ["ablate", "shapley", "report", "prune", "eavss"])
@pytest.mark.parametrize(
    "flag, expected",
    [("", ""), (" ", " "), ("\\n", "\n"), ("\\n\\t|", "\n\t|"), ("\\\\n", "\\n"), ("é ", "é ")],
)
def test_flag_value_reaches_the_task(monkeypatch, tmp_path, led_file, verb, flag, expected):
    argv = sweep(verb, "unused", led_file, tmp_path / "o", "--target-delimiter", flag)
    assert task_of(monkeypatch, argv).delimiter == expected


def test_without_the_flag_the_file_decides(monkeypatch, tmp_path, led_file):
    text = led_file.read_text(encoding="utf-8")
    led_file.write_text(json.dumps({"delimiter": "\n"}) + "\n" + text, encoding="utf-8")
    argv = sweep("ablate", "unused", led_file, tmp_path / "o")
    assert task_of(monkeypatch, argv).delimiter == "\n"
    argv += ["--target-delimiter", ""]
    assert task_of(monkeypatch, argv).delimiter == ""


def _no_load(*args, **kwargs):
    raise AssertionError("a model was loaded although --target-delimiter was already refused")


@pytest.mark.parametrize(
    "task, flag, words",
    [
        ("capitals", "", ["--target-delimiter", "--task capitals", "own delimiter"]),
        ("bigbench:x", " ", ["--target-delimiter", "--task bigbench:x", "own delimiter"]),
        ("led", "\\x", ["--target-delimiter", "unknown escape \\x (known: \\n,"]),
        ("led", "ab\\", ["--target-delimiter", "a lone \\ at the end"]),
    ],
)
def test_flag_errors_before_the_model_loads(
    capsys, monkeypatch, tmp_path, led_file, task, flag, words
):
    monkeypatch.setattr(layerfast.models, "load", _no_load)
    monkeypatch.setattr(layerfast, "load", _no_load, raising=False)
    out = tmp_path / "o"
    task = led_file if task == "led" else task
    rc, _, err = run(capsys, *sweep("ablate", "unused", task, out, "--target-delimiter", flag))
    assert rc == 2, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("layerfast ablate: error:"), line
    for word in words:
        assert word in line, (word, line)
    assert not out.exists()


def test_cli_run_with_the_flag(capsys, monkeypatch, model_dir, tmp_path, led_file):
    """End to end: without the flag the run warns about the doubled space; with
    ``--target-delimiter ""`` it does not, and scores the tokens of the harness's layout."""
    games = record_games(monkeypatch)
    rc, _, err = run(capsys, *sweep("ablate", model_dir, led_file, tmp_path / "a"))
    assert rc == 0, err
    assert "layerfast ablate: warning:" in err and '--target-delimiter ""' in err
    rc, _, err = run(
        capsys,
        *sweep("ablate", model_dir, led_file, tmp_path / "b", "--target-delimiter", ""),
    )
    assert rc == 0, err
    assert "warning" not in err, err
    doubled, fixed = games
    assert (doubled.task.delimiter, fixed.task.delimiter) == (" ", "")
    assert fixed.requests == unled(fixed.task).requests(fixed.model.tokenizer)
    assert doubled.requests != fixed.requests


# --- bench ---------------------------------------------------------------------------------------
def test_bench_workload_takes_the_delimiter(tiny_llama, led_file):
    work = load_workload(tiny_llama, str(led_file), 3, 0, None, delimiter="")
    assert work.task_object.delimiter == "" and work.n_items == 3 and work.n_items_full == 4
    assert work.requests == unled(work.task_object).requests(tiny_llama.tokenizer)
    with pytest.raises(UsageError, match="no delimiter"):
        load_workload(tiny_llama, "synthetic", 3, 0, None, delimiter="")
