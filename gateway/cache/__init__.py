"""The response cache: exact-match (in-process LRU in front of Redis) and semantic, per model, opt-in."""
