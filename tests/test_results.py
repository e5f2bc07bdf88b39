"""Results documents: marked tables equal to the runs' summary.json."""

import json

import numpy as np
import pytest

from deeplk import evaluate, results


def _summary(tmp_path):
    errors = {
        "identity": np.array([24.0, 25.0, 26.0]),
        "lk": np.array([0.05, 0.4, np.inf]),
    }
    summaries = {name: evaluate.summarise(e, seconds=0.3) for name, e in errors.items()}
    path = tmp_path / "runs" / "demo" / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(summaries))
    return path, summaries


def _doc(tmp_path, table: str, marker="<!-- summary: runs/demo/summary.json -->"):
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"# Results\n\nText before.\n\n{marker}\n{table}\nText after.\n")
    return doc


class TestUpdateDocument:
    def test_check_flags_a_stale_figure_and_write_fixes_it(self, tmp_path):
        _, summaries = _summary(tmp_path)
        good = evaluate.format_table(summaries)
        stale = good.replace("| 25.00 |", "| 24.00 |", 1)  # identity's mean PE changed by hand
        assert stale != good
        doc = _doc(tmp_path, stale)
        differing, unchecked = results.update_document(doc, root=tmp_path, check=True)
        assert differing == ["runs/demo/summary.json"] and unchecked == []
        assert stale in doc.read_text()  # --check never writes
        results.update_document(doc, root=tmp_path)
        text = doc.read_text()
        assert good in text and text.startswith("# Results\n\nText before.") and text.endswith("Text after.\n")
        assert results.update_document(doc, root=tmp_path, check=True) == ([], [])

    def test_methods_keeps_those_rows_in_that_order(self, tmp_path):
        _, summaries = _summary(tmp_path)
        doc = _doc(tmp_path, "| old |\n|---|\n", "<!-- summary: runs/demo/summary.json methods=lk,identity -->")
        results.update_document(doc, root=tmp_path)
        rows = [line.split(" | ")[0] for line in doc.read_text().split("\n") if line.startswith("| ")]
        assert rows == ["| method", "| lk", "| identity"]

    def test_missing_summary_is_unchecked_not_an_error(self, tmp_path):
        doc = _doc(tmp_path, "| a |\n|---|\n")
        before = doc.read_text()
        assert results.update_document(doc, root=tmp_path) == ([], ["runs/demo/summary.json"])
        assert doc.read_text() == before

    def test_marker_without_table_names_the_line(self, tmp_path):
        doc = tmp_path / "R.md"
        doc.write_text("intro\n<!-- summary: x.json -->\n\nno table\n")
        with pytest.raises(ValueError, match=r"R\.md:2: .*not followed by a Markdown table"):
            results.update_document(doc, root=tmp_path)

    def test_unknown_method_names_the_summary(self, tmp_path):
        _summary(tmp_path)
        doc = _doc(tmp_path, "| a |\n", "<!-- summary: runs/demo/summary.json methods=dlkfm -->")
        with pytest.raises(ValueError, match=r"summary\.json has no method\(s\) \['dlkfm'\]"):
            results.update_document(doc, root=tmp_path)


def test_table_of_several_sets(tmp_path, capsys):
    """Comma-separated summaries: one row per method, a column group (<3, <5, <10 px, median)
    per set named by its folder; a method missing on a set shows "-"."""
    a = {"identity": evaluate.summarise(np.array([24.0, 25.0, 26.0]), seconds=0.1),
         "lk": evaluate.summarise(np.array([2.0, 4.0, 40.0]), seconds=0.1)}
    b = {"identity": evaluate.summarise(np.array([1.0, 6.0, 9.0, 30.0]), seconds=0.1)}
    for name, summaries in (("evaluate_Optical-Map", a), ("evaluate_Optical-SAR", b)):
        path = tmp_path / "runs" / name / "summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(summaries))
    paths = "runs/evaluate_Optical-Map/summary.json,runs/evaluate_Optical-SAR/summary.json"
    doc = _doc(tmp_path, "| old |\n|---|\n", f"<!-- summary: {paths} -->")
    results.update_document(doc, root=tmp_path)
    lines = [line for line in doc.read_text().split("\n") if line.startswith("|")]
    assert lines[0] == ("| method | Optical-Map <3 px | Optical-Map <5 px | Optical-Map <10 px | Optical-Map median PE"
                        " | Optical-SAR <3 px | Optical-SAR <5 px | Optical-SAR <10 px | Optical-SAR median PE |")
    assert lines[2] == "| identity | 0.0 | 0.0 | 0.0 | 25.00 | 25.0 | 25.0 | 75.0 | 7.50 |"
    assert lines[3] == "| lk | 33.3 | 66.7 | 66.7 | 4.00 | - | - | - | - |"
    assert results.update_document(doc, root=tmp_path, check=True) == ([], [])
    assert results.main(["--table"] + [str(tmp_path / p) for p in paths.split(",")]) == 0
    assert capsys.readouterr().out == "\n".join(lines) + "\n"
    with pytest.raises(ValueError, match="thresholds"):
        evaluate.format_set_table({"x": a}, thresholds=(4,))
    narrow = _doc(tmp_path, "| old |\n|---|\n", f"<!-- summary: {paths} methods=lk thresholds=5 -->")
    results.update_document(narrow, root=tmp_path)
    rows = [line for line in narrow.read_text().split("\n") if line.startswith("|")]
    assert rows[0] == "| method | Optical-Map <5 px | Optical-Map median PE | Optical-SAR <5 px | Optical-SAR median PE |"
    assert rows[2:] == ["| lk | 66.7 | 4.00 | - | - |"]
    bad = _doc(tmp_path, "| old |\n|---|\n", f"<!-- summary: {paths} thresholds=five -->")
    with pytest.raises(ValueError, match=r"RESULTS\.md:5: `thresholds=`"):
        results.update_document(bad, root=tmp_path)


def test_command_check_exit_codes(tmp_path, capsys):
    _, summaries = _summary(tmp_path)
    doc = _doc(tmp_path, "| stale |\n|---|\n")
    assert results.main(["--check", "--root", str(tmp_path), str(doc)]) == 1
    assert "differs from its summary" in capsys.readouterr().out
    assert results.main(["--root", str(tmp_path), str(doc)]) == 0
    assert results.main(["--check", "--root", str(tmp_path), str(doc)]) == 0


def test_project_documents_markers_are_well_formed():
    """Every marked table of the README and the results document parses (the runs themselves are
    not in a clone, so their figures are checked where the runs are: `python -m deeplk.results
    --check`)."""
    from deeplk.paths import project_root

    root = project_root()
    docs = [root / "README.md", root / "docs" / "RESULTS.md"]
    found = 0
    for doc in docs:
        lines = doc.read_text().split("\n")
        for marker in results.find_markers(lines, str(doc)):
            found += 1
            header = lines[marker.start]
            several = "," in marker.path  # a table of several sets: a column group per summary
            first = f"| method | {results.set_name(marker.path.split(',')[0])} <" if several else "| method | <0.1 px |"
            assert header.startswith(first), f"{doc}:{marker.start + 1}: not a summary table"
            body = lines[marker.start + 2:marker.stop]
            names = [row.split("|")[1].strip() for row in body]
            if marker.methods is not None:
                assert tuple(names) == marker.methods, f"{doc}:{marker.line + 1}: rows differ from methods="
    assert found >= 2
