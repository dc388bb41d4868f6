"""A reading the safety layer cannot act on ends the episode: no later step records an action the robot never took."""

from __future__ import annotations

import numpy as np
import pytest

from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from robot_agent.spool import Spool
from sim.standin import MuJoCoStandInDriver

NAN_AT_READ = 40  # the stand-in's encoder fails at this reading of each episode


class NanEncoderStandIn(MuJoCoStandInDriver):
    """A stand-in unit whose first joint encoder reads NaN once, ``NAN_AT_READ`` readings into each episode."""

    def home(self):
        self.reads_since_home = 0
        return super().home()

    def read_state(self):
        ts = super().read_state()
        self.reads_since_home = getattr(self, "reads_since_home", 0) + 1
        if self.reads_since_home == NAN_AT_READ:
            ts.state.joint_pos[0, 0] = np.nan
        return ts

    def send_command(self, command):
        assert np.isfinite(command).all(), command
        return super().send_command(command)


@pytest.mark.timeout(120)
def test_a_nan_reading_damps_the_robot_and_ends_the_episode(agent_cfg):
    agent_cfg.driver.name = f"{__name__}:NanEncoderStandIn"
    agent_cfg.max_episodes = 2
    status = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": 2.0})).run()
    assert status["damped_episodes"] == 2
    assert status["safety"].get("nonfinite_reading", 0) == 2
    with Spool(f"{agent_cfg.state_dir}/spool") as spool:
        chunks = [spool.read(ref) for ref in spool.pending()]
    lengths = {}
    for c in chunks:
        lengths[c.header["episode"]] = lengths.get(c.header["episode"], 0) + c.header["steps"]
    # each episode ends at the last reading the robot acted on, not at its 100-step time limit: the transition
    # into the NaN reading is dropped (its end state is unknown), and nothing recorded holds a NaN
    assert sorted(lengths.values()) == [NAN_AT_READ - 2, NAN_AT_READ - 2], lengths
    assert all(np.isfinite(a).all() for c in chunks for a in c.arrays.values())
    last = [c for c in chunks if c.header.get("episode_end")]
    assert len(last) == 2 and all(c.arrays["time_outs"][-1] == 1.0 and c.arrays["dones"][-1] == 1.0 for c in last)
    assert np.isfinite(status["mean_return_last_20"])


@pytest.mark.timeout(120)
def test_a_spool_that_keeps_failing_to_write_stops_the_agent_with_a_fault(agent_cfg, monkeypatch):
    import errno

    from robot_agent.spool import Spool as SpoolClass

    def disk_full(self, header, arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SpoolClass, "append", disk_full)  # the device fills up as the agent starts
    agent_cfg.max_episodes = 10
    agent_cfg.spool.chunk_steps = 10
    status = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": 2.0})).run()
    assert "cannot be written" in status["fault"] and "No space left" in status["fault"]
    assert status["episodes"] == 1  # no second episode ran whose experience could not be stored


@pytest.mark.timeout(120)
def test_a_crash_is_a_fault_in_the_final_status_not_a_clean_stop(agent_cfg):
    agent_cfg.driver.name = f"{__name__}:CrashingStandIn"
    agent = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": 2.0}))
    with pytest.raises(RuntimeError, match="unit lost"):
        agent.run()
    assert agent.status()["fault"].startswith("crashed: RuntimeError: unit lost")


class CrashingStandIn(MuJoCoStandInDriver):
    """A stand-in whose link dies at its second homing."""

    def home(self):
        self.homed = getattr(self, "homed", 0) + 1
        if self.homed > 1:
            raise RuntimeError("unit lost")
        return super().home()
