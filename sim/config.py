"""Task configs as the sim apps use them (they live with the tasks in ``hardware``, shared with the agent)."""

from __future__ import annotations

from hardware.tasks.config import register_task_schemas, task_config, task_config_from

__all__ = ["register_task_schemas", "task_config", "task_config_from"]
