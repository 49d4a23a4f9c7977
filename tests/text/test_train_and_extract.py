"""End to end on a tiny dataset through the CLI: train two epochs, write the model directory,
load it back, extract triplets from a CSV; and the bad inputs of both commands."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from rankmixer.cli import app
from rankmixer.core.files import MARKER_FILE
from rankmixer.text.artifact import load_model_dir
from rankmixer.text.aste import read_aste
from rankmixer.text.predict import evaluate

runner = CliRunner()


def test_training_writes_the_model_directory(trained, tiny_aste):
    out, output = trained
    assert {"weights.safetensors", "vocab.json", "config.json", "metrics.json", MARKER_FILE} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["seed"] == 3
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in metrics["history"])
    for split in ("dev", "test"):
        for name in ("triplet", "pair", "aspect", "opinion"):
            assert 0.0 <= metrics[split][name]["f1"] <= 1.0
    assert "test" in output and "triplet" in output
    # the saved model scores what metrics.json says (weights really are the kept ones)
    model, vocab, cfg = load_model_dir(out)
    assert cfg.model.encoder == "bilstm" and cfg.train.epochs == 2 and cfg.model.embedding_dim == 16
    assert not model.training
    test = read_aste(tiny_aste / "test.json").sentences
    assert evaluate(model, test, vocab)["triplet"] == metrics["test"]["triplet"]


def test_an_existing_directory_is_not_replaced(trained, tiny_aste, tiny_config, tmp_path):
    out, _ = trained
    args = ["text", "train-gts", "--data", str(tiny_aste), "--out", str(out), "-c", str(tiny_config)]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--overwrite" in r.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = runner.invoke(app, ["text", "train-gts", "--data", str(tiny_aste), "--out", str(foreign), "-c", str(tiny_config)])
    assert r.exit_code == 2 and "did not write" in r.output
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_extract_writes_one_line_per_review(trained, tmp_path):
    out, _ = trained
    csv = tmp_path / "reviews.csv"
    long = " ".join(["very"] * 20)  # the model's max_len is 12 words
    csv.write_text(f'id,body\n1,"The food was great, the service was rude."\n2,   \n3,Café crème: top notch!\n4,{long}\n',
                   encoding="utf-8")
    dest = tmp_path / "triplets.jsonl"
    r = runner.invoke(app, ["text", "extract", "--model", str(out), "--input", str(csv), "--column", "body",
                            "--out", str(dest)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in dest.read_text(encoding="utf-8").splitlines()]
    assert [x["row"] for x in lines] == [0, 2, 3]
    assert lines[2]["tokens"] == ["very"] * 12 and "truncated 1" in r.output
    assert lines[0]["tokens"] == ["The", "food", "was", "great", ",", "the", "service", "was", "rude", "."]
    assert lines[1]["tokens"][:2] == ["Café", "crème"]
    for line in lines:
        for t in line["triplets"]:
            a, o = t["aspect_span"], t["opinion_span"]
            assert t["aspect"] == " ".join(line["tokens"][a[0]:a[1] + 1])
            assert t["opinion"] == " ".join(line["tokens"][o[0]:o[1] + 1])
            assert t["sentiment"] in ("positive", "neutral", "negative")
    assert "'empty': 1" in r.output


def test_extract_non_utf8_line_fails_or_is_skipped(trained, tmp_path):
    out, _ = trained
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"text\ngood food\nbad \xff\xfe bytes\nnice staff\n")
    dest = tmp_path / "t.jsonl"
    r = runner.invoke(app, ["text", "extract", "--model", str(out), "--input", str(csv), "--out", str(dest)])
    assert r.exit_code == 2 and "line 3" in r.output and "UTF-8" in r.output and not dest.exists()
    r = runner.invoke(app, ["text", "extract", "--model", str(out), "--input", str(csv), "--out", str(dest),
                            "--on-bad-row", "skip"])
    assert r.exit_code == 0, r.output
    assert len(dest.read_text().splitlines()) == 2 and "'non_utf8_lines': 1" in r.output


def test_extract_errors_name_the_problem(trained, tmp_path):
    out, _ = trained
    csv = tmp_path / "r.csv"
    csv.write_text("review\nok\n")
    r = runner.invoke(app, ["text", "extract", "--model", str(out), "--input", str(csv), "--out", str(tmp_path / "t.jsonl")])
    assert r.exit_code == 2 and "no column 'text'" in r.output and "review" in r.output
    r = runner.invoke(app, ["text", "extract", "--model", str(out), "--input", str(csv), "--out", str(tmp_path / "t.csv")])
    assert r.exit_code == 2 and ".jsonl" in r.output
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    r = runner.invoke(app, ["text", "extract", "--model", str(empty), "--input", str(csv), "--column", "review",
                            "--out", str(tmp_path / "t.jsonl")])
    assert r.exit_code == 2 and "weights.safetensors is missing" in r.output


def test_same_seed_same_model(trained, tiny_aste, tiny_config, tmp_path):
    out, _ = trained
    again = tmp_path / "again"
    r = runner.invoke(app, ["text", "train-gts", "--data", str(tiny_aste), "--encoder", "bilstm", "--out", str(again),
                            "--seed", "3", "--epochs", "2", "-c", str(tiny_config)])
    assert r.exit_code == 0, r.output
    a, _, _ = load_model_dir(out)
    b, _, _ = load_model_dir(again)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_pair_task_trains_and_reports_no_triplets(tiny_aste, tiny_config, tmp_path):
    out = tmp_path / "pair"
    r = runner.invoke(app, ["text", "train-gts", "--data", str(tiny_aste), "--out", str(out), "-c", str(tiny_config),
                            "--task", "pair", "--encoder", "cnn", "--rounds", "0", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "pair" and metrics["rounds"] == 0
    assert "triplet" not in metrics["test"] and "pair" in metrics["test"]
    assert "dev_pair_f1" in metrics["history"][0]


def test_commands_parse():
    r = runner.invoke(app, ["text", "--help"])
    assert r.exit_code == 0 and "train-gts" in r.output and "extract" in r.output
    r = runner.invoke(app, ["text", "train-gts", "--help"])
    assert r.exit_code == 0 and "--encoder" in r.output and "--epochs" in r.output
    r = runner.invoke(app, ["text", "train-gts", "--data", "x"])
    assert r.exit_code == 2 and "--out" in r.output
    r = runner.invoke(app, ["text", "train-gts", "--data", "x", "--out", "y", "--encoder", "gru"])
    assert r.exit_code == 2 and "encoder" in r.output


def test_an_unusable_device_is_a_user_error(tiny_aste, tiny_config, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = runner.invoke(app, ["text", "train-gts", "--data", str(tiny_aste), "--out", str(tmp_path / "m"),
                            "-c", str(tiny_config), "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA device" in r.output and not (tmp_path / "m").exists()


def test_the_bio_baseline_trains_saves_and_extracts(tiny_aste, tiny_config, tmp_path):
    out = tmp_path / "bio"
    r = runner.invoke(app, ["text", "train-gts", "--data", str(tiny_aste), "--out", str(out), "-c", str(tiny_config),
                            "--tagger", "bio", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "bio-bilstm" and metrics["rounds"] is None and "triplet" in metrics["test"]
    model, _, cfg = load_model_dir(out)
    assert cfg.model.tagger == "bio" and type(model).__name__ == "BIOTagger"
    csv = tmp_path / "reviews.csv"
    csv.write_text("text\nthe food was great .\n")
    r = runner.invoke(app, ["text", "extract", "--model", str(out), "--input", str(csv), "--out", str(tmp_path / "t.jsonl")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "t.jsonl").read_text())["tokens"] == ["the", "food", "was", "great", "."]
