"""The pipeline runner: execute the project's notebooks in order, headlessly, with a profile.

A profile is a YAML file in `notebooks/profiles/` (``demo`` is the default) listing steps; each
step names a notebook and the parameters papermill injects into its ``parameters`` cell::

    description: The main job on the offline demo dataset.
    steps:
      - name: generate_demo
        notebook: 00_generate_data.ipynb
        parameters: {dataset: demo, out_dir: Dataset/Demo, num_train: 4000, num_val: 500, seed: 0}

String parameters may use ``{run_dir}`` (the run folder) and ``{root}`` (the project root).
Relative paths inside notebooks are resolved against the project root by the library.

Executed copies go to ``<run_dir>/notebooks/NN_<step>.ipynb`` (written under a temporary name and
renamed when the notebook finished; a failing one is kept as ``NN_<step>.failed.ipynb``), never
over the source notebooks. Steps whose notebook does not exist yet are skipped with a note. The
first failing notebook stops the run with a message naming the notebook, the cell and the error.
``<run_dir>/pipeline.json`` records every step's status and duration.

Command line::

    deeplk-pipeline                      # the demo profile into runs/demo
    deeplk-pipeline --profile mscoco --run-dir runs/mscoco-1
    deeplk-pipeline --list               # the profiles and their steps
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
    "main",
]


class NotebookFailed(RuntimeError):
    """A notebook of the pipeline raised; the message names the notebook, the cell and the error."""


@dataclass
class Step:
    """One notebook execution: `notebook` (file name in `notebooks/`) with `parameters`."""

    name: str
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class Profile:
    name: str
    path: Path
    description: str
    steps: list[Step]


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
        seen.add(name)
        steps.append(Step(name=name, notebook=str(raw["notebook"]), parameters=dict(params)))
    return Profile(name=path.stem, path=path, description=str(data.get("description", "")), steps=steps)


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


def run_profile(
    profile: str | os.PathLike = "demo",
    run_dir: str | os.PathLike | None = None,
    only: list[str] | None = None,
    kernel_name: str = "python3",
    log_output: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Execute the steps of `profile` in order; return the run record (also in pipeline.json).

    `only` restricts the run to the named steps (in profile order). Raises `NotebookFailed` at the
    first failing notebook.
    """
    import papermill as pm  # heavy import, only when running

    prof = load_profile(profile)
    run_path = resolve(run_dir if run_dir is not None else Path("runs") / prof.name)
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

    mapping = {"run_dir": str(run_path), "root": str(project_root())}
    record: dict[str, Any] = {
        "profile": prof.name,
        "profile_path": str(prof.path),
        "run_dir": str(run_path),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "steps": [],
    }
    record_path = run_path / "pipeline.json"
    for index, step in enumerate(steps):
        source = notebooks_dir() / step.notebook
        entry: dict[str, Any] = {"name": step.name, "notebook": step.notebook}
        record["steps"].append(entry)
        if not source.is_file():
            entry["status"] = "skipped (notebook not present)"
            print(f"[{index + 1}/{len(steps)}] {step.name}: {step.notebook} does not exist yet, skipped")
            _write_json_atomic(record_path, record)
            continue
        params = _substitute(step.parameters, mapping)
        entry["parameters"] = params
        stem = f"{index:02d}_{step.name}"
        final = out_nb_dir / f"{stem}.ipynb"
        partial = out_nb_dir / f"{stem}.partial.ipynb"
        failed = out_nb_dir / f"{stem}.failed.ipynb"
        for stale in (partial, failed):
            stale.unlink(missing_ok=True)
        print(f"[{index + 1}/{len(steps)}] {step.name}: executing {step.notebook} -> {final}")
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(source),
                str(partial),
                parameters=params,
                kernel_name=kernel_name,
                cwd=str(notebooks_dir()),
                progress_bar=progress,
                log_output=log_output,
            )
        except Exception as exc:  # papermill raises PapermillExecutionError for cell errors
            entry.update(status="failed", seconds=round(time.perf_counter() - t0, 1))
            if partial.exists():
                os.replace(partial, failed)
            message = _failure_message(step, exc)
            entry["error"] = message
            record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            _write_json_atomic(record_path, record)
            raise NotebookFailed(f"{message}\n(executed copy: {failed})") from exc
        os.replace(partial, final)
        entry.update(status="ok", seconds=round(time.perf_counter() - t0, 1), output=str(final))
        _write_json_atomic(record_path, record)
        print(f"    done in {entry['seconds']:.1f} s")
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_json_atomic(record_path, record)
    return record


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
    parser.add_argument("--list", action="store_true", help="list the profiles and their steps, then exit")
    args = parser.parse_args(argv)

    if args.list:
        for name in available_profiles():
            prof = load_profile(name)
            print(f"{name}: {prof.description}")
            for step in prof.steps:
                present = "" if (notebooks_dir() / step.notebook).is_file() else "  (notebook not present yet)"
                print(f"  - {step.name}: {step.notebook}{present}")
        return 0
    try:
        record = run_profile(
            args.profile, run_dir=args.run_dir, only=args.only, kernel_name=args.kernel, log_output=args.log_output
        )
    except NotebookFailed as exc:
        print(f"\nPIPELINE STOPPED: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(s.get("seconds", 0) for s in record["steps"])
    print(f"\nProfile {record['profile']}: {len(record['steps'])} steps in {total:.0f} s; run folder {record['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
