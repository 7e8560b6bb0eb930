"""The live dashboard: a local web app over the database the runs write (`evoforge ui`, or mounted on the
`langgraph dev` server through langgraph.json's `http.app`). It keeps no store of its own: every page reads
node memory, cognition and the checkpoints through the same functions as the CLI."""
