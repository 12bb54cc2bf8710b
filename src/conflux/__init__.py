"""Conflux: the write path for infrastructure configuration.

Many actors submit typed operations; the engine merges them deterministically, field by field,
with CRDT rules, logs each with its actor and intent, and projects resolved state to git.
"""

__version__ = "0.1.0"
