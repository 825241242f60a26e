"""Research tools, apart from the agent: the reconstruction report, the knife report and the channel
diagnostics. Nothing under agent/ outside this package imports it."""
