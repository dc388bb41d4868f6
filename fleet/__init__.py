"""The fleet hub: wire protocol, durable experience storage, registry and the fleet learner (to come)."""
