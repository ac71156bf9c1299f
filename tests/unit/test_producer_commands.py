"""The producer commands' parsing and formatting, without Redis."""

from __future__ import annotations

import pytest

from aimass.cli import main
from aimass.producer.commands import classification_table

pytestmark = pytest.mark.unit


def test_classification_table_lines_up_best_label_and_runners_up() -> None:
    table = classification_table(
        ["a.png", "longer-name.png"],
        [
            [{"label": "7", "score": 0.98}, {"label": "1", "score": 0.01}],
            [{"label": "3", "score": 0.5}],
        ],
    )
    assert table.splitlines() == [
        "image            label  score  next",
        "a.png            7      0.980  1 0.010",
        "longer-name.png  3      0.500",
    ]


def test_generate_without_a_destination_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["generate", "--model", "tiny-gan"]) == 2
    assert "-o grid.png writes a PNG grid" in capsys.readouterr().err


def test_missing_required_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", "seven.png"])
    assert exit_info.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_an_unreadable_image_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "/nonexistent/seven.png", "--model", "tiny"]) == 2
    assert "No such file" in capsys.readouterr().err
