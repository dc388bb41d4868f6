"""The learning-curve file: appends under its own header, never under another's."""

from __future__ import annotations

from shared_policy.tracking import CurveFile


def test_a_resumed_curve_appends_under_its_header_and_one_with_other_columns_is_moved_aside(tmp_path):
    path = tmp_path / "curve.csv"
    CurveFile(path, ["update", "loss"]).append({"update": 1, "loss": 0.5})
    CurveFile(path, ["update", "loss"]).append({"update": 2})  # a resumed run: same columns, same file
    assert path.read_text().splitlines() == ["update,loss", "1,0.5", "2,"]
    newer = CurveFile(path, ["update", "round", "loss"])  # a reused output dir, code with another column
    newer.append({"update": 1, "round": 1, "loss": 0.25})
    newer.append({"update": 2, "round": 1, "loss": 0.125})
    assert path.read_text().splitlines() == ["update,round,loss", "1,1,0.25", "2,1,0.125"]
    assert (tmp_path / "curve.old.csv").read_text().splitlines() == ["update,loss", "1,0.5", "2,"]


def test_a_second_mismatched_header_keeps_the_first_moved_aside_file(tmp_path, caplog):
    path = tmp_path / "curve.csv"
    CurveFile(path, ["update", "loss"]).append({"update": 1, "loss": 0.5})
    CurveFile(path, ["update", "round", "loss"]).append({"update": 1, "round": 1, "loss": 0.25})
    with caplog.at_level("WARNING", logger="shared_policy.tracking"):
        CurveFile(path, ["iteration", "loss"]).append({"iteration": 1, "loss": 0.125})  # a third layout
    assert path.read_text().splitlines() == ["iteration,loss", "1,0.125"]
    assert (tmp_path / "curve.old.csv").read_text().splitlines() == ["update,loss", "1,0.5"]
    assert (tmp_path / "curve.old.1.csv").read_text().splitlines() == ["update,round,loss", "1,1,0.25"]
    assert "curve.old.1.csv" in caplog.text  # says where the file went
