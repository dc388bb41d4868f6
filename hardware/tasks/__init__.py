"""Task registry: name -> task class and its config schema."""

from __future__ import annotations

from hardware.tasks.ant import AntConfig, AntTask
from hardware.tasks.base import Task, TaskConfig, TaskConfigError
from hardware.tasks.cartpole import CartpoleConfig, CartpoleTask
from hardware.tasks.locomotion import LocomotionConfig, LocomotionTask
from hardware.tasks.reach import ReachConfig, ReachTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (CartpoleTask, ReachTask, LocomotionTask, AntTask)}


def task_class(name: str) -> type[Task]:
    """The task class registered as ``name``, or a clear error listing the known tasks."""
    if name not in TASKS:
        raise TaskConfigError(f"unknown task '{name}'; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]


__all__ = ["TASKS", "AntConfig", "CartpoleConfig", "LocomotionConfig", "ReachConfig", "Task", "TaskConfig",
           "TaskConfigError", "task_class"]
