"""The shipped pipeline profiles only pass parameters their notebooks declare.

papermill injects unknown names silently, so a misspelt or renamed parameter would be ignored and
the notebook would run with its small default instead of the profile's value."""

import ast
from pathlib import Path

import nbformat
import pytest
import yaml

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PROFILES = sorted((NOTEBOOKS / "profiles").glob("*.yaml"))


def declared_parameters(notebook: Path) -> set[str]:
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook.name}: expected one parameters cell, found {len(cells)}"
    tree = ast.parse(cells[0].source)
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_parameters_exist_in_their_notebooks(profile):
    steps = yaml.safe_load(profile.read_text())["steps"]
    assert steps, f"{profile.name} has no steps"
    for step in steps:
        notebook = NOTEBOOKS / step["notebook"]
        assert notebook.is_file(), f"{profile.name}: step {step['name']!r} names a missing notebook {notebook.name}"
        unknown = set(step.get("parameters", {})) - declared_parameters(notebook)
        assert not unknown, f"{profile.name}: step {step['name']!r} passes {sorted(unknown)} that {notebook.name} does not declare"
