"""What a cached answer is filed under: who may share it (the scope) and a hash of everything that changes it.

The key covers the model as configured (its name, targets and fallbacks, and how each backend they name is set up:
provider, URL, options, request shaping), and every request field that can change the answer:
messages, tools, tool_choice, sampling parameters, response_format, n, stop, seed, logprobs, the passthrough JSON.
It leaves out what cannot: the caller's `user` tag, `metadata`, `store` and the stream options (the stream flag is not
in the params at all). The params are serialized deterministically after clearing those fields, and hashed.
"""

from __future__ import annotations

import hashlib

from gateway.auth.principal import Principal
from gateway.config import GatewayConfig, ModelConfig
from tollgate.gateway.v1 import gateway_pb2 as pb

_SCOPES = ("key", "user", "team")


def scope_of(principal: Principal | None, wanted: str) -> str:
    """The partition an answer may be shared within, e.g. `team:ml`; empty when the caller has no id at all.

    `wanted` is the model's configured scope; empty means the narrowest the auth decision allows. A wanted scope the
    caller has no value for (scope team, a key without a team) narrows to the next one that has a value, never
    widens: otherwise every team-less key would share one `team:` partition. A caller with no key id, user or team
    is anonymous under `auth: none` (then the cache shares globally), and otherwise cannot be kept apart (not cached).
    """
    if wanted == "global":
        return "global"
    if principal is None:
        return ""
    values = {"key": principal.key_id, "user": principal.user, "team": principal.team}
    order = reversed(_SCOPES[: _SCOPES.index(wanted) + 1]) if wanted in values else _SCOPES
    for name in order:
        if values[name]:
            return f"{name}:{values[name]}"
    return ""


def model_fingerprint(model: ModelConfig, config: GatewayConfig | None = None) -> bytes:
    """The configured model: renaming a target's model or moving it to another backend starts a fresh cache; and,
    given the whole configuration, so does changing a fallback's targets or a backend's provider, URL, options or
    request shaping (each may change the answers)."""

    def targets(m: ModelConfig) -> str:
        return ";".join(f"{t.backend}/{t.model}" for t in m.targets)

    parts = [f"{model.name}|{targets(model)}|{','.join(model.fallback)}"]
    if config is not None:
        models = {m.name: m for m in config.models}
        chain = [model, *(models[name] for name in model.fallback if name in models)]
        parts += [targets(m) for m in chain[1:]]
        backends = {b.name: b for b in config.backends}
        for name in sorted({t.backend for m in chain for t in m.targets} & backends.keys()):
            b = backends[name]
            # The shaping's values, not where the backend sits in the file: moving it must not empty the cache.
            shaping = (dict(b.shaping.defaults), dict(b.shaping.overrides), b.shaping.remove)
            parts.append(repr((b.name, b.provider, b.base_url, sorted(b.options.items()), shaping)))
    return "\n".join(parts).encode()


def canonical_params(params: pb.ChatCompletionParams) -> bytes:
    """The request as the bytes that decide its answer: a copy without the ignored fields, serialized
    deterministically (map fields such as logit_bias in key order)."""
    copy = pb.ChatCompletionParams()
    copy.CopyFrom(params)
    # Fields that never change what the model answers.
    copy.ClearField("user")
    copy.ClearField("metadata")
    copy.ClearField("store")
    copy.ClearField("stream_options")
    return copy.SerializeToString(deterministic=True)


def cache_key(scope: str, fingerprint: bytes, params: pb.ChatCompletionParams) -> str:
    """The exact-match key: a hash of the scope, the configured model (its `model_fingerprint`) and the canonical
    request."""
    digest = hashlib.blake2b(digest_size=20)
    for part in (scope.encode(), fingerprint, canonical_params(params)):
        digest.update(len(part).to_bytes(8, "little"))  # length-prefixed: no two splits hash alike
        digest.update(part)
    return digest.hexdigest()
