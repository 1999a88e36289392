"""Run folders and resuming, for the Hydra entry points (``vatt.train``).

- ``${vatt.root:}`` is the project root every path in ``configs/paths`` hangs
  from: ``$VATT_ROOT`` when set, else the folder the command is started in. It is
  a plain resolver, so run and sweep folders resolve before Hydra has set its own
  run-time values (a ``${hydra:runtime.cwd}`` default did not, and broke
  ``--multirun``).
- ``ckpt_path=.../checkpoints/last.ckpt`` continues the run in its own folder:
  ``resume_argv`` points Hydra's run folder at it before Hydra starts, so
  ``train.log``, TensorBoard events and checkpoints continue where they were
  (Hydra writes the resumed command's config under ``.hydra/resume_<time>/``).
- ``restore_config`` puts the checkpoint's model, data and seed settings back
  into the composed config; keys given on the command line win, and every
  difference is reported.
"""

from __future__ import annotations

import copy
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# What a resumed run takes from its checkpoint; the trainer (hardware, limits) comes from the command line.
RESTORED = ("model", "data", "seed")


def project_root() -> str:
    return str(Path(os.environ.get("VATT_ROOT") or os.getcwd()).resolve())


CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
CONFIG_DIR = str(CONFIG_ROOT)  # configs/train.yaml and its groups


def config_groups(task: str) -> str:
    """The config groups a command's ``--help`` lists, one line each: ``group: option, option``.

    Files starting with ``_`` are partials that other configs include, not choices;
    ``train`` lists the groups of ``configs/`` (the evaluation's own under ``eval/``
    excepted), ``eval`` those of ``configs/eval/`` plus the shared data and loggers.
    """
    def options(*folders: Path) -> list[str]:
        return sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml") if not p.stem.startswith("_")})

    if task == "eval":
        downstream = [n for n in options(CONFIG_ROOT / "data")  # the labelled sets, not the pretraining data modules
                      if "_downstream" in (CONFIG_ROOT / "data" / f"{n}.yaml").read_text()]
        groups = {"task": options(CONFIG_ROOT / "eval" / "task"),
                  "data": sorted({*downstream, *options(CONFIG_ROOT / "eval" / "data")}),
                  "logger": options(CONFIG_ROOT / "logger")}
    else:
        groups = {d.name: options(d) for d in sorted(CONFIG_ROOT.iterdir())
                  if d.is_dir() and d.name not in ("eval", "hydra", "paths")}
    return "\n".join(f"{group}: {', '.join(names)}" for group, names in groups.items() if names)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("vatt.root", project_root, replace=True)
    OmegaConf.register_new_resolver("vatt.config_groups", config_groups, replace=True)


register_resolvers()


# --------------------------------------------------------------------------- resume in the run's folder


def run_dir_of(ckpt: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` with ``<run>/.hydra``), else None."""
    ckpt = Path(ckpt).resolve()
    run = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return run
    return None


def _arg_value(argv: list[str], key: str) -> str | None:
    value = None
    for a in argv:
        if a.lstrip("+").startswith(f"{key}="):
            value = a.split("=", 1)[1].strip("'\"")
    return value


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# what ``ckpt_path=last`` found (or why it found nothing); vatt.train logs these once logging is set up
RESUME_NOTES: list[str] = []


def _checkpoints_newest_first(folder: Path) -> list[Path]:
    """``last.ckpt``, then ``previous.ckpt``, then the other checkpoints of a run, newest first."""
    if not folder.is_dir():
        return []
    first = [folder / n for n in ("last.ckpt", "previous.ckpt") if (folder / n).exists()]
    rest = sorted((p for p in folder.glob("*.ckpt") if p not in first), key=lambda p: p.stat().st_mtime, reverse=True)
    return first + rest


def _experiment_of(run: Path) -> str | None:
    try:
        choices = OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra.runtime.choices
        return choices.get("experiment")
    except Exception:  # noqa: BLE001 - a run folder without Hydra's record does not match
        return None


def find_last(argv: list[str]) -> tuple[Path | None, list[str]]:
    """``ckpt_path=last``: the newest readable checkpoint of this experiment, and what was tried on the way.

    Looks in ``hydra.run.dir`` when the command line names one, else in every run
    folder of ``<paths.log_dir>/<task_name>/runs/`` started with the same
    ``experiment=``; newest run first, and in a run ``last.ckpt``, then
    ``previous.ckpt``, then its other checkpoints. An unreadable file (truncated,
    corrupt) is reported and the next one is tried.
    """
    from vatt.checkpoint import CheckpointError, read_checkpoint

    notes: list[str] = []
    explicit = _arg_value(argv, "hydra.run.dir")
    if explicit is not None:
        runs = [Path(explicit)]
        where = explicit
    else:
        root = Path(_arg_value(argv, "paths.root_dir") or project_root())
        log_dir = Path(_arg_value(argv, "paths.log_dir") or root / "logs")
        base = log_dir / (_arg_value(argv, "task_name") or "train") / "runs"
        experiment = _arg_value(argv, "experiment") or _default_experiment()
        runs = [r for r in (base.iterdir() if base.is_dir() else []) if _experiment_of(r) == experiment]
        where = f"{base} (experiment={experiment})"

    def newest(run: Path) -> float:
        files = _checkpoints_newest_first(run / "checkpoints")
        return max((f.stat().st_mtime for f in files), default=0.0)

    for run in sorted(runs, key=newest, reverse=True):
        for ckpt in _checkpoints_newest_first(run / "checkpoints"):
            try:
                step = read_checkpoint(ckpt).get("global_step")
            except (CheckpointError, OSError) as e:
                notes.append(f"ckpt_path=last: skipping {ckpt}: {e}")
                continue
            notes.append(f"ckpt_path=last: {ckpt} (global step {step})")
            return ckpt, notes
    notes.append(f"ckpt_path=last: no readable checkpoint in {where}; starting a new run")
    return None, notes


def _default_experiment() -> str | None:
    defaults = OmegaConf.load(CONFIG_ROOT / "train.yaml").get("defaults", [])
    for d in defaults:
        if isinstance(d, DictConfig) and "experiment" in d:
            return d["experiment"]
    return None


def resume_argv(argv: list[str]) -> list[str]:
    """Command-line arguments with Hydra's run folder set to the folder of ``ckpt_path=`` (single runs only).

    ``ckpt_path=last`` is replaced by the checkpoint ``find_last`` picks (or by
    ``null`` when there is none: the run starts afresh, so the same command serves
    the first start and every restart of a preempted job). Left unchanged:
    multiruns (where ``last`` is an error), no ``ckpt_path``, a checkpoint outside a
    run folder, or an explicit ``hydra.run.dir=`` (which then is the run's folder).
    """
    RESUME_NOTES.clear()
    ckpt = _arg_value(argv, "ckpt_path")
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if ckpt == "last":
        if multirun:
            raise SystemExit("ckpt_path=last resumes one run; resume the jobs of a sweep one at a time with "
                             "ckpt_path=<job folder>/checkpoints/last.ckpt")
        found, notes = find_last(argv)
        RESUME_NOTES.extend(notes)
        argv = [a for a in argv if not a.lstrip("+").startswith("ckpt_path=")]
        argv.append(f"ckpt_path={_quote(str(found))}" if found is not None else "ckpt_path=null")
        ckpt = str(found) if found is not None else None
        if found is not None and _arg_value(argv, "hydra.run.dir") is not None:
            stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            return [*argv, f"hydra.output_subdir=.hydra/resume_{stamp}"]
    if multirun or _arg_value(argv, "hydra.run.dir") is not None:
        return argv
    if ckpt in (None, "", "null"):
        return argv
    run = run_dir_of(ckpt)
    if run is None:
        return argv
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return [*argv, f"hydra.run.dir={_quote(str(run))}", f"hydra.output_subdir=.hydra/resume_{stamp}"]


# --------------------------------------------------------------------------- settings from the checkpoint


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: value}


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    out = {}
    for key in RESTORED:
        if key in cfg:
            node = cfg[key]
            out[key] = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
    return _flatten(out, "")


def _cli_keys(overrides: list[str]) -> dict[str, bool]:
    """``{key: is_delete}`` for every override on the command line (Hydra's own parser)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: o.is_delete() for o in parsed}


def restore_config(cfg: DictConfig, saved: dict[str, Any], overrides: list[str]) -> list[str]:
    """Set ``cfg``'s model, data and seed to the checkpoint's (``saved``: the run's unresolved config), in place.

    A key on the command line (``overrides``, e.g. ``model.droptoken=0.5``) keeps its
    command-line value; a group choice (``data=shards``) keeps the whole section.
    Returns one line per setting whose value differs from what the command line alone
    would have given, or from the checkpoint's, saying where the used value came from.
    """
    cli = _cli_keys(overrides)
    before = _resolved(cfg)
    # the checkpoint's values, resolved in this run's context (its paths interpolate ${paths...})
    old = copy.deepcopy(cfg)
    OmegaConf.set_struct(old, False)
    for key in RESTORED:
        if key in saved:
            old[key] = saved[key]
    old_flat = _resolved(old)
    struct = OmegaConf.is_struct(cfg)
    OmegaConf.set_struct(cfg, False)
    try:
        for section in RESTORED:
            if section not in saved or section in cli:
                continue
            restored = OmegaConf.create({section: saved[section]})
            for key, is_delete in cli.items():
                if not key.startswith(f"{section}."):
                    continue
                if is_delete:
                    parent, _, leaf = key.rpartition(".")
                    node = OmegaConf.select(restored, parent)
                    if isinstance(node, DictConfig) and leaf in node:
                        del node[leaf]
                else:
                    value = OmegaConf.select(cfg, key)
                    if isinstance(value, (DictConfig, ListConfig)):
                        value = OmegaConf.to_container(value, resolve=True)
                    OmegaConf.update(restored, key, value, force_add=True)
            cfg[section] = restored[section]
    finally:
        OmegaConf.set_struct(cfg, struct)
    try:
        after = _resolved(cfg)
    except Exception as e:  # an interpolation in the checkpoint's config that this version cannot resolve
        raise ValueError(f"the checkpoint's settings cannot be restored ({e}); give them on the command line") from e

    lines = []
    for key in sorted(set(before) | set(after) | set(old_flat)):
        now, cmd, ckpt = after.get(key, "<unset>"), before.get(key, "<unset>"), old_flat.get(key, "<unset>")
        from_cli = any(key == k or key.startswith(f"{k}.") for k in cli)
        if from_cli and now != ckpt:
            lines.append(f"{key}: {now!r} from the command line (the checkpoint had {ckpt!r})")
        elif not from_cli and now != cmd:
            lines.append(f"{key}: {now!r} from the checkpoint (the command line alone gives {cmd!r})")
    return lines


def interpreter() -> str:
    """The Python this run was started with, as a user would type it from here (``.venv/bin/python``)."""
    exe = Path(sys.executable)
    return str(exe.relative_to(Path.cwd())) if exe.is_relative_to(Path.cwd()) else str(exe)


def report_stop(log: Any, signal_name: str, step: int | None, checkpoint: str | None, requeued: bool) -> None:
    """Say where a run stopped by a signal left its state and how to continue it."""
    log.warning("stopped by %s at step %s; state saved to %s", signal_name, step,
                checkpoint or "no last.ckpt (the run has no LastCheckpoint callback)")
    if requeued:
        log.warning("the SLURM job was requeued and will continue from there")
    elif checkpoint is not None:
        args = [a for a in sys.argv[1:] if not a.startswith(("ckpt_path=", "hydra.run.dir=", "hydra.output_subdir="))]
        log.warning("continue with: %s -m vatt.train %s", interpreter(), " ".join([*args, f"ckpt_path={checkpoint}"]))
        log.warning("(or ckpt_path=last: the newest last.ckpt of this experiment)")
