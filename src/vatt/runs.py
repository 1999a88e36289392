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
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# What a resumed run takes from its checkpoint; the trainer (hardware, limits) comes from the command line.
RESTORED = ("model", "data", "seed")


def project_root() -> str:
    return str(Path(os.environ.get("VATT_ROOT") or os.getcwd()).resolve())


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("vatt.root", project_root, replace=True)


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


def resume_argv(argv: list[str]) -> list[str]:
    """Command-line arguments with Hydra's run folder set to the folder of ``ckpt_path=`` (single runs only).

    Left unchanged: multiruns, no ``ckpt_path``, a checkpoint outside a run folder,
    or an explicit ``hydra.run.dir=`` (which starts a new folder).
    """
    if any(a in ("-m", "--multirun") for a in argv) or _arg_value(argv, "hydra.run.dir") is not None:
        return argv
    ckpt = _arg_value(argv, "ckpt_path")
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
