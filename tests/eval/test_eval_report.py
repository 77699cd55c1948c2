"""The comparison report from hand-made results: the table has one row per model and one
column per headline score, the plots are real PNG images, training curves come from the
run's metrics.jsonl, per-item outputs go to items/ and not into results.json."""

from __future__ import annotations

import json

from PIL import Image

from fournil.eval.report import find_metrics, format_table, write_report


def _result(model: str, path: str, bpb: float, acc: float) -> dict:
    return {"model": model, "path": path, "engine": "FournilLM", "parameters": 1234567,
            "tasks": {
                "bpb": {"kind": "bpb", "bpb": bpb, "by_source": {"wiki": {"bpb": bpb + 0.1},
                                                                 "novels": {"bpb": bpb - 0.1}},
                        "by_language": {"fr": {"bpb": bpb}}},
                "mc:arc": {"kind": "mc", "n": 4, "acc": acc, "acc_norm": 0.5, "acc_bytes": 0.5,
                           "items": [{"id": "0", "pred_acc": 1}]},
                "ocr": {"kind": "ocr", "n": 1, "cer_before": 0.25, "cer_after": 0.125,
                        "wer_before": 0.5, "wer_after": 0.25,
                        "items": [{"id": "s1", "output": "Le chat"}],
                        "rejected": [{"id": "s2", "reason": "ocr:prompt_too_long"}]},
                "rag": {"kind": "rag", "n": 0, "all_verbatim": float("nan"),
                        "with_quote": float("nan"), "precision": float("nan"),
                        "recall": float("nan"), "refusal": float("nan"), "items": []}}}


def test_table_has_one_row_per_model():
    table = format_table([_result("a", "x", 1.5, 0.75), _result("b", "y", 2.0, 0.25)])
    header, rule, *rows = table.splitlines()
    assert header.split(" | ")[:6] == ["| model", "parameters", "bpb", "mc:arc acc",
                                       "mc:arc acc_norm", "ocr CER before"]
    assert len(rows) == 2
    assert rows[0].startswith("| a | 1,234,567 | 1.5000 | 0.7500 | 0.5000 | 0.2500 | 0.1250 |")
    assert rows[1].endswith("| – | – | – | – | – |")  # no rag items: no score, not zero


def test_report_files_plots_and_loss_curves(tmp_path):
    run = tmp_path / "runs" / "tiny"
    (run / "pretrain").mkdir(parents=True)
    (run / "export").mkdir()
    (run / "pretrain" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 10, "loss": 7.0}, {"step": 20, "loss": 6.0},
        {"step": 20, "val_loss": 6.1, "val_bpb": 2.5}]) + "\n")
    assert find_metrics(run / "export") == {"pretrain": run / "pretrain" / "metrics.jsonl"}
    assert find_metrics(tmp_path / "elsewhere") == {}

    results = [_result("ours", str(run / "export"), 1.5, 0.75),
               _result("theirs", str(tmp_path / "elsewhere"), 2.0, 0.25)]
    report = write_report(results, tmp_path / "report")
    text = report.read_text()
    for name in ("loss.png", "bpb_by_source.png", "bpb_by_language.png", "tasks.png"):
        assert f"]({name})" in text
        with Image.open(tmp_path / "report" / name) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
    table = text.split("\n\n")[1].splitlines()
    assert len(table) == 2 + 2  # header, rule, one row per model
    assert "| model | novels | wiki |\n|---|---|---|\n| ours | 1.4000 | 1.6000 |" in text
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["model"] for r in saved] == ["ours", "theirs"]
    assert all("items" not in t for r in saved for t in r["tasks"].values())
    assert saved[0]["tasks"]["rag"]["recall"] is None  # NaN is not JSON
    lines = (tmp_path / "report" / "items" / "ours" / "ocr.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": "s1", "output": "Le chat"},
        {"id": "s2", "reason": "ocr:prompt_too_long", "rejected": True}]
    assert "- ours, ocr: 1 (see items/)" in text
    assert "Copying from the context" not in text  # no copy task was run


def test_report_warns_about_a_model_that_cannot_copy(tmp_path):
    copies, cannot = _result("copies", "x", 1.5, 0.75), _result("cannot", "y", 2.0, 0.25)
    for result, accuracy in ((copies, 0.92), (cannot, 0.10)):
        result["tasks"]["copy"] = {"kind": "copy", "n": 60, "loss_first": 7.0,
                                   "loss_second": 7.0 - 10 * accuracy,
                                   "accuracy_second": accuracy}
    text = write_report([copies, cannot], tmp_path / "report").read_text()
    section = text.split("## Copying from the context\n\n")[1].split("\n\n")[0]
    assert section.startswith("- **cannot** predicts 10% of the tokens")
    assert "copies" not in section.replace("a model that copies", "")
    del cannot["tasks"]["ocr"], cannot["tasks"]["rag"]  # nothing that needs copying: no note
    text = write_report([copies, cannot], tmp_path / "report2").read_text()
    assert "Copying from the context" not in text
