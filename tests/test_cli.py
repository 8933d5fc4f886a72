from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_photo_detector.cli import app

runner = CliRunner()


def test_predict_json_lines_with_error_objects(
    bundle_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images = sorted((tiny_dataset / "ai").iterdir())[:3]
    result = runner.invoke(
        app,
        [
            "predict",
            "--model",
            str(bundle_dir),
            "--json",
            str(images[0]),
            str(broken),
            str(images[1]),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [Path(line["path"]).name for line in lines] == [
        images[0].name,
        "broken.jpg",
        images[1].name,
    ]
    assert lines[1]["error"]["code"] in {"corrupt_image", "truncated_image"}
    for line in (lines[0], lines[2]):
        assert line["label"] in {"ai", "real"}
        assert line["band"] in {"ai", "real", "uncertain"}
        assert 0.0 <= line["probability"] <= 1.0


def test_predict_walks_folders(bundle_dir: Path, tiny_dataset: Path) -> None:
    result = runner.invoke(
        app, ["predict", "--model", str(bundle_dir), "--json", str(tiny_dataset)]
    )
    assert result.exit_code == 0
    assert len(result.stdout.strip().splitlines()) == 48


def test_predict_never_imports_torch(bundle_dir: Path, tiny_dataset: Path) -> None:
    image = sorted((tiny_dataset / "real").iterdir())[0]
    code = (
        "import sys\n"
        "from ai_photo_detector.cli import app\n"
        f"args = ['predict', '--model', {str(bundle_dir)!r}, '--json', {str(image)!r}]\n"
        "app(args, standalone_mode=False)\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_ABSENT')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "TORCH_ABSENT" in out.stdout
    assert json.loads(out.stdout.splitlines()[0])["label"] in {"ai", "real"}


def test_predict_with_a_bad_bundle_says_why(tmp_path: Path, tiny_dataset: Path) -> None:
    result = runner.invoke(app, ["predict", "--model", str(tmp_path), str(tiny_dataset)])
    assert result.exit_code == 2
    assert "manifest.json" in result.output


def test_data_validate_writes_reports(tiny_dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "validate", str(tiny_dataset), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["labels"] == {"ai": 24, "real": 24}
    assert report["shortcut_audit"]["tiny"]["status"] == "alarm"
    assert "SHORTCUT" in (tmp_path / "data_report.txt").read_text()


def test_evaluate_writes_json_markdown_and_plots(
    bundle_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(bundle_dir),
            "--data",
            str(tiny_dataset),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["overall"]["count"] == 48
    for name in ("evaluation.md", "roc.png", "reliability.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--data", "{missing}"],
        ["evaluate", "--data", "{missing}", "--model", "{model}"],
        ["data", "validate", "{missing}"],
    ],
    ids=["train", "evaluate", "data-validate"],
)
def test_a_dataset_problem_is_one_clear_line_not_a_traceback(
    command: list[str], tmp_path: Path
) -> None:
    from conftest import SHIPPED_MODEL

    missing = tmp_path / "no-such-dataset"
    args = [a.format(missing=missing, model=SHIPPED_MODEL) for a in command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "error (dataset_invalid):" in result.output and str(missing) in result.output
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(
        result.exception, SystemExit
    )


def test_a_training_set_without_ai_images_is_refused_clearly(tmp_path: Path) -> None:
    only_real = tmp_path / "set"
    (only_real / "real").mkdir(parents=True)
    (only_real / "real" / "a.jpg").write_bytes(b"not even an image")
    result = runner.invoke(app, ["train", "--data", str(only_real)])
    assert result.exit_code == 2
    assert "error (dataset_invalid): no images labelled 'ai'" in result.output


@pytest.mark.parametrize(
    "command",
    [["models", "audit"], ["models", "shadow-report"], ["drift", "report"]],
    ids=["audit", "shadow-report", "drift-report"],
)
def test_read_only_commands_never_migrate_the_store(command: list[str], tmp_path: Path) -> None:
    import sqlite3

    database = tmp_path / "fresh.db"
    result = runner.invoke(
        app,
        [*command] + (["--out", str(tmp_path / "drift.md")] if command[0] == "drift" else []),
        env={"APD_DATABASE_URL": f"sqlite:///{database}"},
    )
    assert result.exit_code == 2, result.output
    assert "error (store_unavailable):" in result.output and "db upgrade" in result.output
    with sqlite3.connect(database) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == []  # a read made no schema
