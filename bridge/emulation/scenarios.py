"""Scripted phone scenarios for the emulator and the demo, in Android and iOS flavours.

A scenario drives a :class:`~bridge.emulation.phone_app.PhoneApp` on trio time: a drive with a route
and maneuvers counting down, a playlist playing with album art, messages arriving.
Flavours differ where real phones do: platform, apps, model, link profile.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import trio

from bridge.emulation.phone_app import AppShortcut, PhoneApp
from bridge.wire import messages as m


@dataclass(frozen=True)
class Flavour:
    platform: str
    name: str
    model: str
    maps_app: str
    music_app: str
    chat_apps: tuple[str, str]
    link_profile: str


FLAVOURS = {
    "android": Flavour(
        "android", "Pixel 9", "Pixel 9 Pro", "Google Maps", "Spotify", ("WhatsApp", "Messages"),
        "android",
    ),
    "ios": Flavour(
        "ios", "iPhone 16", "iPhone17,3", "Apple Maps", "Apple Music", ("iMessage", "WhatsApp"),
        "ios",
    ),
    # a tablet: the passenger's iPad, on iOS's link profile
    "ipad": Flavour(
        "ios", "iPad", "iPad14,8", "Apple Maps", "Apple Music", ("iMessage", "FaceTime"), "ios",
    ),
}  # fmt: skip

L, S, R = m.LaneDirection.LEFT, m.LaneDirection.STRAIGHT, m.LaneDirection.RIGHT

#: (maneuver, metres to it, road, roundabout exit, lanes)
ROUTE: list[tuple[m.ManeuverType, int, str, int | None, list[m.Lane] | None]] = [
    (m.ManeuverType.DEPART, 400, "Rue de Rivoli", None, None),
    (m.ManeuverType.TURN_RIGHT, 300, "Main St", None, [m.Lane([L], False), m.Lane([S, R], True)]),
    (m.ManeuverType.ROUNDABOUT_ENTER_AND_EXIT, 600, "Avenue Foch", 2, None),
    (m.ManeuverType.OFF_RAMP_RIGHT, 1500, "D920", None, [m.Lane([S], False), m.Lane([R], True)]),
    (m.ManeuverType.TURN_LEFT, 150, "Elm Rd", None, None),
    (m.ManeuverType.DESTINATION_RIGHT, 80, "Elm Rd 42", None, None),
]

PLAYLIST = [
    m.NowPlaying("Midnight City", "M83", "Hurry Up, We're Dreaming", 243_000),
    m.NowPlaying("Intro", "The xx", "xx", 127_000),
    m.NowPlaying("Teardrop", "Massive Attack", "Mezzanine", 330_000),
]


def _png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """An RGB PNG (no filter, zlib level 1): the smallest honest image encoder."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")
    )  # fmt: skip


def _album_cover(x: int, y: int) -> tuple[int, int, int]:
    """A record sleeve: a dusk gradient, a vinyl disc with grooves, a grain that keeps
    the picture some 40 KB (album art crosses the link in several bulk chunks)."""
    grain = ((x * 7919 + y * 104729) ^ (x * y * 31)) % 23
    dx, dy = x - 80, y - 84
    r = (dx * dx + dy * dy) ** 0.5
    if r < 14:
        return 230, 120 + grain, 40  # the label
    if r < 58:
        groove = 22 + (8 if int(r) % 3 == 0 else 0) + grain // 3
        return groove, groove, groove + 6
    return 40 + x // 2 + grain, 20 + y // 3 + grain, 90 + (x + y) // 4 + grain


ART = _png(160, 160, _album_cover)  # the demo's album art: a real picture


def _roundabout(x: int, y: int) -> tuple[int, int, int]:
    """A roundabout seen from above, the way in at the bottom and the second exit (right)
    marked: the maneuver image the demo's phone sends for its roundabout."""
    dx, dy = x - 48, y - 44
    r = (dx * dx + dy * dy) ** 0.5
    road, marked, ground = (90, 96, 106), (76, 201, 240), (23, 26, 32)
    if 18 <= r <= 30:
        # the ring: marked from the way in (bottom) counterclockwise to the right exit
        return marked if (dx >= 0 and dy >= -6) or (abs(dx) <= 8 and dy > 0) else road
    if 40 <= x <= 56 and y > 70:
        return marked  # the way in
    if x >= 74 and 36 <= y <= 52:
        return marked  # the exit taken
    if (40 <= x <= 56 and y < 18) or (x < 22 and 36 <= y <= 52):
        return road  # the other exits
    return ground


ARROW = _png(96, 96, _roundabout)  # the maneuver image: a real picture too


def display(metres: int) -> tuple[str, m.DistanceUnit]:
    if metres >= 1000:
        return f"{metres / 1000:.1f}", m.DistanceUnit.KILOMETERS
    return str(metres), m.DistanceUnit.METERS


async def drive(phone: PhoneApp, flavour: Flavour, *, step: float = 2.0) -> None:
    """A route: each maneuver announced, then counted down once, then the arrival."""
    total = sum(d for _, d, _, _, _ in ROUTE)
    await phone.set_route(
        m.RouteStatus(m.RouteState.ACTIVE, "Elm Rd 42", phone.clock_ms() + 420_000, total, 420)
    )
    done = 0
    for i, (kind, distance, road, exit_number, lanes) in enumerate(ROUTE):
        for fraction in (1.0, 0.3):
            metres = int(distance * fraction)
            shown, unit = display(metres)
            maneuver = m.Maneuver(
                kind, metres, shown, unit, road, roundabout_exit=exit_number,
                rotation=m.Rotation.COUNTERCLOCKWISE if exit_number else None, lanes=lanes,
            )  # fmt: skip
            image = ARROW if (i == 2 and fraction == 1.0) else None
            await phone.maneuver(maneuver, image=image)
            await trio.sleep(step / 2)
        done += distance
        remaining = total - done
        eta = phone.clock_ms() + remaining * 700
        await phone.set_route(
            m.RouteStatus(m.RouteState.ACTIVE, "Elm Rd 42", eta, remaining, remaining * 7 // 10)
        )
    await phone.set_route(m.RouteStatus(m.RouteState.ARRIVED, "Elm Rd 42", remaining_m=0))


async def playlist(phone: PhoneApp, flavour: Flavour) -> None:
    tracks = [_with_app(t, flavour.music_app) for t in PLAYLIST]
    await phone.play(tracks, art=ART)


def _with_app(track: m.NowPlaying, app: str) -> m.NowPlaying:
    return m.NowPlaying(track.title, track.artist, track.album, track.duration_ms, source_app=app)


def inbox(flavour: Flavour, now_ms: int) -> list[tuple[float, m.Notification]]:
    chat, other = flavour.chat_apps
    reply = m.Action("reply", "Reply", m.ActionKind.REPLY)
    read = m.Action("read", "Mark as read", m.ActionKind.MARK_READ)
    return [
        (1.5, m.Notification(
            "msg-1", chat, m.Category.MESSAGE, "Running 10 minutes late", now_ms, "Anna",
            thread="anna", actions=[reply, read], canned_replies=["On my way", "No problem"],
        )),
        (6.0, m.Notification(
            "msg-2", other, m.Category.MESSAGE, "Parking is on level -2", now_ms, "Ben",
            thread="ben", actions=[reply, read],
        )),
        (9.0, m.Notification(
            "call-1", "Phone", m.Category.MISSED_CALL, "Missed call", now_ms, "Mum",
            actions=[m.Action("call", "Call back", m.ActionKind.CALL_BACK)],
        )),
    ]  # fmt: skip


DAILY_MIX = [
    m.NowPlaying("Holocene", "Bon Iver", "Bon Iver, Bon Iver", 337_000),
    m.NowPlaying("Night Owl", "Galimatias", "Renaissance", 215_000),
    m.NowPlaying("Bloodstream", "Stateless", "Matilda", 312_000),
]


def _icon(colour: tuple[int, int, int], shape: Callable[[int, int], bool]) -> bytes:
    """A 48x48 launcher icon: a white shape on a coloured disc."""

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        dx, dy = x - 23.5, y - 23.5
        if dx * dx + dy * dy > 23 * 23:
            return 23, 26, 32  # the launcher's tile colour around the disc
        return (245, 245, 245) if shape(x, y) else colour

    return _png(48, 48, pixel)


ICONS = {
    # an arrow pointing up: a triangle over a stem
    "navigation": _icon((26, 115, 232), lambda x, y: (10 <= y <= 24 and abs(x - 24) <= (y - 10))
                        or (24 < y <= 38 and abs(x - 24) <= 4)),
    # a note: a stem and a head
    "media": _icon((29, 185, 84), lambda x, y: (28 <= x <= 31 and 10 <= y <= 32)
                   or (x - 24) ** 2 + (y - 33) ** 2 <= 36),
    # a handset: two dots joined by a bar
    "communication": _icon((0, 150, 136), lambda x, y: (x - 15) ** 2 + (y - 30) ** 2 <= 30
                           or (x - 33) ** 2 + (y - 18) ** 2 <= 30
                           or (abs((x - 15) - (30 - y)) <= 3 and 15 <= x <= 33)),
    # a house: a roof over a square
    "home": _icon((251, 140, 0), lambda x, y: (10 <= y <= 22 and abs(x - 24) <= (y - 10))
                  or (22 < y <= 36 and 14 <= x <= 34)),
}  # fmt: skip

HOME = "Home, 12 Birch Lane"


def shortcuts(phone: PhoneApp, flavour: Flavour) -> list[AppShortcut]:
    """What the emulated phone offers on the car's launcher, each doing what it says: a
    route home, a playlist, a call, and a smart-home action that needs the phone unlocked."""

    async def navigate_home() -> str | None:
        if not phone.guidance_available:
            return "navigation is not available"
        await phone.set_route(
            m.RouteStatus(m.RouteState.ACTIVE, HOME, phone.clock_ms() + 960_000, 12_400, 960)
        )
        await phone.maneuver(m.Maneuver(
            m.ManeuverType.DEPART, 250, "250", m.DistanceUnit.METERS, "Rue de Rivoli",
        ))  # fmt: skip
        return None

    async def daily_mix() -> str | None:
        await phone.play([_with_app(t, flavour.music_app) for t in DAILY_MIX], art=ART)
        return None

    async def call_mum() -> str | None:
        await phone.place_call("Mum")
        return None

    async def open_garage() -> str | None:
        await phone.notify(m.Notification(
            f"garage-{len(phone.launches) + 1}", "Home", m.Category.OTHER,
            "The garage door is opening", phone.clock_ms(), title="Garage",
        ))  # fmt: skip
        return None

    kind = m.ShortcutKind
    return [
        AppShortcut("nav-home", "Navigate home", kind.NAVIGATION, navigate_home,
                    icon=ICONS["navigation"]),
        AppShortcut("daily-mix", "Play Daily Mix", kind.MEDIA, daily_mix, icon=ICONS["media"]),
        AppShortcut("call-mum", "Call Mum", kind.COMMUNICATION, call_mum,
                    icon=ICONS["communication"]),
        AppShortcut("garage", "Open the garage", kind.HOME, open_garage, needs_unlock=True,
                    icon=ICONS["home"]),
    ]  # fmt: skip


async def launcher(phone: PhoneApp, flavour: Flavour) -> None:
    """Offer the phone's shortcuts on the car's launcher."""
    await phone.offer_shortcuts(shortcuts(phone, flavour))


async def messages(phone: PhoneApp, flavour: Flavour) -> None:
    start = trio.current_time()
    for at, note in inbox(flavour, phone.clock_ms()):
        await trio.sleep_until(start + at)
        await phone.notify(note)
