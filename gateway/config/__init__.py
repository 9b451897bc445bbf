"""Configuration: typed, immutable, validated with the path of each bad field."""

from gateway.config.load import ConfigError, default_config_text, load_config, parse_config, parse_duration
from gateway.config.model import (
    BackendConfig,
    GatewayConfig,
    ListenConfig,
    ModelConfig,
    Secret,
    ServerConfig,
    TargetConfig,
)

__all__ = [
    "BackendConfig",
    "ConfigError",
    "GatewayConfig",
    "ListenConfig",
    "ModelConfig",
    "Secret",
    "ServerConfig",
    "TargetConfig",
    "default_config_text",
    "load_config",
    "parse_config",
    "parse_duration",
]
