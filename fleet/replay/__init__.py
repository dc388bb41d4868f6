"""Replay over the fleet's stored experience, as Ape-X and Reverb do it (config, sum tree, rate limiter,
table, sequences of T steps, readers of the hub's store and of its Parquet tier)."""
