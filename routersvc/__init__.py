"""The reference classifier server (`tollgate.router.v1.RouterService`): the nearest-example method of semantic
route rules, run as a service a `classifier:` rule asks. Examples from a YAML file, embedded once at start through any
OpenAI-compatible embeddings endpoint (the gateway itself, for one)."""
