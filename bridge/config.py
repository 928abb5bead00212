"""The head unit's configuration: a TOML file, every key optional.

Default path: ``/etc/ble-bridge/config.toml`` (``$BRIDGE_CONFIG`` or ``--config``
elsewhere). A missing default file means every default; a file named on the command
line must exist. Unknown keys and wrong types are errors that name the key: a typo
never silently falls back to a default. docs/CONFIG.md lists every key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/ble-bridge/config.toml")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def default_data_dir() -> Path:
    """systemd's StateDirectory (the service), /var/lib/ble-bridge for root, else the
    user's data folder."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    if os.geteuid() == 0:
        return Path("/var/lib/ble-bridge")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ble-bridge"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class RadioConfig:
    backend: str = "bluez"  # "bluez" (bleak on BlueZ) or "bumble" (a dongle driven by Bumble)
    adapter: str = ""  # BlueZ adapter, e.g. "hci1" ("" = BlueZ's default)
    transport: str = ""  # Bumble transport when backend = "bumble", e.g. "usb:0"
    connect_timeout: float = 10.0  # seconds per connection attempt
    # "central": scan for phones that advertise and connect to them (protocol v0's way);
    # "peripheral": advertise and serve the GATT service, phones connect (v1)
    roles: tuple[str, ...] = ("central", "peripheral")
    # iPhones with no app: bond at the link layer and read their notifications and music
    # (ANCS, AMS; docs/IPHONE.md). Needs the peripheral role; on a Bumble radio only yet
    iphones_without_app: bool = True


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = True  # the local WebSocket API and the screen's web page
    host: str = "127.0.0.1"  # loopback only: 127.0.0.1, ::1 or localhost
    port: int = 8765
    token_file: str = ""  # "" = data_dir/api-token (created owner-only)
    token_group: str = ""  # a group that may read the token (the screen's user); needs token_file


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"  # debug, info, warning, error


@dataclass(frozen=True)
class DebugConfig:
    capture_dir: str = ""  # record every link as pcapng in this folder ("" = off)
    keylog: str = ""  # append session keys to this file ("" = off; insecure)


@dataclass(frozen=True)
class SceneConfig:
    """A button of the screen's home card: a tap publishes ``payload`` on ``topic``; the
    home's answer on ``reply_topic`` (if any) is shown."""

    id: str = ""
    label: str = ""
    topic: str = ""
    payload: str = "ON"
    reply_topic: str = ""


@dataclass(frozen=True)
class HomeConfig:
    """The optional home link: MQTT with Home Assistant discovery (docs/HOME.md)."""

    enabled: bool = False
    host: str = ""
    port: int = 1883
    client_id: str = ""  # "" = ble-bridge-<the car's node id>
    username: str = ""
    password_file: str = ""  # the broker password, in a file only the service reads
    tls: bool = False
    ca_file: str = ""  # the CA that signed the broker's certificate ("" = the system's)
    prefix: str = "ble-bridge"  # the car's topics: <prefix>/status, <prefix>/media, ...
    discovery_prefix: str = "homeassistant"
    share_presence: bool = True  # which paired devices are in the car (by display name)
    share_media: bool = True  # now playing: title, artist, source device
    share_navigation: bool = True  # destination, remaining distance and time, arriving
    share_messages: bool = True  # counts of unread messages (never their text)
    share_message_text: bool = False  # also the newest message's sender and text
    arriving_minutes: float = 3.0  # "arriving" once the ETA is this close
    scenes: tuple[SceneConfig, ...] = ()


@dataclass(frozen=True)
class Config:
    name: str = "Head unit"  # what phones show
    data_dir: str = ""  # trust store and message stores ("" = default_data_dir())
    pairing: bool = False  # accept new phones at start (each still needs the code confirmed)
    radio: RadioConfig = field(default_factory=RadioConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    log: LogConfig = field(default_factory=LogConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    home: HomeConfig = field(default_factory=HomeConfig)
    path: Path | None = None  # the file it came from (not a key)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()

    @property
    def token_path(self) -> Path:
        return Path(self.api.token_file) if self.api.token_file else self.data_path / "api-token"


SECTIONS: dict[str, type[Any]] = {
    "radio": RadioConfig, "api": ApiConfig, "log": LogConfig, "debug": DebugConfig,
    "home": HomeConfig,
}  # fmt: skip
CHOICES = {
    ("radio", "backend"): {"bluez", "bumble"},
    ("radio", "roles"): {"central", "peripheral"},
    ("log", "level"): {"debug", "info", "warning", "error"},
}


def _build(cls: type[Any], table: dict[str, Any], where: str, origin: str) -> Any:
    known = {f.name: f for f in fields(cls) if f.name != "path"}
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(f"{origin}: unknown key {name!r}")
        if key in SECTIONS and not where:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {name!r} must be a table ([{name}])")
            values[key] = _build(SECTIONS[key], value, key, origin)
            continue
        default = getattr(cls(), key)
        if (where, key) == ("home", "scenes"):
            values[key] = _scenes(value, origin)
            continue
        if isinstance(default, tuple):  # a list of choices
            allowed = CHOICES.get((where, key), set())
            if (
                not isinstance(value, list)
                or not value
                or any(v not in allowed for v in value)
                or len(set(value)) != len(value)
            ):
                raise ConfigError(
                    f"{origin}: {name!r} must be a list of one or more of "
                    f"{', '.join(sorted(allowed))}, not {value!r}"
                )
            values[key] = tuple(value)
            continue
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, (int, float) if isinstance(default, float) else type(default)
        ):
            kind = {
                bool: "true or false",
                str: "a string",
                float: "a number",
                int: "a whole number",
            }[type(default)]
            raise ConfigError(f"{origin}: {name!r} must be {kind}, not {value!r}")
        choices = CHOICES.get((where, key))
        if choices is not None and value not in choices:
            raise ConfigError(f"{origin}: {name!r} must be one of {', '.join(sorted(choices))}")
        values[key] = float(value) if isinstance(default, float) else value
    return cls(**values)


def _scenes(value: Any, origin: str) -> tuple[SceneConfig, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{origin}: 'home.scenes' must be a list of tables ([[home.scenes]])")
    scenes = []
    for i, table in enumerate(value):
        scene: SceneConfig = _build(SceneConfig, table, f"home.scenes[{i}]", origin)
        for name in ("id", "label", "topic"):
            if not getattr(scene, name):
                raise ConfigError(f"{origin}: 'home.scenes[{i}].{name}' is missing")
        if any(c in scene.topic for c in "+#") or any(c in scene.reply_topic for c in "+#"):
            raise ConfigError(f"{origin}: 'home.scenes[{i}]': topics may not hold + or #")
        scenes.append(scene)
    ids = [s.id for s in scenes]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{origin}: two 'home.scenes' have one id")
    return tuple(scenes)


def check_home(home: HomeConfig, origin: str) -> None:
    """The home link's settings make sense together (ConfigError naming the key)."""
    if not home.enabled:
        return
    if not home.host:
        raise ConfigError(f"{origin}: 'home.enabled' needs 'home.host' (the MQTT broker)")
    if not 0 < home.port <= 65535:
        raise ConfigError(f"{origin}: 'home.port' must be 1 to 65535")
    if home.password_file and not home.username:
        raise ConfigError(f"{origin}: 'home.password_file' needs 'home.username'")
    if home.ca_file and not home.tls:
        raise ConfigError(f"{origin}: 'home.ca_file' needs 'home.tls = true'")
    if not home.prefix or any(c in home.prefix for c in "+#"):
        raise ConfigError(f"{origin}: 'home.prefix' must be a topic without + or #")
    if home.arriving_minutes <= 0:
        raise ConfigError(f"{origin}: 'home.arriving_minutes' must be more than 0")


def load_config(path: Path | None = None) -> Config:
    """The configuration from ``path``, or from the default place if there is one."""
    explicit = path is not None or "BRIDGE_CONFIG" in os.environ
    path = path or Path(os.environ.get("BRIDGE_CONFIG", str(DEFAULT_PATH)))
    try:
        text = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such configuration file") from None
        return Config()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    config: Config = _build(Config, table, "", str(path))
    if config.radio.backend == "bumble" and not config.radio.transport:
        raise ConfigError(f"{path}: radio.backend = 'bumble' needs radio.transport (e.g. usb:0)")
    if config.radio.connect_timeout <= 0:
        raise ConfigError(f"{path}: 'radio.connect_timeout' must be more than 0")
    if config.api.host not in LOOPBACK:
        raise ConfigError(f"{path}: 'api.host' must be a loopback address (the API is local only)")
    if not 0 <= config.api.port <= 65535:
        raise ConfigError(f"{path}: 'api.port' must be 0 to 65535")
    if config.api.token_group and not config.api.token_file:
        raise ConfigError(
            f"{path}: 'api.token_group' needs 'api.token_file' outside the data folder (which "
            "only the service's user may enter), e.g. /run/ble-bridge/api-token"
        )
    check_home(config.home, str(path))
    return dataclasses.replace(config, path=path)
