"""Routing on the prompt itself: what a request's prompt uses and says (`prompt`), the nearest-example index
(`nearest`), and the rules that pick a model from it: by embedding similarity (`semantic`) or by asking an external
classifier over gRPC (`classifier`). The route table (gateway.engine.routes) runs them; see docs/routing.md."""
