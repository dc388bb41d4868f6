"""docs/config.md and docs/hardware_profile.md are what the structured configs generate: they cannot drift."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from configs.reference import CONFIG_DOC, PROFILE_DOC, ROOT, _default, field_comments, rows
from hardware.profile import HardwareProfile, LimitSpec


def test_config_and_profile_docs_are_what_the_code_generates():
    run = subprocess.run([sys.executable, "-m", "configs.reference", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_profile_doc_shows_the_shipped_cartpole_file_as_it_is():
    assert (ROOT / "configs" / "hardware" / "cartpole.yaml").read_text() in PROFILE_DOC.read_text()


def test_field_comments_are_read_from_the_line_or_the_lines_above():
    comments = field_comments(LimitSpec)
    assert comments["torque_rate"].startswith("torque mode: the normalised command")
    assert comments["soft_range"].startswith("torque mode: the middle")  # two comment lines above it


def test_nested_dataclasses_become_dotted_keys():
    keys = [r[0] for r in rows(HardwareProfile)]
    assert "actuator.mode" in keys and "limits.soft_range" in keys and "actuator" not in keys


def test_every_app_has_a_section():
    text = CONFIG_DOC.read_text()
    for app in ("fleet-train", "fleet-eval", "fleet-demo", "robot-agent", "fleet-hub"):
        assert f"## `{app}`" in text


def _config_classes(cls: type, found: dict[str, type]) -> dict[str, type]:
    """``cls`` and every dataclass nested in it, by qualified name."""
    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    for f in dataclasses.fields(cls):
        value = _default(f)
        if dataclasses.is_dataclass(value):
            _config_classes(type(value), found)
    return found


def test_every_documented_key_has_a_description():
    from fleet.demo.config import DemoConfig
    from hardware.profile import JointSpec
    from hardware.tasks import TASKS
    from robot_agent.config import AgentConfig
    from sim.app_config import EvalConfig, TrainConfig

    found: dict[str, type] = {}
    for cls in (TrainConfig, EvalConfig, DemoConfig, AgentConfig, HardwareProfile, JointSpec,
                *(t.config_cls for t in TASKS.values())):
        _config_classes(cls, found)
    missing = []
    for name, cls in found.items():
        comments: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if dataclasses.is_dataclass(klass):
                comments.update(field_comments(klass))
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(_default(f)):
                continue  # a nested config is its keys
            if not comments.get(f.name):
                missing.append(f"{name}.{f.name}")
    assert not missing, f"keys without a comment: {missing}"


def test_each_task_section_names_its_reward_terms():
    from hardware.tasks import TASKS

    text = CONFIG_DOC.read_text()
    for name, task in TASKS.items():
        section = text.split(f"### `task={name}`")[1].split("###")[0]
        assert all(f"`{term}`" in section.split("|")[0] for term in task.reward_terms), name
