"""The conformance cases: each checks one rule of docs/PROTOCOL.md against a peer and
names the section. A case passes, fails with the evidence, or is skipped with why; cases
run in their order on one peer, whose state (paired or not) they share.

Against a phone the tool is a head unit (case 3 pairs them; later cases reconnect as
that head unit); against a head unit the tool is a phone (case 24 pairs them). The
tool's side is this project's own (a :class:`~bridge.session.PeerSession` with the real
handshake), or raw segments where a case sends what no correct peer would. Each case
says which peers it checks (``peers``).
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from bridge.connection import ConnectionClosed, ConnectionConfig, HelloReceived
from bridge.session import LinkDown, PeerSession, SessionEvent
from bridge.wire import gatt as layout
from bridge.wire import messages as m
from bridge.wire.channels import Channel, ControlType
from bridge.wire.codec import Message, encode
from bridge.wire.errors import ErrorCode, ProtocolError
from bridge.wire.frame import Frame, decode_frame
from bridge.wire.mux import Acknowledged, MessageReceived
from bridge.wire.segment import INITIAL_CREDITS, MAX_CREDITS, Kind, Segmenter, header_byte
from pairing.encrypted_records import EncryptedRecords
from pairing.handshake import Authenticated, CodeToConfirm, Handshake, Role
from pairing.privacy import parse_token, resolve, resolve_identify, resolve_raw
from pairing.trust import TrustStore
from transports.ble import BleakLink, Sighting
from transports.link import Link, LinkClosed, segment_size_for


class CaseFailed(Exception):
    """The phone broke the rule; the message is the evidence."""


class CaseSkipped(Exception):
    """The case cannot run against this phone; the message says why."""


class Target(Protocol):
    @property
    def description(self) -> str: ...
    async def connect(self, att_mtu: int | None = None) -> Link: ...
    async def stimulate(self) -> None:
        """Have the phone publish a route, a track and a notification (a real phone's
        user is asked to)."""


@dataclass
class Context:
    """What the cases share: the peer under test (a phone, or with ``role`` PHONE a head
    unit), the tool's identity in its role, what they learned."""

    target: Target
    trust: TrustStore  # the tool's: a head unit's, or with role PHONE a phone's
    peer_key: bytes | None = None  # once a case paired with the peer: its static key
    peer_irk: bytes | None = None  # the phone's IRK from its CONFIRM
    notes: list[str] = field(default_factory=list)
    say: Callable[[str], None] | None = None  # tells the person at a real phone what to do
    role: Role = Role.HEAD_UNIT  # the tool's
    phone_role: str = "peripheral"  # the phone is the GATT server (1.1), or "central" (1.2)

    @property
    def peer(self) -> str:
        return "phone" if self.role is Role.HEAD_UNIT else "head unit"


#: Which peers a case checks: a phone (the tool is a head unit), a head unit (the tool is
#: a phone), or both.
PHONE, HEAD_UNIT = "phone", "head-unit"
BOTH = frozenset({PHONE, HEAD_UNIT})


@dataclass(frozen=True)
class Case:
    number: str
    section: str
    title: str  # "{peer}": the phone, or the head unit
    run: Callable[[Context], Awaitable[None]]
    peers: frozenset[str]

    def title_for(self, peer: str) -> str:
        return self.title.format(peer="head unit" if peer == HEAD_UNIT else "phone")


CASES: list[Case] = []


def case(
    number: str, section: str, title: str, peers: frozenset[str] = frozenset({PHONE})
) -> Callable[[Callable[[Context], Awaitable[None]]], Callable[[Context], Awaitable[None]]]:
    def register(run: Callable[[Context], Awaitable[None]]) -> Callable[[Context], Awaitable[None]]:
        CASES.append(Case(number, section, title, run, peers))
        return run

    return register


def cases_for(peer: str) -> list[Case]:
    return [c for c in CASES if peer in c.peers]


# -- the head unit's side ----------------------------------------------------------------


class Session:
    """The tool's session on one link to the peer, its events collected: a head unit's,
    or (``ctx.role`` PHONE) a phone's."""

    def __init__(
        self, ctx: Context, link: Link, *, allow_pairing: bool, peer: bytes | None,
        config: ConnectionConfig | None = None, versions: list[int] | None = None,
    ) -> None:  # fmt: skip
        self.link = link
        self.wire = Wire(link)
        self.events: list[SessionEvent] = []
        self.role = ctx.role
        if ctx.role is Role.HEAD_UNIT:
            hello = m.Hello(versions or [0], "head-unit", "Conformance")
            self.handshake = Handshake(
                Role.HEAD_UNIT, ctx.trust.identity, name="Conformance", platform="head-unit",
                trusted=ctx.trust.trusted_keys(), peer_key=peer, allow_pairing=allow_pairing,
                random=os.urandom, irk=ctx.trust.irk,  # a phone finds our adverts by it
            )  # fmt: skip
        else:
            hello = m.Hello(versions or [0], "android", "Conformance phone")
            self.handshake = Handshake(
                Role.PHONE, ctx.trust.identity, name="Conformance phone", platform="android",
                trusted=ctx.trust.trusted_keys(), allow_pairing=allow_pairing,
                random=os.urandom, irk=ctx.trust.irk,
            )  # fmt: skip
        self.session = PeerSession(ctx.peer, hello=hello, config=config)
        self.down: LinkDown | None = None
        self.say = ctx.say

    @property
    def received(self) -> int:
        """Packets from the phone so far."""
        return self.wire.received

    async def run(self, nursery: trio.Nursery) -> None:
        async def drive() -> None:
            self.down = await self.session.run_link(self.link, handshake=self.handshake)

        async def read() -> None:
            while True:
                event = await self.session.next_event()
                self.events.append(event)
                if isinstance(event, CodeToConfirm):
                    if self.say is not None:
                        self.say(f"  pairing code {event.code}: confirm it on the phone")
                    self.session.confirm_pairing(True)

        nursery.start_soon(drive)
        nursery.start_soon(read)

    async def command(self, command: m.MediaCommandRequest, limit: float = 10) -> None:
        """Send a media command and wait for the media result that names its frame."""
        seq = await self.session.send(command.channel, command.type, encode(command))

        def answered() -> bool:
            return any(
                isinstance(e, MessageReceived) and e.channel is Channel.AUDIO
                and e.type == m.MediaCommandResult.type and e.body.get(0) == seq
                for e in self.events
            )  # fmt: skip

        await self.until(f"a media result for frame {seq}", answered, limit)

    async def round_trip(self, n: int = 0, count: int = 1) -> None:
        """Something the peer must answer, and its answer, ``count`` at once: as a head
        unit media commands and their results; as a phone route statuses and their
        acknowledgements."""
        if self.role is Role.HEAD_UNIT:
            if count == 1:
                await self.command(m.MediaCommandRequest(m.MediaCommand.VOLUME_SET, n % 101))
                return
            keys = [
                await self.send(m.MediaCommandRequest(m.MediaCommand.VOLUME_SET, (n + i) % 101))
                for i in range(count)
            ]
            await self.until(f"media results for frames {keys[0][1]} to {keys[-1][1]}",
                             lambda: len(self.results(keys)) == count, 10)  # fmt: skip
            return
        routes = [
            m.RouteStatus(m.RouteState.ACTIVE, "Conformance Street", remaining_m=n + i)
            for i in range(count)
        ]
        keys = [await self.send(route) for route in routes]
        await self.until(f"an acknowledgement of route status frame {keys[-1][1]}",
                         lambda: all(self.acknowledged(*k) for k in keys), 10)  # fmt: skip

    def acknowledged(self, channel: Channel, seq: int) -> bool:
        return any(
            isinstance(e, Acknowledged) and e.channel is channel and e.seq == seq
            for e in self.events
        )

    async def peer_closes(self, code: ErrorCode, what: str, limit: float) -> None:
        """Wait for the peer's CLOSE; CaseFailed unless it came from the peer with
        ``code``."""
        peer = self.session.name
        await self.until(f"the {peer}'s CLOSE", lambda: bool(self.of(ConnectionClosed)), limit)
        closed = self.of(ConnectionClosed)[0]
        assert isinstance(closed, ConnectionClosed)
        if not closed.by_peer or closed.code != code:
            raise CaseFailed(f"{what}: {closed.describe()}, not the {peer}'s code {int(code)}")

    async def send(self, message: Message) -> tuple[Channel, int]:
        """Send a sequenced message; its channel and frame seq."""
        seq = await self.session.send(message.channel, message.type, encode(message))
        assert seq is not None
        return message.channel, seq

    def results(self, commands: Collection[tuple[Channel, int]]) -> dict[tuple[Channel, int], Any]:
        """The phone's results that answer these (channel, seq) commands: the first for each."""
        out: dict[tuple[Channel, int], Any] = {}
        for e in self.events:
            if isinstance(e, MessageReceived) and e.type == _RESULT_TYPES.get(e.channel):
                key = (e.channel, e.body.get(0))
                if key in commands and key not in out:
                    out[key] = _decoded(e)  # type: ignore[index]
        return out

    def published(self) -> list[Message]:
        """What the phone sent on channels 1 to 4 other than results, decoded strictly;
        CaseFailed on the first that is not a valid message."""
        return [
            _decoded(e) for e in self.events
            if isinstance(e, MessageReceived) and e.channel is not Channel.CONTROL
            and e.type != _RESULT_TYPES.get(e.channel)
        ]  # fmt: skip

    def of(self, cls: type) -> list[object]:
        return [e for e in self.events if isinstance(e, cls)]

    async def until(self, what: str, predicate: Callable[[], bool], limit: float) -> None:
        with trio.move_on_after(limit):
            while not predicate():
                await trio.sleep(0.01)
            return
        raise CaseFailed(f"{what} within {limit:g} s: it did not")


_RESULT_TYPES = {
    Channel.NAVIGATION: m.NavigationResult.type,
    Channel.AUDIO: m.MediaCommandResult.type,
    Channel.MESSAGING: m.MessagingResult.type,
}


def _decoded(event: MessageReceived) -> Message:
    try:
        return m.decode_message(event.channel, event.type, event.body)
    except ProtocolError as e:
        raise CaseFailed(
            f"its {event.channel.name.lower()} message type {event.type} (seq {event.seq}) "
            f"is not valid: {e}"
        ) from None


@asynccontextmanager
async def reconnected(
    ctx: Context,
    config: ConnectionConfig | None = None,
    *,
    att_mtu: int | None = None,
    tamper_after: int | None = None,
    versions: list[int] | None = None,
) -> AsyncIterator[Session]:
    """A session authenticated (KK) as the head unit that paired in case 3, hung up when
    the case is done. Its tasks run in a nursery of their own: what a case raises inside
    comes out in an exception group (the runner takes the first error out)."""
    if ctx.peer_key is None:
        first = "3" if ctx.role is Role.HEAD_UNIT else "24"
        raise CaseSkipped(f"needs the {ctx.peer} paired (case {first})")
    async with trio.open_nursery() as nursery:
        link = await ctx.target.connect(att_mtu)
        if tamper_after is not None:
            _tamper(link, tamper_after)
        s = Session(
            ctx, link, allow_pairing=False, peer=ctx.peer_key, config=config, versions=versions
        )
        await s.run(nursery)
        try:
            await s.until(f"the {ctx.peer} authenticated", lambda: bool(s.of(HelloReceived)), 70)
            yield s
        finally:
            await _hang_up(s.link)
            nursery.cancel_scope.cancel()


class Wire:
    """The head unit's segments on one link, watched and, when a case asks, changed:
    credit grants withheld, a record sent again. Our segments are renumbered on the way
    out, so the phone always sees the next ``seq``; the phone's data segments are counted
    against the credits it was given (section 3), whatever the case does."""

    def __init__(self, link: Link) -> None:
        self._send, self._receive = link.send, link.receive
        link.send = self.send  # type: ignore[method-assign]
        link.receive = self.receive  # type: ignore[method-assign]
        self._lock = trio.Lock()  # one packet at a time, in seq order
        self.seq = 0
        self.received = 0  # packets from the phone
        self.given = INITIAL_CREDITS  # credits the phone was given, in all
        self.spent = 0  # data segments (FIRST, CONT) the phone sent
        self.overdrawn: str | None = None  # the first data segment beyond its credits
        self.withhold = False  # keep our grants from the phone
        self.withheld = 0
        self.whole: bytes | None = None  # our last record sent in one segment (no grant)

    async def send(self, packet: bytes) -> None:
        kind = packet[0] >> 6
        if kind == Kind.CREDIT:
            if self.withhold:
                self.withheld += packet[1]
                return
            self.given += packet[1]
        elif kind == Kind.FIRST and packet[2] & 0x80:
            if self.withhold:  # the same record, its grant taken out
                self.withheld += packet[3]
                packet = packet[:2] + bytes((packet[2] & 0x7F,)) + packet[4:]
            else:
                self.given += packet[3]
        if kind == Kind.FIRST:
            grant = 1 if packet[2] & 0x80 else 0
            data = packet[3 + grant :]
            if len(data) == packet[1] | (packet[2] & 0x7F) << 8:
                self.whole = packet[:2] + bytes((packet[2] & 0x7F,)) + data
        await self.resend(packet)

    async def resend(self, packet: bytes) -> None:
        """Send ``packet`` (a segment) as our next one, whatever it was before."""
        async with self._lock:
            seq, self.seq = self.seq, (self.seq + 1) % 16
            await self._send(bytes((packet[0] & 0xF0 | seq,)) + packet[1:])

    async def receive(self) -> bytes:
        packet = await self._receive()
        self.received += 1
        if packet and packet[0] >> 6 in (Kind.FIRST, Kind.CONT):
            self.spent += 1
            if self.spent > self.given and self.overdrawn is None:
                self.overdrawn = (
                    f"its data segment {self.spent} came when it had been given "
                    f"{self.given} credits in all"
                )
        return packet

    async def release(self) -> None:
        """Give the phone what was withheld, and stop withholding."""
        self.withhold = False
        while self.withheld:
            grant = min(self.withheld, MAX_CREDITS - (self.given - self.spent))
            if grant <= 0:
                return
            self.withheld -= grant
            self.given += grant
            await self.resend(bytes((header_byte(Kind.CREDIT, 0, 0), grant)))


def _tamper(link: Link, after: int) -> None:
    """From the ``after``-th packet on, flip the last bit of every packet we send (the
    segment header stays right; the record's tag does not)."""
    original = link.send
    sent = 0

    async def send(packet: bytes) -> None:
        nonlocal sent
        sent += 1
        if sent > after:
            packet = packet[:-1] + bytes([packet[-1] ^ 1])
        await original(packet)

    link.send = send  # type: ignore[method-assign]


class RawLink:
    """Segments in and out without a protocol core: for what a correct head unit never
    sends. Reads the phone's plaintext frames."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.size = segment_size_for(link.payload_size)
        self.rx = Segmenter(self.size, window=255)
        self.seq = 0

    def first(self, record: bytes, *, seq: int | None = None, lane: int = 0) -> bytes:
        s = self.seq if seq is None else seq
        self.seq = (s + 1) % 16
        n = len(record)
        return bytes((header_byte(Kind.FIRST, lane, s), n & 0xFF, n >> 8)) + record

    async def frames(self, limit: float) -> tuple[list[Frame], str]:
        """The phone's plaintext frames until it closes the link or ``limit``; and how
        reading ended."""
        out: list[Frame] = []
        with trio.move_on_after(limit):
            try:
                while True:
                    self.rx.receive_segment(await self.link.receive())
                    while (record := self.rx.next_record()) is not None:
                        out.append(decode_frame(record))
            except LinkClosed as e:
                return out, f"link closed ({e})"
            except ProtocolError as e:
                return out, f"not a plaintext frame: {e}"
        return out, "still open"


async def _hang_up(link: Link) -> None:
    """End a link as a head unit does: first let the last acknowledgements go (50 ms
    each way), so the phone does not send its answers again to the next case's head
    unit; then give it the time a real phone takes to see the disconnection."""
    await trio.sleep(0.3)
    await link.aclose()
    await trio.sleep(2)


def _close_code(frames: list[Frame]) -> int | None:
    closes = [f for f in frames if f.channel is Channel.CONTROL and f.type == ControlType.CLOSE]
    code = closes[0].body.get(0) if closes else None
    return code if isinstance(code, int) else None


def _told(frames: list[Frame], how: str) -> str:
    """What the peer answered, for the evidence: its CLOSE's code and text, or that it
    sent none, and how the link ended."""
    closes = [f for f in frames if f.channel is Channel.CONTROL and f.type == ControlType.CLOSE]
    if not closes:
        return f"no CLOSE ({len(frames)} other frames), {how}"
    code, text = closes[0].body.get(0), closes[0].body.get(1, "")
    try:
        name = ErrorCode(code).name.lower() if code else "normal"
    except ValueError:
        name = "not a code of section 7"
    return f"its CLOSE said code {code} ({name}): {text!r}; {how}"


# -- the cases ----------------------------------------------------------------------------


@case("1", "3", "a segment with the wrong seq closes the link with code 2 (sequence)", BOTH)
async def _wrong_seq(ctx: Context) -> None:
    raw = RawLink(await ctx.target.connect())
    keepalive = bytes.fromhex("840002f6a0")  # [0, 2, null, {}]
    await raw.link.send(raw.first(keepalive, seq=5))
    frames, how = await raw.frames(5)
    await _hang_up(raw.link)
    if _close_code(frames) != ErrorCode.SEQUENCE:
        raise CaseFailed(f"sent a FIRST with seq 5 as the first segment: {_told(frames, how)}")


@case("2", "5", "a frame that is not canonical CBOR closes the link with code 1 (malformed)", BOTH)
async def _non_canonical(ctx: Context) -> None:
    raw = RawLink(await ctx.target.connect())
    record = bytes.fromhex("840002f6b90000")  # the body {} with a 2-byte length
    await raw.link.send(raw.first(record))
    frames, how = await raw.frames(5)
    await _hang_up(raw.link)
    if _close_code(frames) != ErrorCode.MALFORMED:
        raise CaseFailed(
            f"sent a keepalive whose empty map has a 2-byte length: {_told(frames, how)}"
        )


async def _pair(ctx: Context, check: Callable[[Session, Authenticated], None]) -> None:
    """A first pairing on a new link, ``check`` run on what authenticated; then the tool
    remembers the peer (its key, its IRK) for the cases that reconnect."""
    async with trio.open_nursery() as nursery:
        link = await ctx.target.connect()
        s = Session(ctx, link, allow_pairing=True, peer=None)
        await s.run(nursery)
        await s.until("a code, then authentication", lambda: bool(s.of(Authenticated)), 70)
        (auth,) = s.of(Authenticated)
        assert isinstance(auth, Authenticated)
        check(s, auth)
        ctx.trust.record(auth)
        ctx.peer_key = auth.peer.static_key
        ctx.peer_irk = auth.peer_irk  # a phone's, or the head unit's (its tokens resolve)
        await s.until("its HELLO after authentication", lambda: bool(s.of(HelloReceived)), 5)
        await _hang_up(link)
        nursery.cancel_scope.cancel()


@case("3", "8.1, 8.2", "a first pairing: XX with the commitment, then CONFIRM with IRK and name")
async def _first_pairing(ctx: Context) -> None:
    def check(s: Session, auth: Authenticated) -> None:
        (prompt,) = s.of(CodeToConfirm)
        assert isinstance(prompt, CodeToConfirm)
        if prompt.peer.name:
            raise CaseFailed(f"XX 2 carried the phone's name ({prompt.peer.name!r}): 8.2 says no")
        if auth.peer_irk is None or len(auth.peer_irk) != 16 or not auth.peer.name:
            raise CaseFailed("the phone's CONFIRM lacked its 16-byte IRK or its name")

    await _pair(ctx, check)


@case("4", "8.1, 2.2", "outside its pairing mode the phone pairs with no stranger: CLOSE to XX 1 "
      "(as a GATT client: no connection at all)")  # fmt: skip
async def _xx_refused(ctx: Context) -> None:
    if ctx.peer_key is None:
        raise CaseSkipped("needs the phone paired (case 3) and so out of its pairing mode")
    stranger_connects = getattr(ctx.target, "stranger_connects", None)
    if ctx.phone_role == "central" and stranger_connects is not None:
        # as a GATT client the phone never even connects to a car it cannot resolve
        if await stranger_connects(15):
            raise CaseFailed("out of its pairing mode it connected to a head unit it never "
                             "paired with (2.2: only to a token it resolves)")  # fmt: skip
        return
    stranger = TrustStore(Path(ctx.trust.directory) / "stranger")
    async with trio.open_nursery() as nursery:
        s = Session(Context(ctx.target, stranger), await ctx.target.connect(),
                    allow_pairing=True, peer=None)  # fmt: skip
        await s.run(nursery)
        with trio.move_on_after(15):  # the phone closes; or (wrongly) pairs with us
            while s.down is None and not s.of(CodeToConfirm):
                await trio.sleep(0.01)
        if s.down is None:
            await _hang_up(s.link)
        nursery.cancel_scope.cancel()
    if s.of(CodeToConfirm) or s.of(Authenticated):
        raise CaseFailed("a stranger's XX 1 got XX 2 (the phone's static key) and a code")
    closed = [e for e in s.of(ConnectionClosed) if isinstance(e, ConnectionClosed)]
    if not closed or not closed[0].by_peer or closed[0].code != 0:
        raise CaseFailed(f"expected the phone's CLOSE code 0, got {s.events}")


@case("24", "8.1, 8.2", "a first pairing in the head unit's pairing mode: XX, the code, CONFIRM",
      frozenset({HEAD_UNIT}))  # fmt: skip
async def _first_pairing_as_phone(ctx: Context) -> None:
    def check(s: Session, auth: Authenticated) -> None:
        if not s.of(CodeToConfirm):
            raise CaseFailed("a stranger was paired without a code to compare (8.2)")
        if not auth.peer.name:
            raise CaseFailed("the head unit's XX 2 did not carry its name (8.2)")

    await _pair(ctx, check)


@case("5", "8.1", "paired, the two reconnect with KK (no code) and both say HELLO", BOTH)
async def _kk(ctx: Context) -> None:
    async with reconnected(ctx) as s:
        (auth,) = s.of(Authenticated)
        if not isinstance(auth, Authenticated) or auth.paired_now or s.of(CodeToConfirm):
            raise CaseFailed("paired, the two were asked to compare codes again")
        hello = s.of(HelloReceived)[0]
        assert isinstance(hello, HelloReceived)
        if 0 not in hello.hello.versions:
            raise CaseFailed(f"its HELLO offers versions {hello.hello.versions}, not 0")


@case("6", "6.1 (timers)", "the {peer} sends KEEPALIVE after 5 s in which it sent nothing", BOTH)
async def _keepalive(ctx: Context) -> None:
    async with reconnected(ctx) as s:
        await trio.sleep(1)  # what the HELLOs set off is over
        before = s.received
        await trio.sleep(6.5)
        after = s.received
    if after == before:
        raise CaseFailed(f"the {ctx.peer} sent nothing in the 6.5 s after the last exchange")


@case("7", "6.1 (timers)", "the {peer} closes a link that stays silent 15 s, with code 7", BOTH)
async def _idle(ctx: Context) -> None:
    silent = ConnectionConfig(keepalive=math.inf, idle_timeout=math.inf)  # we say nothing
    async with reconnected(ctx, silent) as s:
        await s.peer_closes(ErrorCode.TIMEOUT, "after 15 s of our silence", 20)


@case("8", "5", "a sequenced frame that needs no answer is acknowledged within 1 s", BOTH)
async def _ack(ctx: Context) -> None:
    async with reconnected(ctx) as s:
        text = f"conformance: an ERROR the {ctx.peer} only has to acknowledge"
        report = m.ErrorReport(int(Channel.NAVIGATION), None, int(ErrorCode.UNSUPPORTED), text)
        await s.session.send(report.channel, report.type, encode(report))
        await s.until("an acknowledgement of an ERROR frame",
                      lambda: bool(s.of(Acknowledged)), 1.0)  # fmt: skip


@case("9", "6.3", "a media command is answered with a media result naming its seq")
async def _media(ctx: Context) -> None:
    async with reconnected(ctx) as s:
        await s.command(m.MediaCommandRequest(m.MediaCommand.PAUSE))


@case("10", "8.4", "records that fail authentication are dropped; the third closes with code 9",
      BOTH)  # fmt: skip
async def _tampered(ctx: Context) -> None:
    # after the handshake (KK 1) and our HELLO, every record we send has a flipped bit:
    # with nothing else to say, those are KEEPALIVEs, one a second
    quiet = ConnectionConfig(keepalive=1.0, idle_timeout=math.inf)
    async with reconnected(ctx, quiet, tamper_after=2) as s:
        await s.peer_closes(ErrorCode.AUTHENTICATION, "after three forged records", 10)


@case("11", "3, 6.3", "at ATT MTU 23 (20-byte segments) a reconnection and a round trip work",
      BOTH)  # fmt: skip
async def _mtu_23(ctx: Context) -> None:
    await _command_at(ctx, 23)


@case("12", "5", "across a dropped link every command is answered exactly once, in order")
async def _exactly_once(ctx: Context) -> None:
    if ctx.peer_key is None:
        raise CaseSkipped("needs the phone paired (case 3)")
    hello = m.Hello([0], "head-unit", "Conformance")
    session = PeerSession("phone", hello=hello)  # outlives the link, as a head unit's does
    results: list[int] = []

    async def read() -> None:
        while True:
            event = await session.next_event()
            if isinstance(event, MessageReceived) and event.type == m.MediaCommandResult.type:
                results.append(int(event.body[0]))  # command_seq

    def kk() -> Handshake:
        return Handshake(
            Role.HEAD_UNIT, ctx.trust.identity, name="Conformance", platform="head-unit",
            trusted=ctx.trust.trusted_keys(), peer_key=ctx.peer_key, allow_pairing=False,
            random=os.urandom,
        )  # fmt: skip

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        first = await ctx.target.connect()
        nursery.start_soon(partial(session.run_link, first, handshake=kk()))
        with trio.move_on_after(10):
            while not session.connected:
                await trio.sleep(0.01)
        # the link drops once four of our packets with commands have gone: some commands
        # are on the air, some still with us, perhaps some answered
        gone, went = 0, trio.Event()
        send = first.send

        async def counted(packet: bytes) -> None:
            nonlocal gone
            await send(packet)
            gone += 1
            if gone == 4:
                went.set()

        first.send = counted  # type: ignore[method-assign]
        for volume in range(10, 110, 10):  # ten commands, queued at once
            command = m.MediaCommandRequest(m.MediaCommand.VOLUME_SET, volume)
            await session.send(command.channel, command.type, encode(command))
        with trio.move_on_after(10):
            await went.wait()
        before_drop = len(results)
        await first.aclose()
        await trio.sleep(2)
        second = await ctx.target.connect()
        nursery.start_soon(partial(session.run_link, second, handshake=kk()))
        with trio.move_on_after(20):
            while len(results) < 10:
                await trio.sleep(0.05)
        await _hang_up(second)
        nursery.cancel_scope.cancel()
    if results != list(range(10)):
        raise CaseFailed(f"the results named frames {results}, not 0 to 9 once each, in order")
    if before_drop == 10:
        raise CaseSkipped("all 10 were answered before the drop: nothing in between")


async def _raw_close(ctx: Context, segments: list[bytes]) -> tuple[int | None, str, list[Frame]]:
    """Send these segments on a fresh link (before any handshake); the phone's close
    code, how reading ended, and its frames."""
    raw = RawLink(await ctx.target.connect())
    for segment in segments:
        await raw.link.send(segment)
    frames, how = await raw.frames(5)
    await _hang_up(raw.link)
    return _close_code(frames), how, frames


@case("13", "3", "a new record on a lane whose record is unfinished closes with code 5", BOTH)
async def _busy_lane(ctx: Context) -> None:
    keepalive = bytes.fromhex("840002f6a0")
    head = bytes((header_byte(Kind.FIRST, 1, 0), 40, 0)) + keepalive  # 5 of 40 bytes
    again = bytes((header_byte(Kind.FIRST, 1, 1), len(keepalive), 0)) + keepalive
    code, how, frames = await _raw_close(ctx, [head, again])
    if code != ErrorCode.INTERLEAVE:
        raise CaseFailed(
            f"a second FIRST on lane 1 before the first record ended: {_told(frames, how)}"
        )


@case("14", "3", "a continuation on a lane with no record started closes with code 5", BOTH)
async def _idle_lane(ctx: Context) -> None:
    code, how, frames = await _raw_close(ctx, [bytes((header_byte(Kind.CONT, 2, 0),)) + b"ab"])
    if code != ErrorCode.INTERLEAVE:
        raise CaseFailed(f"a CONT on lane 2 as the first segment: {_told(frames, how)}")


@case("15", "3, 4", "a record announced longer than 16384 bytes closes with code 4 (too large)",
      BOTH)  # fmt: skip
async def _huge_record(ctx: Context) -> None:
    total = 16385
    segment = bytes((header_byte(Kind.FIRST, 0, 0), total & 0xFF, total >> 8)) + bytes(10)
    code, how, frames = await _raw_close(ctx, [segment])
    if code != ErrorCode.TOO_LARGE:
        raise CaseFailed(f"a FIRST announcing {total} bytes: {_told(frames, how)}")


@case("16", "1, 3, 6.3", "at ATT MTU 185 (182-byte segments) a reconnection and a round trip",
      BOTH)  # fmt: skip
async def _mtu_185(ctx: Context) -> None:
    await _command_at(ctx, 185)


@case("17", "1, 3, 6.3", "at ATT MTU 517 (512-byte segments) a reconnection and a round trip",
      BOTH)  # fmt: skip
async def _mtu_517(ctx: Context) -> None:
    await _command_at(ctx, 517)


async def _command_at(ctx: Context, att_mtu: int) -> None:
    wanted = min(att_mtu - 3, 512)  # an ATT value is at most 512 bytes (PROTOCOL.md 1)
    async with reconnected(ctx, att_mtu=att_mtu) as s:
        if s.link.payload_size != wanted:
            raise CaseSkipped(f"this link's payload is {s.link.payload_size}, not {wanted}")
        await s.round_trip(40)


@case("18", "3", "the phone sends no data segment beyond its credits, and resumes when granted")
async def _credits(ctx: Context) -> None:
    # At ATT MTU 517 the window is 34 credits (section 3) and a media result one
    # segment: sixty results need more than the phone holds, and we grant none until it
    # has stopped.
    async with reconnected(ctx, att_mtu=517) as s:
        await trio.sleep(1)  # what the HELLOs set off is over
        s.wire.withhold = True
        volumes = range(60)
        seqs = [await s.send(m.MediaCommandRequest(m.MediaCommand.VOLUME_SET, v)) for v in volumes]
        spent = -1
        while s.wire.spent != spent:  # until the phone has been silent for 2 s
            spent = s.wire.spent
            await trio.sleep(2)
        if s.wire.overdrawn:
            raise CaseFailed(f"with our grants withheld, {s.wire.overdrawn}")
        answered = len(s.results(seqs))
        if answered == len(seqs):
            raise CaseSkipped(f"it answered all {len(seqs)} commands within its credits")
        await s.wire.release()
        # on a real stack the last commands may still be on their way: time for all
        with trio.move_on_after(30):
            while len(s.results(seqs)) < len(seqs):
                await trio.sleep(0.05)
        got = len(s.results(seqs))
        if got < len(seqs):
            raise CaseFailed(f"granted credits again, it answered {got} of {len(seqs)} "
                             f"commands in 30 s ({answered} before)")  # fmt: skip
        if s.wire.overdrawn:
            raise CaseFailed(s.wire.overdrawn)


@case("19", "8.4", "a record sent again is rejected: three replays close the link with code 9",
      BOTH)  # fmt: skip
async def _replayed(ctx: Context) -> None:
    async with reconnected(ctx) as s:
        await s.round_trip(20)
        record = s.wire.whole
        if record is None:
            raise CaseSkipped("we sent no record in one segment to replay")
        for _ in range(3):
            await s.wire.resend(record)
            await trio.sleep(0.2)
        await s.peer_closes(ErrorCode.AUTHENTICATION, "after the same record three times", 10)


#: Records per key (PROTOCOL.md 8.4), and how far ahead of the next expected counter a
#: record may be.
_REKEY, _AHEAD = 1 << 16, 127


@case("20", "8.4", "records from counter 65536 on use the next key (Rekey) and are accepted",
      BOTH)  # fmt: skip
async def _rekey(ctx: Context) -> None:
    # Sending 65536 records takes long on a real radio; the counter may move up to 127
    # ahead of the next one the phone expects, so ours skips forward, 127 at a time.
    async with reconnected(ctx) as s:
        connection = s.session.connection
        records = connection.records if connection is not None else None
        if not isinstance(records, EncryptedRecords):
            raise CaseSkipped("the link's records are not encrypted")
        seal = records.seal
        target = _REKEY + 64

        def skipping(plaintext: bytes) -> bytes:
            counter = records.next_counter
            records.skip_to(max(counter, min(target, counter + _AHEAD)))
            return seal(plaintext)

        records.seal = skipping  # type: ignore[method-assign]
        volume = 0
        try:
            while records.next_counter < target:  # eight at a time: fewer round trips
                volume += 8
                await s.round_trip(volume, count=8)
            records.seal = seal  # type: ignore[method-assign]
            await s.round_trip(50)
        except CaseFailed as e:
            if records.next_counter <= _REKEY:
                raise
            raise CaseFailed(f"once our records used the second key (counter "
                             f"{records.next_counter}): {e}") from None  # fmt: skip


def _commands(notification: m.Notification | None) -> list[Message]:
    """One of every command a head unit sends, on the phone's notification if it posted
    one (else on an id it never posted: each still needs its result)."""
    note = notification.id if notification is not None else "conformance-unknown"
    uid = f"cf-{os.urandom(4).hex()}-"
    action = "conformance-unknown"
    canned = None
    if notification is not None:
        if notification.actions:
            action = notification.actions[0].id
        if notification.canned_replies:
            canned = 0
    values = {m.MediaCommand.SEEK: 1000, m.MediaCommand.VOLUME_SET: 30,
              m.MediaCommand.SHUFFLE: 1, m.MediaCommand.REPEAT: 2}  # fmt: skip
    out: list[Message] = [
        m.GuidanceRequest(m.GuidanceAction.START, "Conformance Street 1"),
        m.GuidanceRequest(m.GuidanceAction.STOP),
    ]
    out += [m.MediaCommandRequest(c, values.get(c)) for c in m.MediaCommand]
    out += [
        m.MarkRead(note, uid=uid + "1"),
        m.PerformAction(note, action, uid=uid + "2"),
        m.Reply(note, text="On my way", uid=uid + "3"),
        m.Reply(note, canned=canned if canned is not None else 0, uid=uid + "4"),
        m.Dismiss(note, uid=uid + "5"),
    ]
    return out


@case("21", "6.2-6.5", "every command of every channel gets its result; all it sends decodes")
async def _every_message(ctx: Context) -> None:
    async with reconnected(ctx) as s:
        await ctx.target.stimulate()
        wanted = {m.RouteStatus, m.NowPlaying, m.Notification}  # as far as it offers them
        with trio.move_on_after(10):
            while not wanted <= {type(x) for x in s.published()}:
                await trio.sleep(0.05)
        notes = [x for x in s.published() if isinstance(x, m.Notification)]
        commands = _commands(notes[0] if notes else None)
        sent = {await s.send(command): command for command in commands}
        with trio.move_on_after(20):
            while len(s.results(sent)) < len(sent):
                await trio.sleep(0.05)
        results = s.results(sent)
        missing = [f"{type(c).__name__} (seq {k[1]})" for k, c in sent.items() if k not in results]
        if missing:
            raise CaseFailed(f"no result within 20 s for {', '.join(missing)}")
        for key, result in results.items():
            if not result.ok and not result.error:
                raise CaseFailed(f"{type(sent[key]).__name__} (seq {key[1]}) failed without a text")
        s.published()  # every message it sent decodes (CaseFailed otherwise)


_PROPERTIES = {
    str(layout.TO_PHONE_UUID): ("to-phone", "write-without-response"),
    str(layout.FROM_PHONE_UUID): ("from-phone", "notify"),
    str(layout.INFO_UUID): ("info", "read"),
}
_CCCD = "00002902-0000-1000-8000-00805f9b34fb"


@case("22", "1", "the GATT layout: the service, its three characteristics, the info value")
async def _gatt_layout(ctx: Context) -> None:
    link = await ctx.target.connect()
    try:
        if ctx.phone_role == "central":
            raise CaseSkipped("the phone is the GATT client here: the layout is ours")
        if not isinstance(link, BleakLink):
            raise CaseSkipped("a simulated link has no GATT: run with --radio")
        service = link.client.services.get_service(str(layout.SERVICE_UUID))
        assert service is not None  # the transport checked it when it connected
        chars = {c.uuid.lower(): c for c in service.characteristics}
        for uuid, (name, wanted) in _PROPERTIES.items():
            char = chars.get(uuid)
            if char is None or wanted not in char.properties:
                got = char.properties if char is not None else "missing"
                raise CaseFailed(f"the {name} characteristic ({uuid}) must be {wanted}: {got}")
        notify = chars[str(layout.FROM_PHONE_UUID)]
        if not any(d.uuid.lower() == _CCCD for d in notify.descriptors):
            raise CaseFailed("the from-phone characteristic has no CCCD (0x2902)")
        if str(layout.IDENTIFY_UUID) in chars:
            raise CaseFailed("the phone serves the identify characteristic, a head unit's (1.2)")
        if not link.versions or 0 not in link.versions:
            raise CaseFailed(f"its info value offers versions {list(link.versions)}, not 0")
    finally:
        await _hang_up(link)


@case("23", "2.1", "advertising: an 8-byte token in the name that resolves, fresh each time")
async def _advertising(ctx: Context) -> None:
    if ctx.phone_role == "central":
        raise CaseSkipped("the phone connects to the head unit here: it does not advertise")
    names = []
    for _ in range(2):
        link = await ctx.target.connect()
        sighting = getattr(ctx.target, "sighting", None)
        await _hang_up(link)
        if not isinstance(sighting, Sighting):
            raise CaseSkipped("a simulated link has no advertising: run with --radio")
        names.append(sighting.name)
    first, second = names
    if first is None or parse_token(first) is None:
        raise CaseFailed(f"its local name {first!r} is not an 8-character token (2.1)")
    if ctx.peer_irk is not None and resolve(first, [(0, ctx.peer_irk)]) is None:
        raise CaseFailed(f"its token {first!r} does not resolve with the IRK it gave at pairing")
    if second == first:
        raise CaseFailed(f"it advertised the token {first!r} twice: a stranger can follow it")


def _publications(transfer: int) -> list[Message]:
    """One of every message a phone sends, the album art as bulk chunks."""
    art = bytes(range(256)) * 20  # 5120 bytes: two chunks
    uid = f"cf-{os.urandom(4).hex()}-"
    return [
        m.RouteStatus(m.RouteState.ACTIVE, "Conformance Street 1", remaining_m=900),
        m.Maneuver(m.ManeuverType.TURN_RIGHT, 300, "300", m.DistanceUnit.METERS, "Elm Rd"),
        m.NowPlaying("Conformance", "The Tool", state=m.PlaybackState.PLAYING, art=transfer),
        *m.chunk_object(transfer, art, mime="image/png"),
        m.Notification("cf-1", "Messages", m.Category.MESSAGE, "Running late?", 0,
                       sender="Conformance", canned_replies=["On my way"], uid=uid + "1"),
        m.NotificationRemoved("cf-1", uid=uid + "2"),
    ]  # fmt: skip


@case("25", "5, 6.2-6.5", "every message a phone sends is acknowledged and the link stays open",
      frozenset({HEAD_UNIT}))  # fmt: skip
async def _every_publication(ctx: Context) -> None:
    async with reconnected(ctx) as s:
        sent = {await s.send(message): message for message in _publications(7)}
        with trio.move_on_after(5):
            while not all(s.acknowledged(*key) for key in sent):
                await trio.sleep(0.05)
        missing = [f"{type(x).__name__} (seq {k[1]})" for k, x in sent.items()
                   if not s.acknowledged(*k)]  # fmt: skip
        closed = s.of(ConnectionClosed)
        if closed:
            raise CaseFailed(f"the head unit closed the link: {closed[0]}")
        if missing:
            raise CaseFailed(f"not acknowledged within 5 s: {', '.join(missing)}")


@case(
    "26", "1.2", "as a GATT client the phone writes its identify tag, which resolves with its IRK"
)
async def _identify(ctx: Context) -> None:
    if ctx.phone_role != "central":
        raise CaseSkipped("the phone is the GATT server here: it writes no identify tag")
    if ctx.peer_irk is None:
        raise CaseSkipped("needs the phone paired (case 3): its IRK resolves the tag")
    link = await ctx.target.connect()
    tag, challenge = getattr(ctx.target, "identified", (b"", b""))
    await _hang_up(link)
    if not tag:
        raise CaseFailed("it subscribed without writing an identify tag first (1.2 step 5)")
    if resolve_identify(tag, challenge, [(0, ctx.peer_irk)]) is None:
        raise CaseFailed(f"its tag {tag.hex()} does not resolve with the IRK from its CONFIRM")


@case("27", "2.2", "the head unit advertises its service, a token that resolves with its IRK, "
      "and its name in pairing mode", frozenset({HEAD_UNIT}))  # fmt: skip
async def _head_unit_advertising(ctx: Context) -> None:
    if ctx.phone_role != "central":
        raise CaseSkipped("the head unit connects to the phone here: it does not advertise")
    if ctx.peer_irk is None:
        raise CaseSkipped("needs the head unit paired (case 24): its IRK resolves the token")
    scan = getattr(ctx.target, "advertising", None)
    if scan is None:
        raise CaseSkipped("this head unit cannot be scanned from here")
    seen: list[Sighting] = await scan(3)
    if not seen:
        raise CaseFailed("in 3 s no advertising of the service with a 6-byte token of "
                         "company 0xFFFF (2.2)")  # fmt: skip
    tokens = {x.car_token for x in seen if x.car_token is not None}
    if not any(resolve_raw(t, [(0, ctx.peer_irk)]) is not None for t in tokens):
        shown = ", ".join(sorted(t.hex() for t in tokens))
        raise CaseFailed(f"its tokens ({shown}) do not resolve with the IRK from its CONFIRM")
    if not any(x.name for x in seen):
        raise CaseFailed("in pairing mode its scan response carries no name (2.2)")


def _frames_of(s: Session, channel: Channel, type: int) -> list[MessageReceived]:
    return [
        e for e in s.events
        if isinstance(e, MessageReceived) and e.channel is channel and e.type == type
    ]  # fmt: skip


def _icons(s: Session, transfers: set[int]) -> dict[int, tuple[int, bytes]]:
    """The named icon transfers' objects so far: transfer -> (announced total, data)."""
    out: dict[int, tuple[int, bytearray]] = {}
    for e in _frames_of(s, Channel.BULK, m.BulkChunk.type):
        chunk = _decoded(e)
        assert isinstance(chunk, m.BulkChunk)
        if chunk.transfer in transfers:
            if chunk.offset == 0:
                out[chunk.transfer] = (chunk.total, bytearray())
            if chunk.transfer in out:
                out[chunk.transfer][1].extend(chunk.data)
    return {t: (total, bytes(data)) for t, (total, data) in out.items()}


@case("28", "6.1", "version 2: shortcuts only to a head unit that speaks 2; valid, with "
      "their icons; a launch of an unknown one is answered \"unknown\"")  # fmt: skip
async def _shortcuts(ctx: Context) -> None:
    async with reconnected(ctx, versions=[0, 1]) as s:
        await ctx.target.stimulate()
        await trio.sleep(3)
        if _frames_of(s, Channel.CONTROL, m.Shortcuts.type):
            raise CaseFailed("it sent SHORTCUTS to a head unit that speaks only versions 0, 1")
    async with reconnected(ctx, versions=list(m.PROTOCOL_VERSIONS)) as s:
        hello = s.of(HelloReceived)[0]
        assert isinstance(hello, HelloReceived)
        if m.MIN_SHORTCUTS_VERSION not in hello.hello.versions:
            raise CaseSkipped(f"the phone speaks versions {hello.hello.versions}, not 2 "
                              "(shortcuts are version 2's)")  # fmt: skip
        await ctx.target.stimulate()
        with trio.move_on_after(10):
            while not _frames_of(s, Channel.CONTROL, m.Shortcuts.type):
                await trio.sleep(0.05)
        offered = _frames_of(s, Channel.CONTROL, m.Shortcuts.type)
        if not offered:
            raise CaseSkipped("the phone offered no shortcuts within 10 s (they are optional)")
        shortcuts = _decoded(offered[-1])  # CaseFailed if it breaks a limit of 6.1
        assert isinstance(shortcuts, m.Shortcuts)
        transfers = {x.icon for x in shortcuts.shortcuts if x.icon is not None}

        def complete() -> bool:
            icons = _icons(s, transfers)
            return len(icons) == len(transfers) and all(
                len(data) >= total for total, data in icons.values()
            )

        await s.until(f"the icons of {len(transfers)} shortcuts", complete, 20)
        for transfer, (total, data) in _icons(s, transfers).items():
            if total > m.MAX_ICON:
                raise CaseFailed(f"the icon in transfer {transfer} is {total} bytes, over "
                                 f"{m.MAX_ICON}")  # fmt: skip
            if not data.startswith((b"\x89PNG", b"\xff\xd8")):
                raise CaseFailed(f"the icon in transfer {transfer} is neither PNG nor JPEG")
        key = await s.send(m.Launch("cf-no-such"))

        def answered() -> bool:
            return any(e.body.get(0) == key[1]
                       for e in _frames_of(s, Channel.CONTROL, m.LaunchResult.type))  # fmt: skip

        await s.until(f"a launch result for frame {key[1]}", answered, 10)
        result = next(_decoded(e) for e in _frames_of(s, Channel.CONTROL, m.LaunchResult.type)
                      if e.body.get(0) == key[1])  # fmt: skip
        assert isinstance(result, m.LaunchResult)
        if result.outcome is not m.LaunchOutcome.UNKNOWN:
            raise CaseFailed(f"a launch of an id it never offered: {result.outcome.name.lower()}"
                             ", not unknown (2)")  # fmt: skip
