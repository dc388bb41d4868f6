"""docs/config.md and docs/hardware_profile.md are what the structured configs generate: they cannot drift."""

from __future__ import annotations

import subprocess
import sys

from configs.reference import CONFIG_DOC, PROFILE_DOC, ROOT, field_comments, rows
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
