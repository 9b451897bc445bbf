"""What a request cost, from the configured price table (US dollars per million tokens, and per image)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import Price


def price_for(prices: Mapping[str, Price], provider_model: str, requested_model: str) -> Price | None:
    """The price of a model: under the provider's name for it first, then under the name the client asked for."""
    return prices.get(provider_model) or prices.get(requested_model)


def cost_usd(price: Price | None, input_tokens: int, output_tokens: int, cached_tokens: int, images: int = 0) -> float:
    """Input tokens not served from cache at the input price, cached ones at the cached price, output at its own;
    generated images at their price each."""
    if price is None:
        return 0.0
    cached = min(cached_tokens, input_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    tokens = ((input_tokens - cached) * price.input + cached * cached_price + output_tokens * price.output) / 1e6
    return tokens + images * price.per_image
