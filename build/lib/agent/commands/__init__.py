"""The command lines: one module per console command (`kungfu-train` is `agent.commands.train`), each a
`main(argv) -> exit code` that parses arguments and makes one call into the package. Each also runs as
`python -m agent.commands.<name>`."""
