"""What the agents run on, below them and the graph: the state a round carries (state.py) and the run-time
services every node looks up (services.py: the database and its stores, the sandbox, the embedder, the chat
models, the task). The agents import this package, the graph wires the agents; nothing here imports either."""
