"""The pipeline runner: execute the project's notebooks in order, headlessly, with a profile.

A profile is a YAML file in `notebooks/profiles/` (``demo`` is the default) listing steps; each
step names a notebook and the parameters papermill injects into its ``parameters`` cell::

    description: The main job on the offline demo dataset.
    steps:
      - name: generate_demo
        notebook: 00_generate_data.ipynb
        parameters: {dataset: demo, out_dir: Dataset/Demo, num_train: 4000, num_val: 500, seed: 0}

Every parameter a step (or its ``smoke.steps`` entry) passes must be declared in its notebook's
``parameters`` cell (papermill would silently ignore a misspelt or renamed one, and the notebook
would run with its small default); an old spelling gets the new one named in the error.
String parameters may use ``{run_dir}`` (the run folder) and ``{root}`` (the project root).
Relative paths inside notebooks are resolved against the project root by the library.

**Parallel steps.** By default a step starts when every step before it has finished. A step with
``after: [names]`` waits only for those (earlier) steps, so independent chains, e.g. the training
of two models on data generated before, can run side by side: ``jobs: 2`` in the profile (or
``--jobs 2``) runs up to two notebooks at once, each in its own kernel process. Small models do
not keep two cores busy on their own (measured on the demo profile's HomographyNet: 0.155 s per
step with two threads alone, 0.161 s per step with one thread each for two runs side by side), so
two lanes nearly halve the wall time of the training part. With ``jobs > 1`` each kernel gets
``cpu_count // jobs`` TensorFlow threads (``TF_NUM_INTRAOP_THREADS``, ``OMP_NUM_THREADS``; values
already set in the environment are kept). A step without ``after`` still waits for everything
before it, so steps that time methods (the evaluations) run alone when listed after the training
and without ``after``.

Executed copies go to ``<run_dir>/notebooks/NN_<step>.ipynb`` (written under a temporary name and
renamed when the notebook finished; a failing one is kept as ``NN_<step>.failed.ipynb``), never
over the source notebooks. Steps whose notebook does not exist yet are skipped with a note. The
first failing notebook stops the run with a message naming the notebook, the cell and the error
(steps already running in parallel are left to finish; no new step starts).
``<run_dir>/pipeline.json`` records every step's status and duration, and the run's wall time.

**Smoke mode** (``--smoke``): a profile's ``smoke:`` section shrinks it so that its wiring runs
end to end on a CPU in minutes::

    smoke:
      jobs: 2
      parameters: {num_train: 8, num_val: 4, steps: 2, batch_size: 2, max_samples: 4}
      steps: {train_dlkfm_level1: {channels: 4}}

``parameters`` replaces those values in every step that sets them; ``steps`` adds per-step values.
The data and checkpoint folders of the steps (`SMOKE_PATH_PARAMETERS`, relative paths) move into
the run folder (default ``runs/<profile>-smoke``), and before the first step the raw folder of
each generation step of a paper dataset (or of SRIF-layout registered pairs) is filled with
stand-in data in that dataset's layout (`deeplk.data.stand_in`), so a smoke run never reads or writes the real datasets.

**Resuming** (``--resume``): with the run folder of an interrupted run, the steps that finished
there with the same parameters (``pipeline.json``, and their executed notebook present) are not
run again; the others run as usual, and the notebooks themselves continue where they stopped
(generation keeps the samples on disk, training resumes from its last checkpoint).

The runner prints the devices TensorFlow will train on (``devices`` in ``pipeline.json``).

Command line::

    deeplk-pipeline                      # the demo profile into runs/demo
    deeplk-pipeline --profile mscoco --run-dir runs/mscoco-1
    deeplk-pipeline --list               # the profiles and their steps
    deeplk-pipeline --jobs 1             # one notebook at a time, whatever the profile says
    deeplk-pipeline --profile googlemap --smoke            # the paper profile, shrunk, on a CPU
    deeplk-pipeline --profile googlemap --resume           # continue an interrupted run
"""

from __future__ import annotations

import argparse
import json
import platform
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

from deeplk._checks import renamed_hint
from deeplk.nbtools import check_parameters_cell
from deeplk.paths import project_root, resolve
from deeplk.utils import write_text_atomic

__all__ = [
    "NotebookFailed",
    "Step",
    "Profile",
    "profiles_dir",
    "available_profiles",
    "load_profile",
    "run_profile",
    "smoke_profile",
    "training_devices",
    "main",
]


class NotebookFailed(RuntimeError):
    """A notebook of the pipeline raised; the message names the notebook, the cell and the error."""


@dataclass
class Step:
    """One notebook execution: `notebook` (file name in `notebooks/`) with `parameters`.

    `after`: names of the earlier steps it waits for; ``None`` (the default) = every earlier step.
    """

    name: str
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] | None = None


@dataclass
class Profile:
    name: str
    path: Path
    description: str
    steps: list[Step]
    jobs: int = 1
    smoke: dict[str, Any] | None = None


def profiles_dir() -> Path:
    return project_root() / "notebooks" / "profiles"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def load_profile(profile: str | os.PathLike) -> Profile:
    """Read a profile by name (``demo``) or by path to a YAML file, and validate it."""
    text = str(profile)
    path = Path(text) if text.endswith((".yaml", ".yml")) else profiles_dir() / f"{text}.yaml"
    path = resolve(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"profile {text!r} not found at {path}; available profiles: {', '.join(available_profiles())}"
        )
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise ValueError(f"{path}: a profile needs a non-empty `steps:` list")
    steps, seen = [], set()
    for i, raw in enumerate(data["steps"]):
        if not isinstance(raw, dict) or "notebook" not in raw:
            raise ValueError(f"{path}: step {i} needs a `notebook:` entry, got {raw!r}")
        params = raw.get("parameters") or {}
        if not isinstance(params, dict):
            raise ValueError(f"{path}: step {i} `parameters` must be a mapping, got {params!r}")
        name = str(raw.get("name") or Path(raw["notebook"]).stem)
        if name in seen:
            raise ValueError(f"{path}: step name {name!r} is used twice")
        after = raw.get("after")
        if after is not None:
            if isinstance(after, str):
                after = [after]
            if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
                raise ValueError(f"{path}: step {name!r} `after` must be a list of step names, got {after!r}")
            unknown = [a for a in after if a not in seen]
            if unknown:
                raise ValueError(f"{path}: step {name!r} `after` names {unknown}, which are not earlier steps")
            after = tuple(after)
        seen.add(name)
        steps.append(Step(name=name, notebook=str(raw["notebook"]), parameters=dict(params), after=after))
    jobs = _check_jobs(data.get("jobs", 1), f"{path}: `jobs`")
    smoke = _check_smoke(data.get("smoke"), {s.name for s in steps}, path)
    declared: dict[str, set[str] | None] = {}
    for step in steps:
        extra = smoke["steps"].get(step.name, {}) if smoke else {}
        _check_parameter_names(step, list(step.parameters) + list(extra), declared, path)
    return Profile(name=path.stem, path=path, description=str(data.get("description", "")), steps=steps,
                   jobs=jobs, smoke=smoke)


def _check_parameter_names(step: Step, names: list[str], declared: dict, path: Path) -> None:
    """Raise `ValueError` if `step` passes `names` its notebook's ``parameters`` cell does not
    declare (a step whose notebook does not exist yet is skipped at run time: not checked).
    `declared` caches each notebook's names."""
    if step.notebook not in declared:
        source = notebooks_dir() / step.notebook
        declared[step.notebook] = (set(check_parameters_cell(nbformat.read(source, as_version=4), str(source)))
                                   if source.is_file() else None)
    known = declared[step.notebook]
    unknown = sorted(set(names) - known) if known is not None else []
    if unknown:
        raise ValueError(f"{path}: step {step.name!r} passes {unknown}, which {step.notebook} does not "
                         f"declare in its parameters cell{renamed_hint(unknown)}; it declares {sorted(known)}")


def _check_smoke(smoke: Any, names: set[str], path: Path) -> dict[str, Any] | None:
    if smoke is None:
        return None
    if not isinstance(smoke, dict):
        raise ValueError(f"{path}: `smoke` must be a mapping, got {smoke!r}")
    unknown = sorted(set(smoke) - {"jobs", "parameters", "steps", "description"})
    if unknown:
        raise ValueError(f"{path}: `smoke` has unknown entries {unknown} (known: description, jobs, parameters, steps)")
    out = {"description": str(smoke.get("description", "")),
           "jobs": _check_jobs(smoke.get("jobs", 1), f"{path}: `smoke.jobs`"),
           "parameters": smoke.get("parameters") or {}, "steps": smoke.get("steps") or {}}
    if not isinstance(out["parameters"], dict):
        raise ValueError(f"{path}: `smoke.parameters` must be a mapping, got {out['parameters']!r}")
    if not isinstance(out["steps"], dict) or not all(isinstance(v, dict) for v in out["steps"].values()):
        raise ValueError(f"{path}: `smoke.steps` must map step names to parameter mappings, got {out['steps']!r}")
    unknown = sorted(set(out["steps"]) - names)
    if unknown:
        raise ValueError(f"{path}: `smoke.steps` names {unknown}, which are not steps of the profile")
    return out


#: Step parameters holding data or checkpoint folders: a smoke run moves relative ones into its
#: run folder.
SMOKE_PATH_PARAMETERS = ("source_dir", "out_dir", "data_root", "checkpoint_dir", "log_dir")


def smoke_profile(prof: Profile) -> Profile:
    """The smoke version of `prof` (see the module docstring): its ``smoke.parameters`` replace the
    values every step sets, ``smoke.steps`` add per-step values, and relative folders in
    `SMOKE_PATH_PARAMETERS` move under ``{run_dir}``. Raises ValueError if `prof` has no
    ``smoke:`` section."""
    if prof.smoke is None:
        raise ValueError(f"profile {prof.name} ({prof.path}) has no `smoke:` section, so it has no smoke mode")
    shared, per_step = prof.smoke["parameters"], prof.smoke["steps"]
    steps = []
    for step in prof.steps:
        params = {k: (shared[k] if k in shared else v) for k, v in step.parameters.items()}
        params.update(per_step.get(step.name, {}))
        for key in SMOKE_PATH_PARAMETERS:
            value = params.get(key)
            if isinstance(value, str) and not value.startswith("{") and not Path(value).is_absolute():
                params[key] = "{run_dir}/" + value
        steps.append(Step(name=step.name, notebook=step.notebook, parameters=params, after=step.after))
    description = prof.smoke["description"] or f"smoke run of {prof.name}"
    return Profile(name=prof.name, path=prof.path, description=description, steps=steps,
                   jobs=prof.smoke["jobs"], smoke=prof.smoke)


def _write_stand_ins(steps: list[Step], mapping: dict[str, str], run_path: Path) -> list[dict]:
    """Stand-in raw data for the generation steps of `STAND_IN_DATASETS` (smoke runs), only inside
    the run folder (an absolute `source_dir` elsewhere, e.g. the real raw data, is an error)."""
    from deeplk.data.stand_in import STAND_IN_DATASETS, write_stand_in

    made = []
    for step in steps:
        params = _substitute(step.parameters, mapping)
        if step.notebook.startswith("00_") and params.get("dataset") in STAND_IN_DATASETS and params.get("source_dir"):
            if not resolve(params["source_dir"]).is_relative_to(run_path):
                raise ValueError(
                    f"smoke run: step {step.name!r} reads source_dir {params['source_dir']}, outside the run "
                    f"folder {run_path}; a smoke run writes its stand-in data only inside it (use a relative path)")
            n_train, n_val = int(params.get("num_train") or 1), int(params.get("num_val") or 1)
            written = write_stand_in(params["dataset"], params["source_dir"], num_train=n_train, num_val=n_val)
            made.append({"step": step.name, "dataset": params["dataset"], "folder": params["source_dir"],
                         "written": written})
            print(f"stand-in {params['dataset']} raw data in {params['source_dir']} "
                  f"({sum(written.values())} new files)", flush=True)
    return made


def training_devices() -> list[str]:
    """The devices TensorFlow trains on here: every visible GPU (``"GPU:0 (NVIDIA ...)"``), else
    ``["CPU"]``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for i, gpu in enumerate(gpus):
        try:
            name = tf.config.experimental.get_device_details(gpu).get("device_name", "")
        except Exception:  # details are best effort (not every build reports them)
            name = ""
        names.append(f"GPU:{i}" + (f" ({name})" if name else ""))
    return names or ["CPU"]


def _check_jobs(jobs: Any, what: str = "`jobs`") -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"{what} must be a positive integer, got {jobs!r}")
    return jobs


def _dependencies(steps: list[Step]) -> dict[str, set[str]]:
    """Step name -> names of the selected steps it waits for (unselected ones count as done)."""
    names = [s.name for s in steps]
    deps = {}
    for i, step in enumerate(steps):
        wanted = set(names[:i]) if step.after is None else set(step.after)
        deps[step.name] = wanted & set(names[:i])
    return deps


class _ThreadLimits:
    """Sets the kernels' thread counts in the environment for parallel steps, restores it after.

    Parallel kernels also get ``TF_FORCE_GPU_ALLOW_GROWTH=true``: by default each TensorFlow
    process reserves nearly all of a GPU's memory, so a second kernel on the same GPU would fail.
    """

    NAMES = ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS")
    GPU_GROWTH = "TF_FORCE_GPU_ALLOW_GROWTH"

    def __init__(self, jobs: int):
        self.threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
        self.saved: dict[str, str | None] = {}

    def __enter__(self):
        if self.threads is not None:
            for name in self.NAMES:
                self.saved[name] = os.environ.get(name)
                os.environ.setdefault(name, str(self.threads))
            self.saved[self.GPU_GROWTH] = os.environ.get(self.GPU_GROWTH)
            os.environ.setdefault(self.GPU_GROWTH, "true")
        return self

    def __exit__(self, *exc):
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _substitute(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, repl in mapping.items():
            value = value.replace("{" + key + "}", repl)
        return value
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, mapping) for k, v in value.items()}
    return value


def _failure_message(step: Step, exc: Exception) -> str:
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", None)
    ename = getattr(exc, "ename", None) or type(exc).__name__
    evalue = getattr(exc, "evalue", None) or str(exc)
    where = f" in cell [{cell}]" if cell is not None else ""
    return f"notebook {step.notebook} (step {step.name!r}) failed{where}: {ename}: {evalue}"


def _write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries the results depend on (recorded in pipeline.json,
    since learned figures repeat exactly only with the same versions on the same machine)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("deeplk", "tensorflow", "keras", "numpy", "opencv-python-headless", "opencv-python",
                 "scikit-image", "papermill"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def run_profile(
    profile: str | os.PathLike = "demo",
    run_dir: str | os.PathLike | None = None,
    only: list[str] | None = None,
    kernel_name: str = "python3",
    log_output: bool = False,
    progress: bool = True,
    jobs: int | None = None,
    smoke: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Execute the steps of `profile`; return the run record (also in pipeline.json).

    `smoke`: run the profile's smoke version (`smoke_profile`; default run folder
    ``runs/<profile>-smoke``), after writing stand-in raw data for its generation steps.
    `resume`: steps that finished in `run_dir` before (status ``ok`` in its ``pipeline.json``,
    same parameters, executed notebook present) are kept and not run again (``"reused": true``).

    Steps start in profile order as soon as the steps they wait for (`Step.after`; by default all
    earlier ones) have finished, up to `jobs` at a time (``None``: the profile's ``jobs``).
    `only` restricts the run to the named steps (in profile order; waits on the other steps are
    dropped). Raises `NotebookFailed` after the first failing notebook (no step starts after it;
    steps already running finish).
    """
    import papermill as pm  # heavy import, only when running

    prof = load_profile(profile)
    if smoke:
        prof = smoke_profile(prof)
    jobs = prof.jobs if jobs is None else _check_jobs(jobs)
    default_dir = Path("runs") / (f"{prof.name}-smoke" if smoke else prof.name)
    run_path = resolve(run_dir if run_dir is not None else default_dir)
    out_nb_dir = run_path / "notebooks"
    out_nb_dir.mkdir(parents=True, exist_ok=True)
    steps = prof.steps
    if only:
        unknown = sorted(set(only) - {s.name for s in steps})
        if unknown:
            raise ValueError(
                f"unknown step(s) {unknown} for profile {prof.name}; steps: {[s.name for s in steps]}"
            )
        steps = [s for s in steps if s.name in only]
    deps = _dependencies(steps)

    mapping = {"run_dir": str(run_path), "root": str(project_root())}
    record_path = run_path / "pipeline.json"
    earlier = _finished_steps(record_path, out_nb_dir) if resume else {}
    devices = training_devices()
    print(f"profile {prof.name}{' (smoke)' if smoke else ''}: TensorFlow trains on {', '.join(devices)}", flush=True)
    record: dict[str, Any] = {
        "profile": prof.name,
        "profile_path": str(prof.path),
        "run_dir": str(run_path),
        "jobs": jobs,
        "smoke": bool(smoke),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": library_versions(),
        "devices": devices,
        "steps": [],
    }
    if smoke:
        record["stand_in"] = _write_stand_ins(steps, mapping, run_path)
    started = time.perf_counter()
    lock = threading.Lock()
    index_of = {step.name: i for i, step in enumerate(steps)}

    def save():
        with lock:
            record["steps"].sort(key=lambda e: index_of[e["name"]])
            _write_json_atomic(record_path, record)

    def execute(step: Step, entry: dict) -> None:
        index = index_of[step.name]
        source = notebooks_dir() / step.notebook
        params = _substitute(step.parameters, mapping)
        entry["parameters"] = params
        stem = f"{index:02d}_{step.name}"
        final = out_nb_dir / f"{stem}.ipynb"
        partial = out_nb_dir / f"{stem}.partial.ipynb"
        failed = out_nb_dir / f"{stem}.failed.ipynb"
        for stale in (partial, failed):
            stale.unlink(missing_ok=True)
        print(f"[{index + 1}/{len(steps)}] {step.name}: executing {step.notebook} -> {final}", flush=True)
        t0 = time.perf_counter()
        entry["status"] = "running"
        save()
        try:
            pm.execute_notebook(
                str(source),
                str(partial),
                parameters=params,
                kernel_name=kernel_name,
                # the kernel starts in notebooks/; papermill's own `cwd` would chdir this whole
                # process, which parallel steps (threads) would race on and leave changed
                resources={"metadata": {"path": str(notebooks_dir())}},
                progress_bar=progress and jobs == 1,
                log_output=log_output,
            )
        except Exception as exc:  # papermill raises PapermillExecutionError for cell errors
            entry.update(status="failed", seconds=round(time.perf_counter() - t0, 1))
            if partial.exists():
                os.replace(partial, failed)
            message = _failure_message(step, exc)
            entry["error"] = message
            save()
            raise NotebookFailed(f"{message}\n(executed copy: {failed})") from exc
        os.replace(partial, final)
        entry.update(status="ok", seconds=round(time.perf_counter() - t0, 1), output=str(final))
        save()
        print(f"    {step.name} done in {entry['seconds']:.1f} s", flush=True)

    pending = list(steps)
    done: set[str] = set()
    running: dict[Any, Step] = {}
    failure: NotebookFailed | None = None
    with _ThreadLimits(jobs), ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            while failure is None and len(running) < jobs:
                ready = next((s for s in pending if deps[s.name] <= done), None)
                if ready is None:
                    break
                pending.remove(ready)
                entry: dict[str, Any] = {"name": ready.name, "notebook": ready.notebook}
                with lock:
                    record["steps"].append(entry)
                previous = earlier.get(ready.name)
                if previous is not None and previous.get("parameters") == _substitute(ready.parameters, mapping):
                    entry.update(previous, reused=True)
                    print(f"[{index_of[ready.name] + 1}/{len(steps)}] {ready.name}: finished in an earlier run, "
                          f"kept ({previous.get('output')})", flush=True)
                    save()
                    done.add(ready.name)
                    continue
                if not (notebooks_dir() / ready.notebook).is_file():
                    entry["status"] = "skipped (notebook not present)"
                    print(f"[{index_of[ready.name] + 1}/{len(steps)}] {ready.name}: {ready.notebook} "
                          "does not exist yet, skipped")
                    save()
                    done.add(ready.name)
                    continue
                running[pool.submit(execute, ready, entry)] = ready
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                step = running.pop(future)
                exc = future.exception()
                if exc is None:
                    done.add(step.name)
                elif failure is None:
                    failure = exc if isinstance(exc, NotebookFailed) else NotebookFailed(
                        f"step {step.name!r} ({step.notebook}) failed: {type(exc).__name__}: {exc}")
                    if running:
                        print(f"{step.name} failed; waiting for the running step(s) "
                              f"{', '.join(s.name for s in running.values())} to finish", file=sys.stderr)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    record["seconds"] = round(time.perf_counter() - started, 1)
    save()
    if failure is not None:
        raise failure
    return record


def _finished_steps(record_path: Path, out_nb_dir: Path) -> dict[str, dict]:
    """Entries of the steps that finished in an earlier run of this folder (status ``ok`` and their
    executed notebook still there), by name; ``{}`` without a readable ``pipeline.json``."""
    try:
        old = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    finished = {}
    for entry in old.get("steps", []):
        output = entry.get("output")
        if entry.get("status") == "ok" and output and Path(output).is_file() and Path(output).parent == out_nb_dir:
            finished[entry["name"]] = {k: v for k, v in entry.items() if k != "reused"}
    return finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deeplk-pipeline",
        description="Run the project's notebooks in order through papermill with a profile.",
    )
    parser.add_argument("--profile", default="demo", help="profile name in notebooks/profiles or a YAML path (default: demo)")
    parser.add_argument("--run-dir", default=None, help="run folder for executed notebooks and artifacts (default: runs/<profile>)")
    parser.add_argument("--only", nargs="+", default=None, metavar="STEP", help="run only these steps")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output to the terminal")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="run up to N independent notebooks at once (default: the profile's `jobs`)")
    parser.add_argument("--smoke", action="store_true",
                        help="run the profile's smoke version: every size shrunk, stand-in data, in runs/<profile>-smoke")
    parser.add_argument("--resume", action="store_true",
                        help="keep the steps that finished in the run folder before (same parameters); run the rest")
    parser.add_argument("--list", action="store_true", help="list the profiles and their steps, then exit")
    args = parser.parse_args(argv)

    if args.list:
        for name in available_profiles():
            prof = load_profile(name)
            print(f"{name}: {prof.description}" + (f" (jobs: {prof.jobs})" if prof.jobs > 1 else "")
                  + (" [--smoke available]" if prof.smoke is not None else ""))
            for step in prof.steps:
                present = "" if (notebooks_dir() / step.notebook).is_file() else "  (notebook not present yet)"
                after = "" if step.after is None else f"  (after {', '.join(step.after) or 'nothing'})"
                print(f"  - {step.name}: {step.notebook}{after}{present}")
        return 0
    try:
        record = run_profile(
            args.profile, run_dir=args.run_dir, only=args.only, kernel_name=args.kernel, log_output=args.log_output,
            jobs=args.jobs, smoke=args.smoke, resume=args.resume,
        )
    except NotebookFailed as exc:
        print(f"\nPIPELINE STOPPED: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(s.get("seconds", 0) for s in record["steps"])
    print(f"\nProfile {record['profile']}: {len(record['steps'])} steps, {total:.0f} s of notebooks in "
          f"{record['seconds']:.0f} s "
          f"(jobs {record['jobs']}); run folder {record['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
