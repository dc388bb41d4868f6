"""fleet-demo: the whole loop in one command (sim pretraining, hub, robot agents, a fleet round, faults, report)."""
