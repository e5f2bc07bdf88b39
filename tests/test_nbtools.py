"""Notebook normalisation and the parameters-cell rule."""

import nbformat
import pytest

from deeplk import nbtools


def _nb():
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("a = 1\nname = 'x'")
    p.metadata["tags"] = ["parameters"]
    c = nbformat.v4.new_code_cell("print(a)")
    c.execution_count = 7
    c.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="1\n"),
        nbformat.v4.new_output("stream", name="stderr", text="tensorflow noise\n"),
    ]
    c.metadata["papermill"] = {"duration": 1.2}
    inj = nbformat.v4.new_code_cell("a = 2")
    inj.metadata["tags"] = ["injected-parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), p, inj, c]
    nb.metadata["papermill"] = {"duration": 3}
    return nb


def test_normalise_drops_noise_and_renumbers():
    out = nbtools.normalise_notebook(_nb())
    assert len(out.cells) == 3  # injected parameters removed
    code = out.cells[2]
    assert code.execution_count == 1
    assert [o.name for o in code.outputs] == ["stdout"]
    assert "papermill" not in code.metadata and "papermill" not in out.metadata
    assert out.metadata.kernelspec.name == "python3"
    assert out.cells[1].execution_count is None  # never run
    # idempotent
    again = nbtools.normalise_notebook(out)
    assert nbformat.writes(again) == nbformat.writes(out)


def test_check_mode_reports_and_does_not_write(tmp_path):
    path = tmp_path / "n.ipynb"
    nbformat.write(_nb(), str(path))
    before = path.read_text()
    assert nbtools.main(["--check", str(path)]) == 1
    assert path.read_text() == before
    assert nbtools.main([str(path)]) == 0
    assert nbtools.main(["--check", str(tmp_path)]) == 0


def test_parameters_cell_rules():
    nb = _nb()
    assert nbtools.check_parameters_cell(nb) == {"a": 1, "name": "x"}
    nb.cells[1].source = "import os\na = 1"
    with pytest.raises(ValueError, match="only hold"):
        nbtools.check_parameters_cell(nb)
    nb.cells[1].source = "a = os.getcwd()"
    with pytest.raises(ValueError, match="not a literal"):
        nbtools.check_parameters_cell(nb)
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(ValueError, match="0 cells"):
        nbtools.check_parameters_cell(nb)
