"""Checks of a composed run config, before anything heavy starts: one line per mistake, naming the key and the fix.

``check_train_config`` / ``check_eval_config`` raise ``UserError`` for a value of
the wrong type or outside its range (``model.optimizer.lr=-1``,
``trainer.max_epochs=two``, ``data.batch_size=0``) and for a key that the
instantiated class does not take (``+model.dropuot=0.1``: Hydra's "+key" hint
would otherwise end in a raw ``TypeError``), with the closest valid key; and warn
about settings the command ignores (``pretrained=`` given to a pretraining run).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vatt.errors import UserError

log = logging.getLogger(__name__)

_MISSING = object()


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rule(test: Callable[[Any], bool], what: str, nullable: bool = False) -> tuple[Callable[[Any], bool], str]:
    if nullable:
        return (lambda v: v is None or test(v)), f"{what} or null"
    return test, what


INT_M1 = _rule(lambda v: _int(v) and v >= -1, "an integer >= -1 (-1: no limit)")
POS_INT = _rule(lambda v: _int(v) and v >= 1, "a positive integer")
POS_INT_OR_NULL = _rule(lambda v: _int(v) and v >= 1, "a positive integer", nullable=True)
NONNEG_INT = _rule(lambda v: _int(v) and v >= 0, "an integer >= 0")
NONNEG_INT_OR_NULL = _rule(lambda v: _int(v) and v >= 0, "an integer >= 0", nullable=True)
POS = _rule(lambda v: _num(v) and v > 0, "a number > 0")
NONNEG = _rule(lambda v: _num(v) and v >= 0, "a number >= 0")
FRACTION = _rule(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)")
FRACTION_OR_NULL = _rule(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)", nullable=True)
LIMIT = _rule(lambda v: (_int(v) and v >= 0) or (isinstance(v, float) and 0 <= v <= 1),
              "a number of batches (integer >= 0) or a fraction in [0, 1]", nullable=True)
VAL_INTERVAL = _rule(lambda v: (_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
                     "a number of steps (integer >= 1) or a fraction of an epoch in (0, 1]", nullable=True)
INTEGER = _rule(_int, "an integer")

COMMON = {
    "seed": INTEGER,
    "data.batch_size": POS_INT,
    "data.val_batch_size": POS_INT_OR_NULL,
    "data.num_workers": NONNEG_INT_OR_NULL,
}
TRAIN = {
    **COMMON,
    "trainer.max_epochs": INT_M1,
    "trainer.max_steps": INT_M1,
    "trainer.log_every_n_steps": POS_INT,
    "trainer.accumulate_grad_batches": POS_INT,
    "trainer.check_val_every_n_epoch": POS_INT_OR_NULL,
    "trainer.val_check_interval": VAL_INTERVAL,
    "trainer.limit_train_batches": LIMIT,
    "trainer.limit_val_batches": LIMIT,
    "trainer.num_nodes": POS_INT,
    "data.global_batch_size": POS_INT_OR_NULL,
    "model.droptoken": FRACTION,
    "model.optimizer.lr": POS,
    "model.optimizer.weight_decay": NONNEG,
    "model.optimizer.momentum": FRACTION,
    "model.optimizer.eps": POS,
    "model.scheduler.warmup_steps": NONNEG_INT,
    "model.scheduler.total_steps": POS_INT_OR_NULL,
    "model.scheduler.final_lr": NONNEG,
    "model.loss.temperature": POS,
    "model.loss.mil_nce_weight": NONNEG,
    "model.backbone.dropout": FRACTION,
    "model.backbone.attn_dropout": FRACTION,
    "model.head_dropout": FRACTION_OR_NULL,
    "model.label_smoothing": FRACTION,
    "model.mixup_alpha": NONNEG,
    "model.clip_backbone_grad_norm": _rule(lambda v: _num(v) and v > 0, "a number > 0", nullable=True),
    "model.input.num_frames": POS_INT,
    "model.input.image_size": POS_INT,
    "model.input.sample_rate": POS_INT,
    "model.input.fps": POS,
    "model.input.max_words": POS_INT,
}
EVAL = {
    **COMMON,
    "data.num_windows": POS_INT,
    "data.num_crops": POS_INT,
    "probe.classifier": _rule(lambda v: v in ("logistic", "authors"), "logistic or authors"),
    "probe.epochs": POS_INT,
    "eval.templates": _rule(lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0 and all(
        isinstance(t, str) and t.count("{}") == 1 for t in v), "a list of texts with one {} each", nullable=True),
}
# settings that moved: old key -> new key (the error names the new one)
RENAMED = {
    "probe.num_windows": "data.num_windows",
    "probe.num_crops": "data.num_crops",
    "retrieval.num_windows": "data.num_windows",
    "classifier.num_windows": "data.num_windows",
    "classifier.num_crops": "data.num_crops",
}
DOWNSTREAM_TARGET = "vatt.data.finetune.DownstreamDataModule"


def check_values(cfg: DictConfig, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Every key of ``rules`` present in ``cfg`` holds a value of the stated kind (interpolations resolved)."""
    bad = []
    for key, (test, what) in rules.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        if not test(value):
            bad.append(f"{key}={value!r} must be {what}")
    if bad:
        raise UserError("; ".join(bad))


def _accepted(cls: type) -> set[str] | None:
    """Keyword arguments ``cls(...)`` takes (following ``**kwargs`` to the base classes); None: anything."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
        forwarded = klass.__dict__.get("KWARGS_TO")  # a class that passes **kwargs on to another one
        if forwarded is not None:
            inner = _accepted(forwarded)
            return None if inner is None else names | inner
    return None


def _unknown(keys: list[str], valid: set[str], section: str, owner: str) -> None:
    for key in keys:
        if key in valid or key.startswith("_"):
            continue
        close = difflib.get_close_matches(key, sorted(valid), n=1)
        hint = f"; did you mean {section}.{close[0]}?" if close else ""
        raise UserError(f"{section}.{key} is not a setting of {owner}{hint} (its settings: {', '.join(sorted(valid))})")


def check_keys(cfg: DictConfig, sections: tuple[str, ...] = ("model", "data")) -> None:
    """Keys of an instantiated section that its ``_target_`` does not take (typically ``+section.misspelt=...``)."""
    import hydra

    for section in sections:
        node = cfg.get(section)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        try:
            target = hydra.utils.get_object(node._target_)
        except Exception:  # noqa: BLE001 - Hydra reports an unknown target itself
            continue
        valid = _accepted(target) if inspect.isclass(target) else None
        if valid is not None:
            _unknown(list(node.keys()), valid, section, node._target_)
    backbone = OmegaConf.select(cfg, "model.backbone")
    if isinstance(backbone, DictConfig):
        from vatt.models.vatt import VATTConfig

        fields = {f.name for f in dataclasses.fields(VATTConfig)}
        _unknown(list(backbone.keys()), fields, "model.backbone", "the VATT model (vatt.models.vatt.VATTConfig)")


def _is_pretraining(cfg: DictConfig) -> bool:
    return "Pretrain" in str(OmegaConf.select(cfg, "model._target_", default=""))


def check_train_config(cfg: DictConfig) -> None:
    """All checks of a training run's config (raises ``UserError``; warns about ignored settings)."""
    check_values(cfg, TRAIN)
    check_keys(cfg)
    if _is_pretraining(cfg) and cfg.get("pretrained"):
        log.warning("pretrained=%s is ignored: a pretraining run starts from random weights (pretrained= is for "
                    "fine-tuning, experiment=finetune_*; to continue a run use ckpt_path=...)", cfg.pretrained)
    if _is_pretraining(cfg) and cfg.get("test_after_fit"):
        log.warning("test_after_fit=true is ignored: pretraining has no test split (it validates retrieval)")


def check_renamed(cfg: DictConfig) -> None:
    """A setting given under its old name stops the run with the new name."""
    for old, new in RENAMED.items():
        if OmegaConf.select(cfg, old, default=None) is not None:
            raise UserError(f"{old} is now {new} (one setting of test views for every task): use {new}="
                            f"{OmegaConf.select(cfg, old)}")


def check_eval_config(cfg: DictConfig) -> None:
    """All checks of an evaluation's config (raises ``UserError``)."""
    if OmegaConf.select(cfg, "data._target_", default=None) != DOWNSTREAM_TARGET:
        raise UserError(f"make eval reads a labelled downstream set (configs/data/<name>.yaml including _downstream, "
                        f"or data=demo), not {OmegaConf.select(cfg, 'data._target_', default='this data config')}")
    check_renamed(cfg)
    check_values(cfg, EVAL)
    check_keys(cfg, ("data",))
