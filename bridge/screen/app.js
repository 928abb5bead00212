// The head unit's screen: a client of the local API (docs/API.md). No build step, no
// libraries, nothing from the network but the head unit's own WebSocket.
"use strict";

const SYMBOLS = {
  depart: "↑", name_change: "↑", straight: "↑", destination_straight: "⚑",
  keep_left: "↖", keep_right: "↗", slight_left: "↖", slight_right: "↗",
  turn_left: "←", turn_right: "→", sharp_left: "↙", sharp_right: "↘",
  u_turn_left: "↶", u_turn_right: "↷", on_ramp_left: "↖", on_ramp_right: "↗",
  off_ramp_left: "↖", off_ramp_right: "↗", fork_left: "↖", fork_right: "↗",
  merge_left: "↗", merge_right: "↖", merge: "↑", roundabout_enter: "⟲",
  roundabout_exit: "⟲", roundabout_enter_and_exit: "⟲", ferry_boat: "⛴",
  ferry_train: "⛴", destination: "⚑", destination_left: "⚑", destination_right: "⚑",
};
const LANE = {
  straight: "↑", slight_left: "↖", slight_right: "↗", left: "←", right: "→",
  sharp_left: "↙", sharp_right: "↘", u_turn_left: "↶", u_turn_right: "↷",
};
const UNITS = { meters: "m", kilometers: "km", miles: "mi", feet: "ft", yards: "yd" };

const $ = (id) => document.getElementById(id);
const state = {
  devices: new Map(), prompts: new Map(), pairing: false, parked: false, name: "Head unit",
  home: null,  // the home link (docs/HOME.md): scenes, the home's notices; null without one
};
const MILES = new Set(["miles", "feet", "yards"]);  // a route measured in miles
let socket = null;
let seq = 0;
let retry = 500;
let replying = null; // {device, id}
const waiting = new Map();  // seq -> what to do with the operation's reply

function token() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("bridge-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname); // keep it out of sight
  }
  return sessionStorage.getItem("bridge-token");
}

function send(op, onReply) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    seq += 1;
    if (onReply) waiting.set(seq, onReply);
    socket.send(JSON.stringify({ ...op, seq }));
    return true;
  }
  return false;
}

function connect() {
  const t = token();
  if (!t) { $("login").hidden = false; return; }
  socket = new WebSocket(`ws://${location.host}/api`);
  socket.onopen = () => socket.send(JSON.stringify({ op: "auth", token: t }));
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = (close) => {
    setStatus(false);
    if (close.code === 4001) {
      sessionStorage.removeItem("bridge-token");
      $("login").hidden = false;
      return;
    }
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 8000);
  };
}

function setStatus(online) {
  const status = $("status");
  status.textContent = online ? "connected" : "reconnecting…";
  status.className = `status ${online ? "online" : "offline"}`;
}

function onEvent(event) {
  switch (event.event) {
    case "state":
      retry = 500;
      setStatus(true);
      state.name = event.name;
      state.pairing = event.pairing;
      state.parked = event.parked;
      state.devices = new Map(event.devices.map((d) => [d.id, d]));
      state.prompts = new Map(event.prompts.map((p) => [p.id, p]));
      state.home = event.home || null;
      break;
    case "home":
      state.home = event.home;
      break;
    case "home_notice":
      if (state.home && !state.home.notices.some((n) => n.id === event.id)) {
        state.home.notices.push({ id: event.id, text: event.text, time_ms: event.time_ms });
      }
      break;
    case "device": {  // the device whole the first time, then what changed (docs/API.md)
      const delta = event.device;
      const old = state.devices.get(delta.id);
      if (old && old.now_playing && delta.now_playing && !("art" in delta.now_playing)) {
        delta.now_playing.art = old.now_playing.art;  // the picture is sent when it changes
      }
      state.devices.set(delta.id, old ? Object.assign(old, delta) : delta);
      break;
    }
    case "pairing_request":
      state.prompts.set(event.id, event);
      break;
    case "pairing_closed":
      state.prompts.delete(event.id);
      break;
    case "pairing":
      state.pairing = event.on;
      break;
    case "parked":
      state.parked = event.on;
      if (!event.on) closeReply();  // the car moves: no keyboard
      break;
    case "pairing_attempt_failed": {  // someone may have seen a code this head unit fixed
      const ended = event.pairing ? "" : " Pairing is off now; switch it on to try again.";
      showNotice(`A pairing attempt failed (${event.failed} of ${event.limit}).${ended}`);
      state.pairing = event.pairing;
      break;
    }
    default:
      if ("reply_to" in event) {
        const onReply = waiting.get(event.reply_to);
        waiting.delete(event.reply_to);
        if (onReply) onReply(event);
        else if (!event.ok) console.warn("refused:", event.error);
      }
      return;
  }
  render();
}

function showNotice(text, ok = false) {
  const notice = $("notice");
  notice.textContent = text;
  notice.className = `notice${ok ? " ok" : ""}`;
  notice.hidden = false;
  clearTimeout(showNotice.timer);
  showNotice.timer = setTimeout(() => { notice.hidden = true; }, ok ? 5_000 : 20_000);
}

function render() {
  $("title").textContent = state.name;
  document.title = state.name;
  const pairing = $("pairing");
  pairing.setAttribute("aria-pressed", String(state.pairing));
  pairing.textContent = state.pairing ? "On" : "Off";
  $("parked-state").textContent = state.parked
    ? "The car is parked: replies can be typed."
    : "While the car may move, replies are canned ones only.";
  const devices = [...state.devices.values()];
  const shown = devices.filter((d) => d.connected || d.route || d.now_playing);
  $("empty").hidden = shown.length > 0;
  noteStarts(devices);
  renderNavigation(pick("nav", devices.filter(navigating)));
  renderMusic(pick("media", devices.filter((d) => d.now_playing)));
  renderMessages(devices);
  renderLauncher(devices);
  renderHome();
  applyTheme();
  $("devices").replaceChildren(...shown.map((device) => {
    const li = document.createElement("li");
    li.dataset.name = device.name;
    li.append(dot(device), device.name);
    return li;
  }));
  renderPrompt();
}

// One driver's view: navigation from the device that navigates, music from the one that
// plays, messages from all. With two sources the driver picks one with a chip; the choice
// is kept for that set of devices, and until then the one that started last is shown.
const started = { nav: new Map(), media: new Map() };  // device id -> when it started

function navigating(device) {
  const route = device.route;
  return Boolean(device.maneuver) || Boolean(route && route.state !== "inactive");
}

function noteStarts(devices) {
  for (const device of devices) {
    const sources = { nav: navigating(device), media: Boolean(device.now_playing) };
    const playing = device.now_playing && device.now_playing.state === "playing";
    for (const kind of ["nav", "media"]) {
      const was = started[kind].get(device.id);
      if (!sources[kind]) started[kind].delete(device.id);
      else if (was === undefined || (kind === "media" && playing && !was.playing)) {
        started[kind].set(device.id, { at: performance.now(), playing });
      } else if (kind === "media") was.playing = playing;
    }
  }
}

function choiceKey(kind, sources) {
  return `bridge-source:${kind}:${sources.map((d) => d.id).sort().join(",")}`;
}

function pick(kind, sources) {
  const area = $(kind === "nav" ? "nav-area" : "media-area");
  area.hidden = sources.length === 0;
  const chosenId = localStorage.getItem(choiceKey(kind, sources));
  let chosen = sources.find((d) => d.id === chosenId);
  if (!chosen) {
    const at = (d) => (started[kind].get(d.id) || { at: 0 }).at;
    chosen = sources.slice().sort((a, b) => at(b) - at(a))[0];
  }
  const chips = area.querySelector(".chips");
  chips.hidden = sources.length < 2;
  chips.replaceChildren(...sources.map((device) => {
    const chip = button("chip", device.name, () => {
      localStorage.setItem(choiceKey(kind, sources), device.id);
      render();
    });
    chip.setAttribute("role", "tab");
    chip.setAttribute("aria-selected", String(device === chosen));
    return chip;
  }));
  area.dataset.device = chosen ? chosen.name : "";
  return chosen;
}

function dot(device) {
  const span = document.createElement("span");
  span.className = `dot${device.connected ? " on" : ""}`;
  return span;
}

function renderNavigation(device) {
  if (!device) return;
  const area = $("nav-area");
  area.querySelector(".source").textContent = `from ${device.name}`;
  const nav = area.querySelector(".nav");
  const arrivedCard = area.querySelector(".arrived");
  const arrived = device.route && device.route.state === "arrived";
  arrivedCard.hidden = !arrived;
  if (arrived) arrivedCard.querySelector(".road").textContent = device.route.destination || "";
  const maneuver = arrived ? null : device.maneuver;
  nav.hidden = !maneuver;
  if (!maneuver) return;
  const symbol = nav.querySelector(".symbol");
  const image = nav.querySelector(".maneuver-image");
  symbol.textContent = SYMBOLS[maneuver.type] || "↑";
  symbol.hidden = Boolean(maneuver.image);  // the phone's own picture of the maneuver
  image.hidden = !maneuver.image;
  if (maneuver.image && image.getAttribute("src") !== maneuver.image) image.src = maneuver.image;
  const exit = maneuver.roundabout_exit ? ` · exit ${maneuver.roundabout_exit}` : "";
  nav.querySelector(".distance").textContent =
    `${maneuver.display_distance} ${UNITS[maneuver.display_unit] || ""}${exit}`;
  nav.querySelector(".road").textContent = maneuver.road;
  nav.querySelector(".lanes").replaceChildren(...maneuver.lanes.map((lane) => {
    const span = document.createElement("span");
    span.className = `lane${lane.recommended ? " recommended" : ""}`;
    span.textContent = lane.directions.map((d) => LANE[d] || "↑").join("");
    return span;
  }));
  const route = device.route;
  const parts = [];
  if (route && route.remaining_s != null) {
    const arrival = new Date(Date.now() + route.remaining_s * 1000);
    parts.push(`arrive ${arrival.toTimeString().slice(0, 5)}`);
  }
  if (route && route.remaining_m != null) {  // in the unit the maneuver is given in
    parts.push(MILES.has(maneuver.display_unit)
      ? `${(route.remaining_m / 1609.344).toFixed(1)} mi`
      : `${(route.remaining_m / 1000).toFixed(1)} km`);
  }
  if (route && route.destination) parts.push(route.destination);
  nav.querySelector(".eta").textContent = parts.join(" · ");
}

function renderMusic(device) {
  const music = $("media-area").querySelector(".music");
  music.dataset.device = device ? device.id : "";
  if (!device) return;
  const playing = device.now_playing;
  music.querySelector(".title").textContent = playing.title;
  music.querySelector(".artist").textContent = `${playing.artist} · ${device.name}`;
  const art = music.querySelector(".art");
  art.onerror = () => { art.style.visibility = "hidden"; };
  art.style.visibility = "";
  if (art.getAttribute("src") !== (playing.art || "")) art.src = playing.art || "";
  art.hidden = !(device.offers || []).includes("album-art");  // AMS carries no art
  const toggle = music.querySelector(".toggle");
  toggle.dataset.state = playing.state === "playing" ? "playing" : "paused";
  toggle.setAttribute("aria-label", playing.state === "playing" ? "Pause" : "Play");
  music.dataset.position = playing.position_ms ?? 0;
  music.dataset.duration = playing.duration_ms ?? 0;
  music.dataset.playing = playing.state === "playing";
  music.dataset.since = Date.now();
  // only the commands the device takes now (an iPhone's player lists them; null: any)
  const offered = device.media_commands;
  const takes = (command) => offered == null || offered.includes(command);
  music.querySelector(".next").hidden = !takes("next");
  music.querySelector(".previous").hidden = !takes("previous");
  toggle.hidden = !(takes("pause") || takes("play") || takes("toggle"));
}

// The home's notices are messages from "Home", without buttons.
const HOME = { id: "home", name: "Home", kind: "home", offers: [] };

function renderMessages(devices) {
  const area = $("messages-area");
  const inbox = area.querySelector(".inbox");
  const notes = [];
  for (const device of devices) {
    const replies = (device.offers || []).includes("replies");  // none without the app
    for (const note of device.inbox) notes.push({ device, note, replies });
  }
  for (const notice of (state.home && state.home.notices) || []) {
    notes.push({ device: HOME, replies: false, note: {
      id: `home-${notice.id}`, app: "Home", category: "other", sender: "Home",
      text: notice.text, time_ms: notice.time_ms, read: true, actions: [], canned_replies: [],
    } });
  }
  notes.sort((a, b) => (b.note.category === "incoming_call") - (a.note.category === "incoming_call")
    || b.note.time_ms - a.note.time_ms);
  area.hidden = notes.length === 0;
  inbox.replaceChildren(...notes.map(({ device, note, replies }) =>
    renderNote(device, note, replies)));
  const unread = notes.filter(({ note }) => !note.read).length;
  area.querySelector(".count").textContent =
    `${notes.length} ${notes.length === 1 ? "message" : "messages"}, ${unread} unread`;
  inbox.onscroll = moreBelow;
  moreBelow();
}

// At 800x480 the list may not hold every message: say so while some are out of sight.
function moreBelow() {
  const area = $("messages-area");
  const inbox = area.querySelector(".inbox");
  const hidden = inbox.scrollHeight - inbox.scrollTop - inbox.clientHeight > 4;
  area.querySelector(".more").hidden = !hidden;
}

function button(className, label, onclick) {
  const node = document.createElement("button");
  node.className = className;
  node.textContent = label;
  node.onclick = onclick;
  return node;
}

// A notification's buttons are its own: its actions (a reply action is what the canned
// replies and, parked, the keyboard do), its canned replies; nothing marks it read but
// its own "mark as read" action. An incoming call is a card with large buttons.
function renderNote(device, note, replies) {
  const li = document.createElement("li");
  const call = note.category === "incoming_call";
  li.className = `${note.read ? "" : "unread"}${call ? " call" : ""}${device === HOME ? " home" : ""}`;
  li.dataset.id = note.id;
  li.dataset.device = device.name;
  const text = document.createElement("div");
  text.className = "text";
  const sender = document.createElement("div");
  sender.className = "sender";
  sender.textContent = note.sender || note.title || note.app;
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = device.name;
  if (device !== HOME) sender.append(from);  // a notice is the home's: no device to name
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = note.text;
  text.append(sender, body);
  li.append(text);
  const buttons = document.createElement("div");
  buttons.className = "buttons";
  for (const action of note.actions) {
    if (action.kind === "reply") continue;
    // "mark as read" marks it read here and on the phone; the others are the phone's
    const op = action.kind === "mark_read" && device.kind !== "ancs"
      ? { op: "mark_read", device: device.id, id: note.id }
      : { op: "action", device: device.id, id: note.id, action: action.id };
    buttons.append(button(call ? "action big" : "action", action.label, () => send(op)));
  }
  if (replies) {
    note.canned_replies.forEach((reply, index) => buttons.append(button("canned-reply", reply,
      () => send({ op: "reply", device: device.id, id: note.id, canned: index }))));
    if (state.parked && !call) {
      buttons.append(button("open", "Type a reply", () => openReply(device.id, note)));
    }
  }
  li.append(buttons);
  return li;
}

// The phone's apps on the car screen: each device's shortcuts; a tap opens one on the
// device, and what the device answered is shown (done, or why not: locked, unknown).
function renderLauncher(devices) {
  const offering = devices.filter((d) => d.connected && (d.shortcuts || []).length);
  $("apps-open").hidden = offering.length === 0;
  const key = JSON.stringify(offering.map((d) => [d.id, d.name, d.shortcuts.map((s) =>
    [s.id, s.label, s.kind, s.icon ? s.icon.length : 0])]));
  if (key === renderLauncher.shown) return;  // unchanged: keep the tiles (and their state)
  renderLauncher.shown = key;
  $("launcher-devices").replaceChildren(...offering.map((device) => {
    const section = document.createElement("section");
    section.className = "launcher-device";
    section.dataset.device = device.name;
    const title = document.createElement("h3");
    title.textContent = device.name;
    const tiles = document.createElement("div");
    tiles.className = "tiles";
    for (const shortcut of device.shortcuts) {
      const tile = document.createElement("button");
      tile.className = `tile ${shortcut.kind}`;
      tile.dataset.shortcut = shortcut.id;
      if (shortcut.icon) {
        const img = document.createElement("img");
        img.src = shortcut.icon;
        img.alt = "";
        tile.append(img);
      }
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = shortcut.label;
      tile.append(label);
      tile.onclick = () => launch(device, shortcut, tile);
      tiles.append(tile);
    }
    section.append(title, tiles);
    return section;
  }));
}

function launch(device, shortcut, tile) {
  const result = $("launch-result");
  tile.setAttribute("aria-busy", "true");
  const sent = send({ op: "launch", device: device.id, shortcut: shortcut.id }, (reply) => {
    tile.removeAttribute("aria-busy");
    if (reply.ok) {
      $("launcher").hidden = true;
      result.hidden = true;
      showNotice(`${shortcut.label}: done on ${device.name}`, true);
    } else {
      result.dataset.outcome = reply.outcome || "failed";
      result.textContent = reply.error;
      result.hidden = false;
    }
  });
  if (!sent) tile.removeAttribute("aria-busy");
}

// The home card: the owner's scenes; a tap publishes the scene's command, and the
// home's answer (when the scene has one) shows under its label.
function renderHome() {
  const area = $("home-area");
  const home = state.home;
  area.hidden = !home || home.scenes.length === 0;
  if (area.hidden) return;
  area.querySelector(".scenes").replaceChildren(...home.scenes.map((scene) => {
    const node = document.createElement("button");
    node.className = "scene";
    node.dataset.scene = scene.id;
    node.disabled = !home.connected;
    const label = document.createElement("span");
    label.textContent = scene.label;
    node.append(label);
    if (scene.reply) {
      const reply = document.createElement("span");
      reply.className = "reply";
      reply.textContent = scene.reply;
      node.append(reply);
    }
    node.onclick = () => send({ op: "scene", id: scene.id }, (answer) => {
      if (!answer.ok) showNotice(answer.error);
    });
    return node;
  }));
  const line = area.querySelector(".home-state");
  line.hidden = home.connected;
  line.textContent = home.connected ? "" : `Home not connected${home.error ? `: ${home.error}` : ""}`;
}

// Night: a darker, warmer screen. "auto" follows the clock (19:00 to 07:00).
function applyTheme() {
  const choice = localStorage.getItem("bridge-theme") || "auto";
  const hour = new Date().getHours();
  const night = choice === "night" || (choice === "auto" && (hour >= 19 || hour < 7));
  document.body.classList.toggle("night", night);
  document.body.dataset.theme = night ? "night" : "day";
  for (const option of document.querySelectorAll(".theme")) {
    option.setAttribute("aria-checked", String(option.dataset.theme === choice));
  }
}

function renderPrompt() {
  const prompt = [...state.prompts.values()][0];
  $("prompt").hidden = !prompt;
  if (!prompt) return;
  $("prompt-name").textContent = prompt.name;
  $("prompt-again").hidden = !prompt.re_pairing;  // this car knew it; it forgot the car
  $("prompt-code").textContent = prompt.code;
  $("confirm").onclick = () => send({ op: "confirm", id: prompt.id, accept: true });
  $("reject").onclick = () => send({ op: "confirm", id: prompt.id, accept: false });
}

function openReply(device, note) {
  replying = { device, id: note.id };
  $("reply-to").textContent = note.sender || note.app;
  $("reply-text").textContent = note.text;
  $("canned").replaceChildren(...note.canned_replies.map((text, index) => {
    const button = document.createElement("button");
    button.textContent = text;
    button.onclick = () => { send({ op: "reply", device, id: note.id, canned: index }); closeReply(); };
    return button;
  }));
  $("reply-input").value = "";
  $("reply").hidden = false;  // opening it marks nothing read
}

function closeReply() {
  replying = null;
  $("reply").hidden = true;
}

function tick() {
  const now = new Date();
  $("clock").textContent = now.toTimeString().slice(0, 5);
  for (const music of document.querySelectorAll(".music")) {
    const duration = Number(music.dataset.duration);
    if (!duration) continue;
    let position = Number(music.dataset.position);
    if (music.dataset.playing === "true") position += Date.now() - Number(music.dataset.since);
    music.querySelector(".bar").style.width = `${Math.min(100, (100 * position) / duration)}%`;
  }
}

$("pairing").onclick = () => send({ op: "pairing", on: !state.pairing });
{
  const music = $("media-area").querySelector(".music");
  const media = (command) => send({ op: "media", device: music.dataset.device, command });
  music.querySelector(".next").onclick = () => media("next");
  music.querySelector(".previous").onclick = () => media("previous");
  const toggle = music.querySelector(".toggle");  // says what it will do: pause or play
  toggle.onclick = () => media(toggle.dataset.state === "playing" ? "pause" : "play");
}
$("settings-open").onclick = () => { $("settings").hidden = false; };
$("apps-open").onclick = () => { $("launch-result").hidden = true; $("launcher").hidden = false; };
$("launcher-close").onclick = () => { $("launcher").hidden = true; };
for (const option of document.querySelectorAll(".theme")) {
  option.onclick = () => { localStorage.setItem("bridge-theme", option.dataset.theme); applyTheme(); };
}
$("settings-close").onclick = () => { $("settings").hidden = true; };
$("reply-close").onclick = closeReply;
$("reply-form").onsubmit = (event) => {
  event.preventDefault();
  const text = $("reply-input").value.trim();
  if (replying && text) send({ op: "reply", device: replying.device, id: replying.id, text });
  closeReply();
};
$("login-form").onsubmit = (event) => {
  event.preventDefault();
  sessionStorage.setItem("bridge-token", $("login-token").value.trim());
  $("login").hidden = true;
  connect();
};
setInterval(tick, 500);
setInterval(applyTheme, 60_000);
tick();
applyTheme();
connect();
