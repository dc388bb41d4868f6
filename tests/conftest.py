"""Shared test settings: W&B never touches the network. (MuJoCo's GL back-end is the package's own choice.)"""

import os

os.environ.setdefault("WANDB_MODE", "disabled")

# Every shipped (task, hardware) pair: the matrix the sim tests run over.
TASK_HARDWARE = [
    ("cartpole_swingup", "cartpole"),
    ("cartpole_swingup", "cartpole_long"),
    ("cartpole_swingup", "cartpole_pivot"),
    ("reach", "arm2_planar"),
    ("reach", "arm3_planar"),
    ("reach", "arm7"),
    ("locomotion", "go2_like"),
    ("locomotion", "go1_like"),
    ("ant_run", "gym_ant"),
]
