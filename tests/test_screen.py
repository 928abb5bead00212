"""The screen in a real browser: headless Chromium (Debian's) driven by Playwright,
against ``tools.screen_demo`` (the service, its API and two emulated phones on the
virtual radio, in real time). Screenshots go to test-artifacts/screen/."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from bridge.api import screen_launcher
from tests.helpers import needed
from tests.mqtt_helpers import Broker

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "screen"


class Demo:
    """tools.screen_demo in a subprocess; its output lines, as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.screen_demo", "--port", "0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip())
                self._changed.notify_all()
        with self._changed:  # the demo ended
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], limit: float = 60) -> str:
        """The first output line (so far or to come) that ``predicate`` accepts."""
        deadline = time.monotonic() + limit
        with self._changed:
            while True:
                found = next((line for line in self.lines if predicate(line)), None)
                if found is not None:
                    return found
                if self.process.poll() is not None:
                    raise AssertionError("the demo ended:\n" + "\n".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    raise AssertionError("not seen in time; output:\n" + "\n".join(self.lines))


@pytest.fixture
def demo(request: pytest.FixtureRequest) -> Iterator[Demo]:
    demo = Demo(*getattr(request, "param", ()))
    try:
        yield demo
    finally:
        demo.process.terminate()
        demo.process.wait(10)
        if demo.process.stdout is not None:
            demo.process.stdout.close()


@pytest.fixture
def page() -> Iterator[Page]:
    chromium = needed("chromium", "BRIDGE_REQUIRE_BROWSER", "Debian: apt-get install chromium")
    # Playwright runs its own asyncio loop; trio-asyncio (imported by other tests) has
    # replaced asyncio's loop policy with its own, which refuses that: asyncio's default
    # policy for the time of the test.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            try:
                yield browser.new_page(viewport={"width": 800, "height": 480})
            finally:
                browser.close()
    finally:
        asyncio.set_event_loop_policy(policy)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_pair_navigate_pause_and_reply_from_the_screen(demo: Demo, page: Page) -> None:
    url = demo.wait_for(lambda line: line.startswith("screen: ")).split(" ", 1)[1]
    page.goto(url)
    expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
    # both phones ask to pair: the code is shown, confirmed by a tap
    connected: set[str] = set()
    for _ in range(2):
        expect(page.locator("#prompt")).to_be_visible(timeout=30_000)
        code = page.locator("#prompt-code").inner_text()
        assert re.fullmatch(r"\d{3} \d{3}", code), code
        shot(page, "pairing")
        name = page.locator("#prompt-name").inner_text()  # "a new android device"
        assert re.fullmatch(r"a new (android|ios) device", name), name
        page.locator("#confirm").click()
        line = demo.wait_for(
            lambda line: line.startswith("phone ") and line.endswith(": connected")
            and line not in connected, 30,
        )  # fmt: skip
        connected.add(line)
        page.wait_for_function(  # this prompt closed (another may follow)
            "name => document.getElementById('prompt').hidden"
            " || document.getElementById('prompt-name').textContent !== name",
            arg=name, timeout=30_000,
        )  # fmt: skip
    assert "token" not in page.url  # taken out of the address bar
    # one driver's view: navigation from the Pixel, music from the iPad, side by side
    pixel = page.locator('#nav-area[data-device="Pixel 9"]')
    road = pixel.locator(".nav .road")
    expect(road).not_to_be_empty(timeout=30_000)
    first = road.inner_text()
    expect(pixel.locator(".nav .symbol")).not_to_be_empty()
    expect(road).not_to_have_text(first, timeout=30_000)
    shot(page, "navigation")
    # pause on the screen reaches the phone, and the screen shows it paused
    music = page.locator('#media-area[data-device="iPad"]')
    toggle = music.locator(".music .toggle")
    expect(toggle).to_have_attribute("data-state", "playing", timeout=30_000)
    toggle.click()
    demo.wait_for(lambda line: line == "phone iPad: MediaCommandRequest pause", 20)
    expect(toggle).to_have_attribute("data-state", "paused", timeout=20_000)
    expect(toggle).to_have_attribute("aria-label", "Play")
    shot(page, "now-playing")
    # a notification's own buttons: Mark as read and its canned replies; no keyboard
    # while the car may move, and nothing marks it read but its own action
    inbox = page.locator("#messages-area")
    message = inbox.locator('.inbox li[data-id="msg-1"][data-device="iPad"]')
    expect(message).to_be_visible(timeout=30_000)
    expect(message.locator(".buttons button")).to_have_text(
        ["Mark as read", "On my way", "No problem"]
    )
    expect(message.locator(".open")).to_have_count(0)
    missed = inbox.locator('.inbox li[data-id="call-1"]')
    expect(missed.locator(".buttons button")).to_have_text(["Call back"], timeout=30_000)
    head = inbox.locator(".inbox-head")
    expect(head.locator(".count")).to_have_text(re.compile(r"^\d+ messages?, \d+ unread$"))
    # 800x480: what is out of sight is said, and scrolls into view
    expect(head.locator(".more")).to_be_visible(timeout=10_000)
    shot(page, "driving-actions")
    message.locator(".canned-reply", has_text="On my way").click()
    demo.wait_for(lambda line: line == "phone iPad: reply to msg-1: On my way", 20)
    missed.locator(".action").click()
    demo.wait_for(lambda line: "iPad: action call on call-1" in line, 20)
    # parked (the vehicle's side says so through the API), a reply may be typed
    page.evaluate("send({op: 'parked', on: true})")
    message.locator(".open").click()
    expect(page.locator("#reply")).to_be_visible()
    expect(page.locator("#canned button").first).to_have_text("On my way")
    page.locator("#reply-input").fill("See you at the door")
    shot(page, "reply")
    page.locator("#reply-form button[type=submit]").click()
    demo.wait_for(lambda line: line == "phone iPad: reply to msg-1: See you at the door", 20)
    expect(page.locator("#reply")).to_be_hidden()
    expect(message).to_have_class(re.compile(r"\bunread\b"))  # replying read nothing
    message.locator(".action", has_text="Mark as read").click()
    expect(message).not_to_have_class(re.compile(r"\bunread\b"), timeout=20_000)
    shot(page, "after-reply")
    # pairing is switched in the settings, not from the driving view
    expect(page.locator("#pairing")).to_be_hidden()
    page.locator("#settings-open").click()
    expect(page.locator("#pairing")).to_have_text("On")
    shot(page, "settings")
    page.locator("#pairing").click()
    expect(page.locator("#pairing")).to_have_text("Off", timeout=10_000)
    page.locator("#settings-close").click()
    expect(pixel.locator(".nav .eta")).to_contain_text("arrive ")
    expect(page.locator("#nav-area .chips")).to_be_hidden()  # one source: no chips
    page.set_viewport_size({"width": 1024, "height": 600})  # the other common panel
    shot(page, "1024x600")
    # after the route: an arrival card, not an empty navigation column
    arrived = page.locator("#nav-area .arrived")
    expect(arrived).to_be_visible(timeout=60_000)
    expect(arrived.locator(".road")).to_have_text("Elm Rd 42")
    expect(page.locator("#nav-area .nav")).to_be_hidden()
    shot(page, "arrived")


def test_the_screen_asks_for_the_token_when_it_has_none(demo: Demo, page: Page) -> None:
    url = demo.wait_for(lambda line: line.startswith("screen: ")).split(" ", 1)[1]
    page.goto(url.split("#")[0])
    expect(page.locator("#login")).to_be_visible(timeout=10_000)
    page.locator("#login-token").fill("wrong")
    page.locator("#login-form button").click()
    expect(page.locator("#login")).to_be_visible(timeout=10_000)  # refused: asked again
    page.locator("#login-token").fill(url.split("#token=")[1])
    page.locator("#login-form button").click()
    expect(page.locator("#status")).to_have_text("connected", timeout=20_000)


def test_the_kiosk_launcher_opens_the_screen_with_its_token(
    demo: Demo, page: Page, tmp_path: Path
) -> None:
    """What the kiosk unit opens: a file:// page (bridge screen-url --html) that goes on
    to the screen with the token, which never is on Chromium's command line."""
    url = demo.wait_for(lambda line: line.startswith("screen: ")).split(" ", 1)[1]
    launcher = tmp_path / "screen.html"
    launcher.write_text(screen_launcher(url))
    page.goto(f"file://{launcher}")
    expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
    assert page.url.startswith("http://127.0.0.1:") and "token" not in page.url
    shot(page, "kiosk")


@pytest.mark.parametrize("demo", [("--cast", "app-free")], indirect=True)
def test_an_iphone_without_the_app_shows_only_what_works(demo: Demo, page: Page) -> None:
    """It bonds through the same prompt; its call has the iPhone's own Answer and
    Decline, no Reply; its podcast player offers play and pause, not next."""
    url = demo.wait_for(lambda line: line.startswith("screen: ")).split(" ", 1)[1]
    page.goto(url)
    expect(page.locator("#prompt")).to_be_visible(timeout=60_000)
    expect(page.locator("#prompt-name")).to_have_text("an iPhone without the app")
    assert re.fullmatch(r"\d{3} \d{3}", page.locator("#prompt-code").inner_text())
    shot(page, "iphone-bonding")
    page.locator("#confirm").click()
    demo.wait_for(lambda line: line == "iphone Ana's iPhone: bonded", 30)
    call = page.locator('.inbox li[data-device="Ana\'s iPhone"]', has_text="Incoming Call")
    expect(call).to_be_visible(timeout=30_000)
    expect(call.locator("button.action")).to_have_text(["Answer", "Decline"])
    expect(page.locator(".inbox .open")).to_have_count(0)  # no replies without the app
    music = page.locator('#media-area[data-device="Ana\'s iPhone"] .music')
    expect(music.locator(".title")).to_have_text("Monday briefing", timeout=30_000)
    expect(music.locator(".next")).to_be_hidden(timeout=10_000)
    expect(music.locator(".toggle")).to_be_visible()
    shot(page, "iphone-without-app")
    call.locator("button.action", has_text="Answer").click()
    demo.wait_for(lambda line: line.startswith("iphone Ana's iPhone: positive action on"), 20)
    expect(call).to_be_hidden(timeout=20_000)  # the iPhone removed it


@pytest.mark.parametrize("demo", [("--cast", "all", "--yes")], indirect=True)
def test_two_players_the_driver_picks_one_and_the_choice_is_kept(demo: Demo, page: Page) -> None:
    """Navigation from the Pixel, music from the iPad with the app and a podcast from
    the iPhone without it: a source chip per player, the last to start shown first; a
    tap switches, and the choice outlives a reload."""
    url = demo.wait_for(lambda line: line.startswith("screen: ")).split(" ", 1)[1]
    page.goto(url)
    expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
    chips = page.locator("#media-area .chips .chip")
    expect(chips).to_have_count(2, timeout=60_000)
    expect(page.locator("#nav-area")).to_have_attribute("data-device", "Pixel 9", timeout=30_000)
    area = page.locator("#media-area")
    shown = area.get_attribute("data-device")
    other = "Ana's iPhone" if shown == "iPad" else "iPad"
    expect(chips.filter(has_text=shown or "")).to_have_attribute("aria-selected", "true")
    shot(page, "two-players")
    chips.filter(has_text=other).click()
    expect(area).to_have_attribute("data-device", other)
    expect(chips.filter(has_text=other)).to_have_attribute("aria-selected", "true")
    expect(area.locator(".artist")).to_contain_text(other)
    shot(page, "two-players-switched")
    page.reload()
    expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
    expect(area).to_have_attribute("data-device", other, timeout=20_000)  # remembered
    # messages from every device, each tagged with its device
    expect(page.locator(".inbox li .from", has_text="iPad").first).to_be_visible(timeout=30_000)
    expect(page.locator(".inbox li .from", has_text="Ana's iPhone").first).to_be_visible(
        timeout=30_000
    )


TARGETS = """() => [...document.querySelectorAll('button')]
  .filter((b) => b.offsetParent !== null)
  .map((b) => { const r = b.getBoundingClientRect();
    return [b.textContent.trim() || b.getAttribute('aria-label'), r.width, r.height]; })
  .filter(([, w, h]) => w < 64 || h < 64)"""


@pytest.mark.parametrize("demo", [("--yes",)], indirect=True)
def test_the_launcher_opens_each_devices_shortcuts_and_says_what_happened(
    demo: Demo, page: Page
) -> None:
    """Each device's shortcuts in a launcher; a tap opens one on the device, and the
    result is shown: a route home starts, a playlist plays, a call is placed with a Hang
    up; a locked phone's garage asks to unlock it. Every target is at least 64 px, at
    both sizes, by day and by night."""
    url = demo.wait_for(lambda line: line.startswith("screen: ")).split(" ", 1)[1]
    page.goto(url)
    expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
    apps = page.locator("#apps-open")
    expect(apps).to_be_visible(timeout=60_000)
    pixel = page.locator('.launcher-device[data-device="Pixel 9"]')
    ipad = page.locator('.launcher-device[data-device="iPad"]')
    apps.click()
    expect(pixel.locator(".tile")).to_have_text(
        ["Navigate home", "Play Daily Mix", "Call Mum", "Open the garage"], timeout=30_000
    )
    expect(ipad.locator(".tile")).to_have_count(4, timeout=30_000)
    # every icon arrived and is a picture the browser could draw
    page.wait_for_function(
        "() => { const icons = [...document.querySelectorAll('.tile img')];"
        " return icons.length === 8"
        " && icons.every((i) => i.complete && i.naturalWidth === 48); }",
        timeout=30_000,
    )
    assert page.evaluate(TARGETS) == []
    shot(page, "launcher")
    # the Pixel is locked: its garage needs it unlocked, and the screen says so
    pixel.locator('.tile[data-shortcut="garage"]').click()
    result = page.locator("#launch-result")
    expect(result).to_be_visible(timeout=20_000)
    expect(result).to_have_attribute("data-outcome", "locked")
    expect(result).to_have_text("Pixel 9: unlock the phone to open the garage")
    demo.wait_for(lambda line: line == "phone Pixel 9: launch garage: locked", 20)
    shot(page, "launch-locked")
    # the iPad plays its Daily Mix: the launcher closes, the music card shows it
    ipad.locator('.tile[data-shortcut="daily-mix"]').click()
    expect(page.locator("#launcher")).to_be_hidden(timeout=20_000)
    expect(page.locator("#notice")).to_have_text("Play Daily Mix: done on iPad")
    demo.wait_for(lambda line: line == "phone iPad: launch daily-mix: done", 20)
    music = page.locator('#media-area[data-device="iPad"] .music')
    expect(music.locator(".title")).to_have_text("Holocene", timeout=20_000)
    # "Call Mum" from the iPad: the call is on the screen, with its own Hang up
    apps.click()
    ipad.locator('.tile[data-shortcut="call-mum"]').click()
    demo.wait_for(lambda line: line == "phone iPad: launch call-mum: done", 20)
    call = page.locator('.inbox li[data-device="iPad"][data-id="call-out-1"]')
    expect(call.locator(".action")).to_have_text(["Hang up"], timeout=20_000)
    call.locator(".action").click()
    demo.wait_for(lambda line: "iPad: action hang-up on call-out-1" in line, 20)
    expect(call).to_be_hidden(timeout=20_000)
    # "Navigate home" on the Pixel: its route home replaces the drive on the screen
    apps.click()
    pixel.locator('.tile[data-shortcut="nav-home"]').click()
    demo.wait_for(lambda line: line == "phone Pixel 9: launch nav-home: done", 20)
    expect(page.locator("#nav-area .eta")).to_contain_text("Home, 12 Birch Lane", timeout=20_000)
    shot(page, "launch-navigate-home")
    # night: the same screen, darker and warmer; every target still 64 px, both sizes
    page.locator("#settings-open").click()
    page.locator('.theme[data-theme="night"]').click()
    expect(page.locator("body")).to_have_attribute("data-theme", "night")
    page.locator("#settings-close").click()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(0, 0, 0)", background
    assert page.evaluate(TARGETS) == []
    shot(page, "night")
    page.set_viewport_size({"width": 1024, "height": 600})
    assert page.evaluate(TARGETS) == []
    apps.click()
    assert page.evaluate(TARGETS) == []
    shot(page, "launcher-night-1024x600")


def test_the_home_card_runs_scenes_and_shows_the_homes_notices(page: Page, tmp_path: Path) -> None:
    """With a broker (docs/HOME.md), the demo's home answers the car: a scene's button
    publishes its command and shows the home's answer; the home's notice is a message
    from "Home"."""
    broker = Broker(tmp_path)
    demo = Demo("--yes", "--mqtt", f"127.0.0.1:{broker.port}")
    try:
        url = demo.wait_for(lambda line: line.startswith("screen: ")).split(" ", 1)[1]
        page.goto(url)
        expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
        scenes = page.locator("#home-area .scene")
        expect(scenes).to_have_count(2, timeout=30_000)
        expect(scenes.first).to_be_enabled(timeout=30_000)  # the home link is up
        expect(scenes).to_have_text(["Open the garage", "Lights on"])
        scenes.first.click()
        demo.wait_for(lambda line: line == "home: demo-home/garage/set OPEN", 20)
        expect(scenes.first.locator(".reply")).to_have_text("opening", timeout=20_000)
        notice = page.locator('.inbox li.home[data-device="Home"]')
        expect(notice).to_contain_text("The washing machine has finished", timeout=30_000)
        assert page.evaluate(TARGETS) == []
        shot(page, "home-card")
        # the broker goes away: the card says so and its buttons wait
        broker.stop()
        expect(page.locator("#home-area .home-state")).to_contain_text(
            "Home not connected", timeout=30_000
        )
        expect(scenes.first).to_be_disabled()
        shot(page, "home-card-offline")
    finally:
        demo.process.terminate()
        demo.process.wait(10)
        if demo.process.stdout is not None:
            demo.process.stdout.close()
        broker.stop()
