"""tollgate: an LLM gateway."""
