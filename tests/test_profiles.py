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


def _notebook_model_config_keys() -> set[str]:
    """The keys of the `model_config` dict notebook 02 builds from its parameters."""
    nb = nbformat.read(NOTEBOOKS / "02_train_homography_net.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id == "model_config" for t in node.targets)):
                return {ast.literal_eval(k) for k in node.value.keys}
    raise AssertionError("02_train_homography_net.ipynb builds no `model_config` dict")


def _bench_hnet_model_keys() -> set[str]:
    tree = ast.parse((NOTEBOOKS.parent / "bench" / "train_step.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HNET_MODEL_KEYS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("HNET_MODEL_KEYS not found in bench/train_step.py")


def test_bench_measures_the_demo_profiles_homography_net():
    """`bench/train_step.py`'s hnet_*_demo cases read every model option notebook 02 passes to the
    model from the demo profile (the weights aside: the bench never downloads them)."""
    assert _bench_hnet_model_keys() == _notebook_model_config_keys() - {"vgg_weights"}
    profile = yaml.safe_load((NOTEBOOKS / "profiles" / "demo.yaml").read_text())
    names = {s["name"] for s in profile["steps"]}
    assert {"train_hnet_sup_rho32", "train_hnet_unsup_rho32"} <= names, "bench reads these demo steps"
