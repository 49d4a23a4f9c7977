"""Arguments are checked at the edge, before anything is prepared or written: the library
checks the command line calls (ports, positive counts, booleans where numbers belong, a device
the machine lacks)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tests.factories import tiny_config


@pytest.mark.parametrize("port", [0, -1, 65536, True, "8000", 80.0])
def test_port_outside_1_65535_is_refused(port):
    from rankmixer.serve.settings import check_port

    with pytest.raises(ValueError, match="port must be an integer in 1-65535"):
        check_port(port)
    assert check_port(8000) == 8000


@pytest.mark.parametrize("field,value", [("max_candidates", True), ("max_batch_rows", 0), ("max_body_bytes", 10),
                                         ("body_timeout_s", 0), ("threads", False), ("max_wait_ms", -1)])
def test_server_settings_refuse_booleans_and_out_of_range(field, value):
    from rankmixer.serve.settings import ServeSettings

    with pytest.raises(ValidationError, match=field):
        ServeSettings(**{field: value})


def test_data_counts_refuse_booleans():
    from rankmixer.data.config import DataConfig

    with pytest.raises(ValidationError, match="num_workers"):
        DataConfig(num_workers=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda_fails_before_anything_is_written(tmp_path):
    from rankmixer import experiment

    with pytest.raises(ValueError, match="no CUDA device"):
        experiment.train(tiny_config(tmp_path, "run", "train.device=cuda"), log=lambda m: None)
    assert not (tmp_path / "run").exists() and not (tmp_path / "prep").exists()


def test_predict_batch_size_must_be_positive(tiny_copy, tiny_root):
    from rankmixer.experiment import predict

    rows = sorted((tiny_root / "prep" / "test").glob("*.parquet"))[0]
    for bad in (0, -5, True):
        with pytest.raises(ValueError, match="batch-size"):
            predict(tiny_copy / "run", rows, tiny_copy / "out.csv", batch_size=bad)
    assert not (tiny_copy / "out.csv").exists()


# ---- the command line: a named error (exit 2), never a traceback ------------------------------
def _cli(*args: str):
    from typer.testing import CliRunner

    from rankmixer.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("args,says", [
    (["serve", "--model", "art", "--port", "0"], "--port"),
    (["serve", "--model", "art", "--port", "65536"], "--port"),
    (["serve", "--model", "art", "--max-batch-rows", "0"], "--max-batch-rows"),
    (["serve", "--model", "art", "--max-wait-ms", "-1"], "--max-wait-ms"),
    (["serve", "--model", "art", "--port", "true"], "--port"),
    (["predict", "--run", "r", "--input", "i", "--output", "o.csv", "--batch-size", "0"], "--batch-size"),
    (["bench", "accuracy", "-c", "quickstart", "--seeds", "0"], "--seeds"),
    (["quickstart", "--rows", "-5"], "--rows"),
])
def test_cli_numbers_outside_their_range_are_usage_errors(args, says):
    res = _cli(*args)
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output


def test_cli_errors_name_the_problem(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x00\x01\x02")
    cases = [
        (["train", "-c", str(empty)], "is empty"),
        (["train", "-c", str(binary)], "binary"),
        (["train", "-c", "quickstart", "train.epochs=true"], "train.epochs: expected a number, got the boolean true"),
        (["serve", "--model", str(tmp_path / "nowhere")], "not an artifact directory"),
        (["data", "prepare", "--raw", str(tmp_path)], "data.raw is given but nothing says what the raw files hold"),
    ]
    if not torch.cuda.is_available():
        cases.append((["bench", "speed", "--device", "cuda", "--rounds", "1"], "no CUDA device"))
    for args, says in cases:
        res = _cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert says in " ".join(res.output.split()), (args, res.output)
        assert "Traceback" not in res.output
