"""The configuration the API reads at each request: the one of the moment (a
reload — SIGHUP — replaces it whole) and the judging rules drawn from it."""

from __future__ import annotations

from bridge.api.judging import Rules
from bridge.config import Config


class Settings:
    def __init__(self, config: Config) -> None:
        self.reload(config)

    def reload(self, config: Config) -> None:
        self.config = config
        self.rules = Rules.from_config(config)

    @property
    def region(self) -> str | None:
        return self.config.api.default_region
