"""The episode rule's settings, checked together (each option alone is checked by its table row)."""

from __future__ import annotations

from dataclasses import dataclass

from ecg_anomaly.base.errors import ConfigError

MAX_WINDOW = 256  # beats; a window of n beats keeps at most k - 1 <= n - 1 pending beats per source


@dataclass(frozen=True, slots=True)
class EpisodeRules:
    open_anomalies: int  # k: an episode opens when k of the last n beats are anomalous
    window: int  # n
    close_normal: int  # m: it closes after m consecutive normal beats
    silence_ms: int  # ... or when the partition's beat time passed the source's last beat by this much
    update_ms: int  # an open episode's news is reported at most this often (beat time); 0 = never

    def __post_init__(self) -> None:
        if not 1 <= self.open_anomalies <= self.window <= MAX_WINDOW:
            raise ConfigError(
                f"--episode-open-anomalies {self.open_anomalies} of --episode-window {self.window}: "
                f"need 1 <= anomalies <= window <= {MAX_WINDOW}"
            )

    def describe(self) -> str:
        return (
            f"opens at {self.open_anomalies} of {self.window} beats anomalous, closes after "
            f"{self.close_normal} normal beats or {self.silence_ms / 1000:g} s of silence"
        )
