"""Task configs: the YAML under ``configs/task`` merged onto the task's schema (sim and robot agent alike)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from configs import CONFIG_DIR
from hardware.tasks import TASKS, TaskConfig, TaskConfigError, task_class


def task_config(task: str, overrides: dict[str, Any] | DictConfig | None = None) -> TaskConfig:
    """The task's shipped YAML, with ``overrides`` merged on top, validated against its schema."""
    cls = task_class(task)
    path = CONFIG_DIR / "task" / f"{task}.yaml"
    raw = OmegaConf.load(path) if path.is_file() else OmegaConf.create({"name": task})
    if "defaults" in raw:
        raw.pop("defaults")
    return task_config_from(cls.config_cls, raw, overrides)


def task_config_from(schema: type[TaskConfig], *layers: Any) -> TaskConfig:
    """Merge config layers onto ``schema``; a wrong key or type raises naming the key."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), *[x for x in layers if x])
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise TaskConfigError(f"invalid task config (key: task.{key}): {exc.msg}") from exc


def register_task_schemas() -> None:
    """Register every task's schema with Hydra's ConfigStore as ``task/<name>_schema``."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, cls in TASKS.items():
        cs.store(group="task", name=f"{name}_schema", node=cls.config_cls)
