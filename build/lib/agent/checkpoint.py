"""The public checkpoint API (`load_agent`), kept at this name for users' scripts; the bookkeeping of
checkpoints lives in `agent.runs.checkpoint`."""

from agent.runs.checkpoint import CheckpointError, load_agent, load_checkpoint

__all__ = ["CheckpointError", "load_agent", "load_checkpoint"]
