"""The papermill pipeline runner: order, parameters, run folder, skipping and failure reports."""

import json
import os
import platform
import textwrap

import nbformat
import pytest

from deeplk import pipeline


def _notebook(path, parameters_src, body_src):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters_src)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params, nbformat.v4.new_code_cell(body_src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throw-away project root with two notebooks and a profile."""
    (tmp_path / "notebooks" / "profiles").mkdir(parents=True)
    monkeypatch.setenv("DEEPLK_ROOT", str(tmp_path))
    _notebook(
        tmp_path / "notebooks" / "00_write.ipynb",
        "out = 'x.txt'\nvalue = 1\ndata_root = None\ndataset = None\nsource_dir = None",
        "from pathlib import Path\nPath(out).parent.mkdir(parents=True, exist_ok=True)\nPath(out).write_text(str(value))",
    )
    _notebook(
        tmp_path / "notebooks" / "01_fail.ipynb",
        "message = 'boom'",
        "x = 1\nraise ValueError(message)",
    )
    return tmp_path


def _profile(root, text):
    path = root / "notebooks" / "profiles" / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_runs_steps_in_order_with_parameters_and_placeholders(project):
    _profile(project, """
        description: two writes and a notebook that does not exist yet
        steps:
          - {name: first, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/a.txt", value: 3}}
          - {name: later, notebook: 09_not_there.ipynb}
          - {name: second, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/b.txt", value: 4}}
    """)
    record = pipeline.run_profile("p", run_dir=project / "run", progress=False)
    run = project / "run"
    assert (run / "a.txt").read_text() == "3"
    assert (run / "b.txt").read_text() == "4"
    assert [s["status"] for s in record["steps"]] == ["ok", "skipped (notebook not present)", "ok"]
    executed = sorted(p.name for p in (run / "notebooks").iterdir())
    assert executed == ["00_first.ipynb", "02_second.ipynb"]
    # the executed copy carries the injected parameters; the source notebook is untouched
    nb = nbformat.read(str(run / "notebooks" / "00_first.ipynb"), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    src = nbformat.read(str(project / "notebooks" / "00_write.ipynb"), as_version=4)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in src.cells)
    saved = json.loads((run / "pipeline.json").read_text())
    assert saved["profile"] == "p" and [s["name"] for s in saved["steps"]] == ["first", "later", "second"]
    import tensorflow as tf

    assert saved["versions"]["tensorflow"] == tf.__version__  # what made the figures
    assert saved["versions"]["python"] == platform.python_version()


def test_failure_stops_the_run_and_names_notebook_cell_and_error(project, capsys):
    _profile(project, """
        steps:
          - {name: breaks, notebook: 01_fail.ipynb, parameters: {message: "bad thing"}}
          - {name: never, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/never.txt"}}
    """)
    code = pipeline.main(["--profile", "p", "--run-dir", str(project / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert "01_fail.ipynb" in err and "ValueError: bad thing" in err and "cell" in err
    assert not (project / "run" / "never.txt").exists()
    assert (project / "run" / "notebooks" / "00_breaks.failed.ipynb").is_file()
    assert not list((project / "run" / "notebooks").glob("*.partial.ipynb"))
    saved = json.loads((project / "run" / "pipeline.json").read_text())
    assert saved["steps"][0]["status"] == "failed" and len(saved["steps"]) == 1


def test_bad_profiles_give_clear_errors(project):
    with pytest.raises(FileNotFoundError, match="nope"):
        pipeline.load_profile("nope")
    _profile(project, "steps: []\n")
    with pytest.raises(ValueError, match="non-empty `steps:`"):
        pipeline.load_profile("p")
    _profile(project, "steps:\n  - {name: a}\n")
    with pytest.raises(ValueError, match="notebook"):
        pipeline.load_profile("p")
    _profile(project, "steps:\n  - {name: a, notebook: 00_write.ipynb}\n  - {name: a, notebook: 00_write.ipynb}\n")
    with pytest.raises(ValueError, match="used twice"):
        pipeline.load_profile("p")


@pytest.mark.parametrize("text, match", [
    ("steps:\n  - {name: a, notebook: 09_not_there.ipynb, parameters: {anything: 1}}\n"
     "  - {name: b, notebook: 00_write.ipynb, parameters: {out: x.txt, valeu: 2}}\n",
     r"step 'b' passes \['valeu'\], which 00_write.ipynb does not declare.*"
     r"it declares \['data_root', 'dataset', 'out', 'source_dir', 'value'\]"),
    # an old spelling is named with its new one; smoke values are checked too
    ("steps:\n  - {name: b, notebook: 00_write.ipynb, parameters: {normalize: true}}\n",
     r"\['normalize'\].*\('normalize' is now spelt 'normalise'\)"),
    ("steps:\n  - {name: b, notebook: 00_write.ipynb}\nsmoke: {steps: {b: {standardize: 1}}}\n",
     "'standardize' is now spelt 'standardise'"),
])
def test_parameters_a_notebook_does_not_declare_are_refused(project, text, match):
    _profile(project, text)
    with pytest.raises(ValueError, match=match):
        pipeline.load_profile("p")


def test_parameters_of_a_notebook_not_there_yet_are_not_checked(project):
    _profile(project, "steps:\n  - {name: a, notebook: 09_not_there.ipynb, parameters: {anything: 1}}\n")
    assert pipeline.load_profile("p").steps[0].parameters == {"anything": 1}  # skipped at run time


def test_only_selects_steps_and_rejects_unknown_ones(project):
    _profile(project, """
        steps:
          - {name: a, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/a.txt"}}
          - {name: b, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/b.txt"}}
    """)
    with pytest.raises(ValueError, match="unknown step"):
        pipeline.run_profile("p", run_dir=project / "run", only=["zzz"])
    pipeline.run_profile("p", run_dir=project / "run", only=["b"], progress=False)
    assert (project / "run" / "b.txt").exists() and not (project / "run" / "a.txt").exists()


def test_shipped_profiles_are_valid():
    """Every profile in the repository parses and names notebooks of the repository."""
    import os

    os.environ.pop("DEEPLK_ROOT", None)
    names = pipeline.available_profiles()
    assert "demo" in names
    for name in names:
        prof = pipeline.load_profile(name)
        for step in prof.steps:
            assert step.notebook.endswith(".ipynb")
        # Evaluations time the methods: nothing may run beside them. An evaluation without
        # `after` waits for every earlier step, and so must every step after it.
        deps = pipeline._dependencies(prof.steps)
        for i, step in enumerate(prof.steps):
            if step.notebook == "05_evaluate.ipynb":
                assert all(s.after is None for s in prof.steps[i:]), f"{name}: a step runs beside {step.name}"
                assert deps[step.name] == {s.name for s in prof.steps[:i]}


# ------------------------------------------------------------------------------------------
# Parallel steps (`after`, `jobs`)


@pytest.fixture
def waiting(project):
    """A notebook that writes `mark`, then waits (at most `timeout` s) for the file `wait_for`
    and `linger` seconds more, then raises if `fail`; the mark records the kernel's TensorFlow
    thread setting and its working directory (``threads|cwd``)."""
    _notebook(
        project / "notebooks" / "02_wait.ipynb",
        "mark = 'm.txt'\nwait_for = None\ntimeout = 60.0\nlinger = 0.0\nfail = False",
        "import os, time\nfrom pathlib import Path\n"
        "Path(mark).write_text(os.environ.get('TF_NUM_INTRAOP_THREADS', 'unset') + '|' + os.getcwd())\n"
        "t0 = time.time()\nwhile wait_for is not None and not Path(wait_for).exists():\n"
        "    assert time.time() - t0 < timeout, f'{wait_for} never appeared'\n    time.sleep(0.1)\n"
        "time.sleep(linger)\n"
        "if fail:\n    raise RuntimeError('failing on purpose')",
    )
    return project


def test_independent_steps_run_side_by_side_with_jobs_2(waiting, monkeypatch):
    """`a` and `b` each wait for the other's mark: both finish only if they run at the same time.
    `c` waits for `a` only; `d` (no `after`) for everything before it."""
    import os

    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    _profile(waiting, """
        jobs: 2
        steps:
          - {name: a, notebook: 02_wait.ipynb, parameters: {mark: "{run_dir}/a", wait_for: "{run_dir}/b"}}
          - {name: b, notebook: 02_wait.ipynb, after: [], parameters: {mark: "{run_dir}/b", wait_for: "{run_dir}/a"}}
          - {name: c, notebook: 02_wait.ipynb, after: [a], parameters: {mark: "{run_dir}/c", wait_for: "{run_dir}/a"}}
          - {name: d, notebook: 02_wait.ipynb, parameters: {mark: "{run_dir}/d", wait_for: "{run_dir}/c"}}
    """)
    assert pipeline.load_profile("p").jobs == 2
    cwd = os.getcwd()
    record = pipeline.run_profile("p", run_dir=waiting / "run", progress=False)
    run = waiting / "run"
    assert [(s["name"], s["status"]) for s in record["steps"]] == [("a", "ok"), ("b", "ok"), ("c", "ok"), ("d", "ok")]
    # every kernel runs in notebooks/; the runner's own process never leaves its directory
    marks = {name: (run / name).read_text().split("|", 1) for name in "abcd"}
    assert {folder for _, folder in marks.values()} == {str((waiting / "notebooks").resolve())}
    assert os.getcwd() == cwd
    assert sorted(p.name for p in (run / "notebooks").iterdir()) == ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb", "03_d.ipynb"]
    # each of two kernels gets half of the cores; the parent's environment is restored
    assert marks["a"][0] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ
    assert json.loads((run / "pipeline.json").read_text())["jobs"] == 2


def test_jobs_1_runs_one_notebook_at_a_time(waiting):
    """The same two mutually waiting steps deadlock with --jobs 1: the first one times out."""
    _profile(waiting, """
        jobs: 2
        steps:
          - {name: a, notebook: 02_wait.ipynb, parameters: {mark: "{run_dir}/a", wait_for: "{run_dir}/b", timeout: 3}}
          - {name: b, notebook: 02_wait.ipynb, after: [], parameters: {mark: "{run_dir}/b", wait_for: "{run_dir}/a"}}
    """)
    with pytest.raises(pipeline.NotebookFailed, match="b never appeared"):
        pipeline.run_profile("p", run_dir=waiting / "run", progress=False, jobs=1)
    assert not (waiting / "run" / "b").exists()


def test_a_parallel_failure_lets_running_steps_finish_and_starts_nothing_new(waiting, capsys):
    _profile(waiting, """
        jobs: 2
        steps:
          - {name: slow, notebook: 02_wait.ipynb, parameters: {mark: "{run_dir}/slow", wait_for: "{run_dir}/bad", linger: 4}}
          - {name: bad, notebook: 02_wait.ipynb, after: [], parameters: {mark: "{run_dir}/bad", fail: true}}
          - {name: later, notebook: 02_wait.ipynb, after: [slow], parameters: {mark: "{run_dir}/later"}}
    """)
    code = pipeline.main(["--profile", "p", "--run-dir", str(waiting / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "02_wait.ipynb (step 'bad')" in err and "failing on purpose" in err
    saved = json.loads((waiting / "run" / "pipeline.json").read_text())
    assert [(s["name"], s["status"]) for s in saved["steps"]] == [("slow", "ok"), ("bad", "failed")]
    assert not (waiting / "run" / "later").exists()


def test_after_and_jobs_are_validated(project):
    _profile(project, "steps:\n  - {name: a, notebook: 00_write.ipynb, after: [b]}\n  - {name: b, notebook: 00_write.ipynb}\n")
    with pytest.raises(ValueError, match=r"step 'a' `after` names \['b'\], which are not earlier steps"):
        pipeline.load_profile("p")
    _profile(project, "steps:\n  - {name: a, notebook: 00_write.ipynb, after: {x: 1}}\n")
    with pytest.raises(ValueError, match="`after` must be a list"):
        pipeline.load_profile("p")
    _profile(project, "jobs: 0\nsteps:\n  - {name: a, notebook: 00_write.ipynb}\n")
    with pytest.raises(ValueError, match="`jobs` must be a positive integer, got 0"):
        pipeline.load_profile("p")
    _profile(project, "steps:\n  - {name: a, notebook: 00_write.ipynb, parameters: {out: \"{run_dir}/a.txt\"}}\n")
    with pytest.raises(ValueError, match="`jobs` must be a positive integer"):
        pipeline.run_profile("p", run_dir=project / "run", jobs=-1)


def test_dependencies_default_to_every_earlier_step_and_ignore_unselected_ones():
    S = pipeline.Step
    steps = [S("g", "x.ipynb"), S("t1", "x.ipynb", after=("g",)), S("t2", "x.ipynb", after=("g",)),
             S("e", "x.ipynb")]
    assert pipeline._dependencies(steps) == {"g": set(), "t1": {"g"}, "t2": {"g"}, "e": {"g", "t1", "t2"}}
    assert pipeline._dependencies(steps[1:]) == {"t1": set(), "t2": set(), "e": {"t1", "t2"}}


# ------------------------------------------------------------------------------------------
# Resuming a run (`--resume`) and the smoke section


def test_resume_keeps_finished_steps_and_reruns_the_rest(project):
    _profile(project, """
        steps:
          - {name: a, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/a.txt", value: 1}}
          - {name: b, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/b.txt", value: 2}}
          - {name: c, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/c.txt", value: 3}}
    """)
    run = project / "run"
    pipeline.run_profile("p", run_dir=run, progress=False, only=["a", "b"])
    (run / "a.txt").write_text("kept")  # a rerun of `a` would overwrite it
    # `b` changed its parameters since: it runs again; `c` never ran
    _profile(project, """
        steps:
          - {name: a, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/a.txt", value: 1}}
          - {name: b, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/b.txt", value: 20}}
          - {name: c, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/c.txt", value: 3}}
    """)
    record = pipeline.main(["--profile", "p", "--run-dir", str(run), "--resume"])
    assert record == 0
    saved = json.loads((run / "pipeline.json").read_text())
    assert [(s["name"], s["status"], bool(s.get("reused"))) for s in saved["steps"]] == [
        ("a", "ok", True), ("b", "ok", False), ("c", "ok", False)]
    assert [(run / f"{n}.txt").read_text() for n in "abc"] == ["kept", "20", "3"]
    # without --resume every step runs again
    pipeline.run_profile("p", run_dir=run, progress=False)
    assert (run / "a.txt").read_text() == "1"


def test_resume_reruns_a_step_whose_executed_notebook_is_gone(project):
    _profile(project, "steps:\n  - {name: a, notebook: 00_write.ipynb, parameters: {out: \"{run_dir}/a.txt\"}}\n")
    run = project / "run"
    pipeline.run_profile("p", run_dir=run, progress=False)
    (run / "notebooks" / "00_a.ipynb").unlink()
    (run / "a.txt").unlink()
    record = pipeline.run_profile("p", run_dir=run, progress=False, resume=True)
    assert not record["steps"][0].get("reused") and (run / "a.txt").read_text() == "1"


def test_smoke_mode_overrides_values_moves_folders_and_needs_a_section(project):
    _profile(project, """
        steps:
          - {name: a, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/a.txt", value: 100}}
          - {name: b, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/b.txt", value: 200}}
    """)
    with pytest.raises(ValueError, match="has no `smoke:` section"):
        pipeline.run_profile("p", run_dir=project / "run", smoke=True)
    _profile(project, """
        steps:
          - {name: a, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/a.txt", value: 100}}
          - {name: b, notebook: 00_write.ipynb, parameters: {out: "{run_dir}/b.txt", value: 200, data_root: D/x}}
        smoke:
          parameters: {value: 1, steps: 5}
          steps: {b: {out: "{run_dir}/small_b.txt"}}
    """)
    small = pipeline.smoke_profile(pipeline.load_profile("p"))
    assert [s.parameters for s in small.steps] == [
        {"out": "{run_dir}/a.txt", "value": 1},  # `steps` is not one of its parameters: not added
        {"out": "{run_dir}/small_b.txt", "value": 1, "data_root": "{run_dir}/D/x"}]
    record = pipeline.run_profile("p", progress=False, smoke=True)
    run = project / "runs" / "p-smoke"  # the default run folder of a smoke run
    assert record["smoke"] is True and record["run_dir"] == str(run)
    assert (run / "a.txt").read_text() == "1" and (run / "small_b.txt").read_text() == "1"


def test_training_devices_and_gpu_memory_growth_for_parallel_kernels(monkeypatch):
    import tensorflow as tf

    devices = pipeline.training_devices()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        assert [d.split(" ")[0] for d in devices] == [f"GPU:{i}" for i in range(len(gpus))]
    else:
        assert devices == ["CPU"]
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    with pipeline._ThreadLimits(2):
        assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ
    with pipeline._ThreadLimits(1):  # one kernel at a time: TensorFlow's default
        assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ


def test_smoke_mode_never_writes_stand_in_data_outside_the_run_folder(project, tmp_path):
    real = tmp_path / "real_raw"
    _profile(project, f"""
        steps:
          - {{name: g, notebook: 00_write.ipynb, parameters: {{out: "{{run_dir}}/g.txt", dataset: googlemap, source_dir: {real}}}}}
        smoke: {{parameters: {{}}}}
    """)
    with pytest.raises(ValueError, match="outside the run folder"):
        pipeline.run_profile("p", run_dir=project / "run", smoke=True, progress=False)
    assert not real.exists()
