"""The reality gaps stand-in units are drawn from, per hardware type: what the adaptation and fleet-round
benchmarks and the demo give their units. A unit is (this gap, its own seed): its true physics are drawn once
from the gap's ranges (sim/standin.py). Ranges marked "outside" lie beyond the task's training randomisation
(configs/task/*.yaml), so part of every fleet is a unit sim never showed the policy."""

from __future__ import annotations

from typing import Any

CARTPOLE_GAP: dict[str, Any] = {
    "physics": {"motor_strength": [0.5, 0.7],  # outside: trained on [0.8, 1.2]
                "mass_scale": [1.0, 1.4],  # partly outside [0.8, 1.2]
                "damping_scale": [1.0, 3.0],  # partly outside [0.5, 1.5]
                "latency_steps": [1, 2]},  # partly outside [0, 1]
    "joint_pos_noise": 0.01, "joint_vel_noise": 0.05}

ARM_GAP: dict[str, Any] = {
    "physics": {"motor_strength": [0.5, 0.7],  # outside: trained on [0.9, 1.1]
                "kp_scale": [0.6, 0.9],  # partly outside [0.8, 1.2]
                "mass_scale": [1.1, 1.5],  # partly outside [0.8, 1.2]
                "latency_steps": [1, 2]},  # partly outside [0, 1]
    "joint_pos_noise": 0.005, "joint_vel_noise": 0.02}

# Per hardware type: its task and the reality gap its units are drawn from.
UNIT_SETUPS: dict[str, dict[str, Any]] = {
    "cartpole": {"task": "cartpole_swingup", "gap": CARTPOLE_GAP},
    "cartpole_long": {"task": "cartpole_swingup", "gap": CARTPOLE_GAP},
    "cartpole_pivot": {"task": "cartpole_swingup", "gap": CARTPOLE_GAP},
    "arm2_planar": {"task": "reach", "gap": ARM_GAP},
}
