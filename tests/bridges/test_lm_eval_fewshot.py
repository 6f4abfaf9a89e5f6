"""``num_fewshot`` larger than an lm-evaluation-harness task's few-shot pool: one line naming the
task, its pool and the flag, instead of the harness's "Sample larger than population" traceback.
Local task YAMLs over JSONL files, offline (tests/helpers/harness.py)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")

import layerfast as lf  # noqa: E402
from layerfast.bridges import lm_eval_load  # noqa: E402
from layerfast.errors import UsageError  # noqa: E402
from tests.helpers.harness import builtin_yaml, local_data, offline, write_jsonl  # noqa: E402


def arc_docs(n: int, start: int) -> list[dict]:
    return [
        {
            "id": f"arc{start + i}",
            "question": f"Which word is number {start + i}?",
            "choices": {"text": ["cat", "dog", "fox", "owl"], "label": ["A", "B", "C", "D"]},
            "answerKey": "ABCD"[(start + i) % 4],
        }
        for i in range(n)
    ]


def mmlu_docs(n: int, start: int) -> list[dict]:
    return [
        {"question": f"What is {start + i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """lf_arc3: arc_easy's prompt with a 3-document train split (the default random sampler);
    lf_mmlu2: MMLU's template, 5-shot from a 2-document dev split (first_n) set in its YAML;
    lf_self: arc with its few-shot examples drawn from the test split itself (the document
    asked is left out)."""
    root = tmp_path_factory.mktemp("fewshot")
    data, folder, cache = root / "data", root / "tasks", root / "hf_datasets"
    folder.mkdir()
    arc = {
        "train": write_jsonl(data / "arc_train.jsonl", arc_docs(3, 0)),
        "validation": write_jsonl(data / "arc_validation.jsonl", arc_docs(2, 10)),
        "test": write_jsonl(data / "arc_test.jsonl", arc_docs(4, 20)),
    }
    include = f"include: {json.dumps(builtin_yaml('arc/arc_easy.yaml'))}\ntag: []\n"
    (folder / "lf_arc3.yaml").write_text(include + "task: lf_arc3\n" + local_data(arc, cache))
    (folder / "lf_self.yaml").write_text(
        include + "task: lf_self\n" + local_data(arc, cache) + "fewshot_split: test\n"
    )
    mmlu = {
        "dev": write_jsonl(data / "mmlu_dev.jsonl", mmlu_docs(2, 0)),
        "test": write_jsonl(data / "mmlu_test.jsonl", mmlu_docs(4, 10)),
    }
    template = builtin_yaml("mmlu/default/_default_template_yaml")
    (folder / "lf_mmlu2.yaml").write_text(
        f"include: {json.dumps(template)}\ntask: lf_mmlu2\n"
        + local_data(mmlu, cache)
        + "num_fewshot: 5\n"
    )
    return folder


def load(folder, name: str, **options):
    with pytest.MonkeyPatch.context() as mp, offline(mp):
        return lf.tasks.load(f"lm_eval:{name}", include_path=folder, limit=2, **options)


def test_the_flag_asking_more_than_the_pool(tasks):
    with pytest.raises(UsageError) as e:
        load(tasks, "lf_arc3", num_fewshot=5)
    text = str(e.value)
    assert "\n" not in text and text.startswith("task lf_arc3: num_fewshot=5 (--num-fewshot")
    assert "pool (split 'train') holds only 3 usable documents" in text
    assert "use --num-fewshot 3 or fewer" in text
    assert load(tasks, "lf_arc3", num_fewshot=3).notes["tasks"]["lf_arc3"]["num_fewshot"] == 3


def test_the_yaml_asking_more_than_the_pool(tasks):
    with pytest.raises(UsageError) as e:
        load(tasks, "lf_mmlu2")
    text = str(e.value)
    assert text.startswith("task lf_mmlu2: num_fewshot=5 (set by the task's YAML")
    assert "holds only 2 usable documents" in text
    assert load(tasks, "lf_mmlu2", num_fewshot=2).notes["tasks"]["lf_mmlu2"]["num_fewshot"] == 2


def test_a_pool_that_is_the_test_split_leaves_the_document_out(tasks):
    with pytest.raises(UsageError) as e:
        load(tasks, "lf_self", num_fewshot=4)
    assert "(split 'test', less the document asked) holds only 3 usable documents" in str(e.value)
    load(tasks, "lf_self", num_fewshot=3)


def test_the_harness_error_is_caught_should_the_check_miss_it(tasks, monkeypatch):
    monkeypatch.setattr(lm_eval_load, "check_fewshot_pool", lambda *args, **kwargs: None)
    with pytest.raises(UsageError) as e:
        load(tasks, "lf_arc3", num_fewshot=5)
    text = str(e.value)
    assert "\n" not in text and "task lf_arc3" in text and "holds only 3" in text
    assert "Sample larger than population" in text


def test_the_command_line_says_it_in_one_line_before_the_model_loads(tasks, capsys, tmp_path):
    """``layerfast ablate --task lm_eval:lf_arc3 --num-fewshot 5``: exit 2, one line naming the
    task, its pool and the flag (the harness's traceback before), no model loaded."""
    import layerfast.models
    from layerfast import cli

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the task was checked")

    argv = ["ablate", "--task", "lm_eval:lf_arc3", "--include-path", str(tasks)]
    argv += ["--num-fewshot", "5", "--limit", "2", "--out", str(tmp_path / "o"), "--no-progress"]
    with pytest.MonkeyPatch.context() as mp, offline(mp):
        mp.setattr(lf, "load", no_load, raising=False)  # before models.load: lf.load is lazy
        mp.setattr(layerfast.models, "load", no_load)
        rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("layerfast ablate: error: ")
    assert "task lf_arc3" in line and "holds only 3" in line and "--num-fewshot" in line
