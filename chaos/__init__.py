"""kubelock's fault-injection suite (`make chaos`): agents contend for locks while faults are injected,
every acquire, hold, release and protected write is recorded, and a pure checker judges the history.

Modules: `history` (the checker), `store` (the fenced protected store), `agents` (agent processes),
`monitor` (what the API server shows), `faults` (operators, control-plane restarts, connection cuts),
`scenarios` (one per fault), `badinput` (the hostile-input corpus), `soak` and `run` (the entry point).
"""
