"""The random streams of one robot, drawn from its config's ``seed`` and its ``robot_id``.

Each episode's goal draws and exploration noise come from its own stream, keyed by the episode's durable number
(the spool never hands a number out twice, across restarts too). Seeded once per process, a restarted agent would
replay the goals and noise of its last start episode by episode: the benchmark restarts its units twice a round,
and a robot rebooted every night would explore the same perturbations in the same order every day. (Numbers
start afresh only with a new spool: a re-created state directory, or an unreadable ``ids.json``.) Keyed by the
robot too, robots deployed with the same config (the default ``seed`` 0) do not share draws: not their noise,
and not their uplinks' reconnect jitter, which would otherwise send a fleet back to a restarted hub in lockstep.
The same (seed, robot, episode) still draws the same stream: runs are reproducible.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

# the named streams a robot draws apart from its episodes (fixed words: a stream's name is part of its key)
LEARNER, UPLINK = "learner", "uplink"


def _word(text: str) -> int:
    """A 32-bit key for ``text`` that is the same in every process (``hash`` of a str is salted per process)."""
    return zlib.crc32(text.encode())


def _id_words(robot_id: str) -> list[int]:
    """The robot's id as 8 32-bit words (its sha256): two robots share streams only if their ids are equal."""
    return np.frombuffer(hashlib.sha256(robot_id.encode()).digest(), dtype=np.uint32).tolist()


class RobotSeeds:
    """Independent, reproducible random streams of one robot (module docstring)."""

    def __init__(self, seed: int, robot_id: str):
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        self._key = [int(seed), *_id_words(robot_id)]

    def episode(self, number: int) -> tuple[np.random.Generator, np.random.Generator]:
        """The goal draws and the exploration noise of episode ``number`` (two independent generators)."""
        if number < 0:
            raise ValueError(f"episode number must be >= 0, got {number}")
        goals, noise = np.random.SeedSequence([*self._key, 0, int(number)]).spawn(2)
        return np.random.default_rng(goals), np.random.default_rng(noise)

    def stream(self, name: str) -> int:
        """An integer seed for the named stream (``LEARNER``, ``UPLINK``), apart from every episode's."""
        return int(np.random.SeedSequence([*self._key, 1, _word(name)]).generate_state(1)[0])
