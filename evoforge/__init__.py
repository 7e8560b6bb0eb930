"""EvoForge: an autonomous research loop (learn → design → experiment → analyze) on LangGraph."""

__version__ = "0.1.0"
