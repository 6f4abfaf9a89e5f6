"""``layerfast bench`` from the command line: flags checked before anything loads, and a short
run that writes its three files and prints the ratios."""

from __future__ import annotations

import json

import pytest

import layerfast.bench.workload
from layerfast import cli


def no_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the flags were checked")


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--only", "kernels,sweeps"], ["--only", "sweeps"]),
        (["--only", ""], ["--only"]),
        (["--kernel-bytes", "12"], ["--kernel-bytes", "1MiB"]),
        (["--kernel-bytes", "1GiBs"], ["--kernel-bytes", "1GiBs"]),
        (["--limit", "0"], ["--limit", "0"]),
        (["--project-items", "-3"], ["--project-items"]),
        (["--time-budget", "nan"], ["--time-budget"]),
        (["--time-budget", "0"], ["--time-budget"]),
        (["--batch-tokens", "0"], ["--batch-tokens"]),
        (["--memory-budget", "lots"], ["--memory-budget", "lots"]),
    ],
)
def test_bad_flags_fail_before_loading(flags, words, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(layerfast.bench.workload, "load_model", no_load)
    code = cli.main(["bench", "--random", "tiny", "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("layerfast bench: error:") and err.count("\n") == 1
    for word in words:
        assert word in err
    assert not (tmp_path / "o").exists()


def test_unknown_random_shape_is_one_line(tmp_path, capsys):
    code = cli.main(["bench", "--random", "gpt-9", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "random:tiny" in err and err.count("\n") == 1


def test_model_and_random_are_exclusive(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(layerfast.bench.workload, "load_model", no_load)
    code = cli.main(["bench", "--random", "tiny", "--model", "x", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--model x or --random tiny" in err


def test_bench_run_writes_files_and_ratios(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--random", "tiny", "--dtype", "fp32", "--out", str(out)]
    argv += ["--only", "sweep", "--limit", "2", "--time-budget", "3", "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "seed / fast" in printed and "projected" in printed
    record = json.loads((out / "bench.json").read_text())
    assert set(record["steps"]) == {"sweep"} and record["machine"]["cores"] >= 1
    for sweep in ("ablation", "proximity"):
        entry = record["steps"]["sweep"][sweep]
        assert entry["fast_vs_naive_max_abs_loglik"] < 1e-3  # fp32, packing
        assert entry["seed_vs_naive_max_abs_loglik"] < 1e-4
        assert all(entry[p]["projected_full_s"] > 0 for p in ("seed", "naive", "fast"))
    assert record["command"].startswith("layerfast bench --random tiny")
    assert record["steps"]["sweep"]["ablation"]["k"] >= 2
    csv = (out / "bench.csv").read_text().splitlines()
    assert csv[0].startswith("bench,provider,size") and len(csv) > 10
    assert (out / "bench.txt").read_text() == printed.split("wrote ")[0]


@pytest.mark.slow
def test_quick_bench_on_the_packaged_model(tmp_path, capsys):
    """The packaged model with a task: the sweep step on 2 capitals items."""
    out = tmp_path / "bench"
    argv = ["bench", "--quick", "--only", "sweep", "--limit", "2", "--time-budget", "10"]
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "bench.json").read_text())
    sweep = record["steps"]["sweep"]
    assert record["model"]["n_blocks"] == 30 and sweep["ablation"]["n_coalitions_full"] == 61
    assert sweep["proximity"]["n_coalitions_full"] == 178
    assert "capitals x 2 items" in capsys.readouterr().out
