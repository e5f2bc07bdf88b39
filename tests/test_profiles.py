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


def _bench_demo_options():
    """HNET_DEMO and the unsupervised demo case's loss_pools, read from bench/train_step.py's source."""
    tree = ast.parse((NOTEBOOKS.parent / "bench" / "train_step.py").read_text())
    options, pools = None, None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HNET_DEMO" for t in node.targets):
            options = {k.arg: ast.literal_eval(k.value) for k in node.value.keywords}
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "hnet_unsup_demo":
                    pools = [ast.literal_eval(k.value) for k in ast.walk(value)
                             if isinstance(k, ast.keyword) and k.arg == "loss_pools"]
    return options, pools


def test_bench_measures_the_demo_profiles_homography_net():
    """`bench/train_step.py`'s hnet_*_demo cases time the model the demo profile trains."""
    options, pools = _bench_demo_options()
    assert options, "HNET_DEMO not found in bench/train_step.py"
    profile = yaml.safe_load((NOTEBOOKS / "profiles" / "demo.yaml").read_text())
    steps = {s["name"]: s["parameters"] for s in profile["steps"]}
    for name in ("train_hnet_sup_rho32", "train_hnet_unsup_rho32"):
        differ = {k: (v, steps[name][k]) for k, v in options.items() if steps[name][k] != v}
        assert not differ, f"bench HNET_DEMO differs from the demo profile's {name} (bench, profile): {differ}"
    assert pools == [tuple(steps["train_hnet_unsup_rho32"]["loss_pools"])]
