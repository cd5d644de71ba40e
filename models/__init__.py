"""Model builders: plain functions that build into the current graph."""
