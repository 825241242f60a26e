"""Watching an agent: evaluation under the protocol, gameplay videos and the curves of runs."""
