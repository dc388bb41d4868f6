"""The daemon on each robot computer: control loop, safety, spool and on-robot adapters (to come)."""
