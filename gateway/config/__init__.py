"""Configuration: typed, immutable, validated with the path of each bad field."""

from gateway.config.fields import ConfigError, parse_duration
from gateway.config.load import default_config_text, load_config, parse_config
from gateway.config.model import (
    AuthConfig,
    BackendConfig,
    CacheConfig,
    GatewayConfig,
    LimitRule,
    LimitsConfig,
    ListenConfig,
    ModelCacheConfig,
    ModelConfig,
    Price,
    ResponsesConfig,
    Secret,
    SemanticCacheConfig,
    ServerConfig,
    StatsConfig,
    TargetConfig,
)

__all__ = [
    "AuthConfig",
    "BackendConfig",
    "CacheConfig",
    "ConfigError",
    "GatewayConfig",
    "LimitRule",
    "LimitsConfig",
    "ListenConfig",
    "ModelCacheConfig",
    "ModelConfig",
    "Price",
    "ResponsesConfig",
    "Secret",
    "SemanticCacheConfig",
    "ServerConfig",
    "StatsConfig",
    "TargetConfig",
    "default_config_text",
    "load_config",
    "parse_config",
    "parse_duration",
]
