"""The paper-scale profiles (mscoco, googleearth, googlemap, and srif_map_paper, the GPU variant of
srif_map): what they train and evaluate, their smoke mode run end to end on a CPU, and a smoke run
killed with SIGKILL, then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml

from deeplk import pipeline

PAPER = ("mscoco", "googleearth", "googlemap")
#: (training samples, generated test samples, evaluated test samples) of the paper.
SIZES = {"mscoco": (82783, 6400, 6000), "googleearth": (8750, 850, 850), "googlemap": (8880, 888, 888)}
TABLE_METHODS = {"identity", "sift", "dhn", "mhn", "clkn", "dlkfm"}


@pytest.fixture(autouse=True)
def _real_project(monkeypatch):
    monkeypatch.delenv("DEEPLK_ROOT", raising=False)


def _by_notebook(prof, prefix):
    return [s for s in prof.steps if s.notebook.startswith(prefix)]


def _waits_for(prof, later: str, earlier: str) -> bool:
    """Whether step `later` waits (directly or not) for step `earlier`."""
    deps = pipeline._dependencies(prof.steps)
    todo, seen = [later], set()
    while todo:
        for d in deps[todo.pop()]:
            if d == earlier:
                return True
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return False


@pytest.mark.parametrize("name", PAPER)
def test_paper_profile_trains_every_model_of_the_table_then_evaluates_and_explores(name):
    prof = pipeline.load_profile(name)
    n_train, n_val, n_eval = SIZES[name]
    (gen,) = _by_notebook(prof, "00_")
    assert gen.parameters["dataset"] == name and prof.steps[0] is gen
    assert (gen.parameters["num_train"], gen.parameters["num_val"]) == (n_train, n_val)
    data_root = gen.parameters["out_dir"]
    trainers = [s for s in prof.steps if s.notebook[:3] in ("01_", "02_", "03_", "04_")]
    checkpoints = {s.parameters["checkpoint_dir"] for s in trainers}
    assert len(checkpoints) == 1 and {s.parameters["data_root"] for s in trainers} == {data_root}

    regression = {(s.parameters["model"], s.parameters["stage"]): s for s in _by_notebook(prof, "01_")}
    assert set(regression) == {("dhn", 1), ("mhn", 1), ("mhn", 2), ("mhn", 3)}
    for k in (2, 3):
        assert _waits_for(prof, regression["mhn", k].name, regression["mhn", k - 1].name)
    for s in regression.values():  # the original's regression settings: Adam 1e-4 .. 4e-6, batch 16
        assert s.parameters["batch_size"] == 16 and s.parameters["lr_decay_rate"] == 0.5
    assert [regression["mhn", k].parameters["learning_rate"] for k in (1, 2, 3)] == [1e-4, 6.4e-5, 4e-6]
    # steps = epochs x training samples // batch: DHN 40 epochs, MHN 100, 100, 80, CLKN 20, DLKFM 10
    assert regression["dhn", 1].parameters["steps"] == 40 * n_train // 16
    assert [regression["mhn", k].parameters["steps"] for k in (1, 2, 3)] == [
        100 * n_train // 16, 100 * n_train // 16, 80 * n_train // 16]

    (clkn,) = _by_notebook(prof, "04_")
    assert clkn.parameters["learning_rate"] == 5e-6 and clkn.parameters["batch_size"] == 16
    assert clkn.parameters["steps"] == 20 * n_train // 16

    dlkfm = {s.parameters["level"]: s for s in _by_notebook(prof, "03_")}
    assert set(dlkfm) == {1, 2, 3}
    for k in (2, 3):
        assert _waits_for(prof, dlkfm[k].name, dlkfm[k - 1].name)
    weight, perturbations = (0.1, 2) if name == "mscoco" else (0.2, 4)
    for s in dlkfm.values():
        p = s.parameters
        assert (p["learning_rate"], p["batch_size"], p["steps"]) == (1e-5, 4, 10 * n_train // 4)
        assert (p["convexity_weight"], p["num_perturbations"]) == (weight, perturbations)
    assert dlkfm[1].parameters["channels"] == 64 and dlkfm[1].parameters["num_blocks"] == 3
    assert dlkfm[1].parameters["feature_type"] == "special"

    hnet = {(s.parameters["mode"], s.parameters["rho"]): s for s in _by_notebook(prof, "02_")}
    if name == "mscoco":
        assert set(hnet) == {(m, r) for m in ("supervised", "unsupervised") for r in (16, 32)}
        for m in ("supervised", "unsupervised"):
            assert _waits_for(prof, hnet[m, 32].name, hnet[m, 16].name)
            assert hnet[m, 16].parameters["vgg_weights"] == "imagenet"
    else:
        assert not hnet

    (evaluation,) = _by_notebook(prof, "05_")
    p = evaluation.parameters
    wanted = TABLE_METHODS | ({"hnet_sup", "hnet_unsup"} if name == "mscoco" else set())
    assert wanted <= set(p["methods"])
    assert p["method_options"] == {"dlkfm": {"init": "mhn"}}  # the paper's initial guess
    assert (p["data_root"], p["split"], p["max_samples"]) == (data_root, "val2014", n_eval)
    assert p["checkpoint_dir"] in checkpoints and p["paper_table"] == name
    assert all(_waits_for(prof, evaluation.name, s.name) for s in trainers)
    (explore,) = _by_notebook(prof, "06_")
    assert prof.steps[-1] is explore and explore.parameters["checkpoint_dir"] in checkpoints


def test_srif_map_paper_is_srif_map_at_paper_size():
    """The GPU variant of srif_map: srif_map's data (the same generator, seed and held-out pairs),
    the regression and CLKN steps of googlemap with its epochs over this data, DLKFM on MIND at
    the paper's feature size on all three levels, and both starts of DLKFM evaluated."""
    prof, cpu, gm = (pipeline.load_profile(n) for n in ("srif_map_paper", "srif_map", "googlemap"))
    assert "srif_map_paper" in cpu.description  # the CPU profile points to its GPU variant
    (gen,), (cpu_gen,) = _by_notebook(prof, "00_"), _by_notebook(cpu, "00_")
    same = ("dataset", "source_dir", "out_dir", "seed", "generator_options")
    assert {k: gen.parameters[k] for k in same} == {k: cpu_gen.parameters[k] for k in same}
    n_train = gen.parameters["num_train"]
    assert n_train >= cpu_gen.parameters["num_train"] and gen.parameters["num_val"] >= cpu_gen.parameters["num_val"]
    trainers = [s for s in prof.steps if s.notebook[:3] in ("01_", "03_", "04_")]
    assert {s.parameters["data_root"] for s in trainers} == {gen.parameters["out_dir"]}
    assert {s.parameters["checkpoint_dir"] for s in trainers} == {"checkpoints/srif_map_paper"}

    # googlemap's regression and CLKN settings; its step counts scaled from 8880 samples to these
    scaled = ("steps", "lr_decay_steps")
    ours = {s.name: s.parameters for s in prof.steps if s.notebook[:3] in ("01_", "04_")}
    theirs = {s.name: s.parameters for s in gm.steps if s.notebook[:3] in ("01_", "04_")}
    assert set(ours) == set(theirs) == {"train_dhn", "train_mhn_stage1", "train_mhn_stage2", "train_mhn_stage3",
                                        "train_clkn"}
    for name, p in ours.items():
        q = theirs[name]
        differ = {k for k in p if p[k] != q.get(k)} - {"data_root", "checkpoint_dir"}
        assert differ <= set(scaled), (name, differ)
        assert set(p) == set(q)
        for k in scaled:
            if k in p:
                assert p[k] == q[k] // (8880 // q["batch_size"]) * (n_train // p["batch_size"]), (name, k)
    for k in (2, 3):
        assert _waits_for(prof, f"train_mhn_stage{k}", f"train_mhn_stage{k - 1}")

    dlkfm = {s.parameters["level"]: s.parameters for s in _by_notebook(prof, "03_")}
    assert set(dlkfm) == {1, 2, 3}
    for k in (2, 3):
        assert _waits_for(prof, f"train_dlkfm_level{k}", f"train_dlkfm_level{k - 1}")
        assert not {"channels", "num_blocks", "input_representation"} & set(dlkfm[k])  # level 1's
    assert (dlkfm[1]["channels"], dlkfm[1]["num_blocks"]) == (64, 3)
    assert (dlkfm[1]["input_representation"], dlkfm[1]["normalise"]) == ("mind", False)
    assert {p["loss"] for p in dlkfm.values()} == {"unrolled"}
    starts = [dlkfm[k]["start_perturbation"] for k in (1, 2, 3)]
    assert starts[0] < starts[1] == 8.0 < starts[2] == 32.0

    evaluations = {str(s.parameters["method_options"]["dlkfm"]["init"]): s for s in _by_notebook(prof, "05_")}
    assert set(evaluations) == {"['lk_mind', 'mhn']", "mhn"}  # as srif_map's, with MHN; the paper's
    for s in evaluations.values():
        p = s.parameters
        assert (p["data_root"], p["split"], p["max_samples"]) == (gen.parameters["out_dir"], "val2014",
                                                                  gen.parameters["num_val"])
        assert p["checkpoint_dir"] == "checkpoints/srif_map_paper"
        assert all(_waits_for(prof, s.name, t.name) for t in trainers)
    (cpu_eval,) = _by_notebook(cpu, "05_")
    assert set(cpu_eval.parameters["methods"]) | {"mhn", "clkn"} <= set(evaluations["['lk_mind', 'mhn']"].parameters["methods"])
    assert {"mhn", "dlkfm"} <= set(evaluations["mhn"].parameters["methods"])
    assert len({s.parameters["results_dir"] for s in evaluations.values()}) == 2


def test_smoke_profile_shrinks_every_step_and_moves_its_folders_into_the_run():
    prof = pipeline.load_profile("googlemap")
    smoke = pipeline.smoke_profile(prof)
    assert [s.name for s in smoke.steps] == [s.name for s in prof.steps]  # no step lost
    assert [s.after for s in smoke.steps] == [s.after for s in prof.steps]
    for full, small in zip(prof.steps, smoke.steps):
        assert set(small.parameters) == set(full.parameters)
        for key in ("steps", "num_train", "num_val", "batch_size", "max_samples", "eval_samples"):
            if key in full.parameters:
                assert small.parameters[key] == prof.smoke["parameters"][key] < full.parameters[key]
        for key in pipeline.SMOKE_PATH_PARAMETERS:
            value = small.parameters.get(key)
            if value is not None:
                assert value.startswith("{run_dir}/"), (small.name, key, value)
    gen = smoke.steps[0].parameters
    assert gen["source_dir"] == "{run_dir}/Dataset/raw/GoogleMap" and gen["out_dir"] == "{run_dir}/Dataset/GoogleMap"
    demo = pipeline.load_profile("demo")
    with pytest.raises(ValueError, match="demo .* has no `smoke:` section"):
        pipeline.smoke_profile(demo)


def test_smoke_section_is_validated(tmp_path):
    base = "steps:\n  - {name: a, notebook: 00_generate_data.ipynb}\n"
    cases = {"smoke: [1]\n": "`smoke` must be a mapping",
             "smoke: {speed: 2}\n": r"unknown entries \['speed'\]",
             "smoke: {steps: {b: {steps: 1}}}\n": r"`smoke.steps` names \['b'\]",
             "smoke: {parameters: [1]}\n": "`smoke.parameters` must be a mapping"}
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"p{i}.yaml"
        path.write_text(base + text)
        with pytest.raises(ValueError, match=message):
            pipeline.load_profile(path)


# ------------------------------------------------------------------------------------------
# Smoke runs (minutes each): every notebook of a paper profile, shrunk, on stand-in data.


def _check_finished(run: Path, name: str) -> dict:
    """Every step ran ok, every training notebook trained, the evaluation wrote every method."""
    record = json.loads((run / "pipeline.json").read_text())
    prof = pipeline.load_profile(name)
    assert record["smoke"] is True and record["devices"]
    assert [s["name"] for s in record["steps"]] == [s.name for s in prof.steps]
    assert all(s["status"] == "ok" for s in record["steps"]), record["steps"]
    folders = ["dhn", "mhn/stage1", "mhn/stage2", "mhn/stage3", "clkn", "dlkfm/level1", "dlkfm/level2", "dlkfm/level3"]
    if name == "mscoco":
        folders += [f"{m}/rho{r}" for m in ("hnet_sup", "hnet_unsup") for r in (16, 32)]
    for folder in folders:  # every training step left its weights in the run's checkpoint folder
        assert (run / "checkpoints" / name / folder / "final.weights.h5").is_file(), folder
    for evaluation in _by_notebook(prof, "05_"):
        out = run / evaluation.parameters["results_dir"].removeprefix("{run_dir}/")
        summary = json.loads((out / "summary.json").read_text())
        assert list(summary) == evaluation.parameters["methods"]
        assert all(s["n"] == 4 for s in summary.values())
        if evaluation.parameters.get("paper_table"):
            assert "| DLKFM | paper |" in (out / "paper_table.md").read_text()
    if _by_notebook(prof, "06_"):
        assert (run / "explore" / "summary.json").is_file()
    return record


@pytest.mark.parametrize("name", ["mscoco", "googleearth", "srif_map_paper"])
def test_smoke_run_of_a_paper_profile(name, tmp_path):
    run = tmp_path / "run"
    pipeline.run_profile(name, run_dir=run, smoke=True, progress=False)
    record = _check_finished(run, name)
    assert not any(s.get("reused") for s in record["steps"])
    # nothing outside the run folder: the stand-in raw data and the dataset are in it
    assert record["stand_in"][0]["folder"].startswith(str(run))
    assert any((run / "Dataset").rglob("*_label.txt"))


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the runner and every process it started (the notebook kernels)."""
    parent = psutil.Process(proc.pid)
    family = parent.children(recursive=True) + [parent]
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)
    proc.wait(timeout=30)


def test_googlemap_smoke_run_killed_then_resumed(tmp_path):
    """SIGKILL while CLKN trains (after its second checkpoint); `--resume` keeps the steps that had
    finished, continues CLKN from its last checkpoint and finishes the run."""
    profile = yaml.safe_load((pipeline.profiles_dir() / "googlemap.yaml").read_text())
    profile["smoke"]["steps"] = {"train_clkn": {"steps": 20}}  # long enough to be killed in
    path = tmp_path / "googlemap.yaml"
    path.write_text(yaml.safe_dump(profile))
    run = tmp_path / "run"
    ckpts = run / "checkpoints" / "googlemap" / "clkn"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "deeplk.pipeline", "--profile", str(path), "--smoke",
                             "--run-dir", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 1500
    try:
        while not any(int(p.name.split("-")[1].split(".")[0]) >= 2 for p in ckpts.glob("ckpt-*.index")):
            assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "CLKN never reached its second checkpoint"
            time.sleep(0.2)
    finally:
        _kill_tree(proc)
    before = {s["name"]: s["status"] for s in json.loads((run / "pipeline.json").read_text())["steps"]}
    assert before["train_clkn"] == "running"
    finished = {n for n, status in before.items() if status == "ok"}
    assert "generate_googlemap" in finished

    record = pipeline.run_profile(path, run_dir=run, smoke=True, resume=True, progress=False)
    _check_finished(run, "googlemap")
    reused = {s["name"] for s in record["steps"] if s.get("reused")}
    assert reused == finished
    nb = nbformat.read(run / "notebooks" / "05_train_clkn.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    start = int(text.split("steps ", 1)[1].split(" -> ")[0])
    assert 2 <= start < 20 and " -> 20 in " in text  # continued from the checkpoint, not from 0
