// gossipchat web UI: the daemon's JSON-RPC method table over a WebSocket (/rpc).
//
// Rules:
// - Text from peers (messages, nicks, captions, file names) reaches the page through
//   textContent and attributes only, never innerHTML: it is shown, never parsed.
// - One main socket carries short calls and the subscription. Long calls (fetch,
//   send_image) each get a socket of their own, because a socket answers in order and
//   a 60 s fetch must not hold up sending text.
// - The page keeps only view state in localStorage (the open room, what was read);
//   everything else comes from the daemon again after a reload.

const FIRST_PAGE = 500;        // messages rendered when a room opens
const OLDER_PAGE = 100;        // messages added per scroll back
const UNREAD_SCAN = 200;       // messages looked at per room for unread counts at start
const FETCHES_AT_ONCE = 2;
const ONLINE_WITHIN_MS = 90_000;
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const GROUP_WITHIN_MS = 5 * 60_000;  // one header for a run of messages of one author

const $ = (id) => document.getElementById(id);

class Rpc {
  constructor(url) {
    this.url = url;
    this.nextId = 1;
    this.pending = new Map();
    this.onNotification = () => {};
    this.onClose = () => {};
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => resolve(this);
      ws.onerror = () => reject(new Error("cannot reach the daemon"));
      ws.onmessage = (event) => this.receive(JSON.parse(event.data));
      ws.onclose = () => {
        for (const p of this.pending.values()) p.reject(new Error("connection to the daemon lost"));
        this.pending.clear();
        this.onClose();
      };
    });
  }

  receive(value) {
    if (Array.isArray(value)) {
      value.forEach((v) => this.receive(v));
      return;
    }
    if (value.method !== undefined && value.id === undefined) {
      if (value.method === "progress") {
        const p = this.pending.get(value.params.id);
        if (p && p.onProgress) p.onProgress(value.params.done, value.params.total);
        return;
      }
      this.onNotification(value);
      return;
    }
    const p = this.pending.get(value.id);
    if (!p) return;
    this.pending.delete(value.id);
    if (value.error) {
      const detail = value.error.data ? `: ${value.error.data}` : "";
      const err = new Error(`${value.error.message}${detail}`);
      err.code = value.error.code;
      p.reject(err);
    } else {
      p.resolve(value.result);
    }
  }

  call(method, params = {}, onProgress = null) {
    const id = this.nextId++;
    const body = JSON.stringify({ jsonrpc: "2.0", id, method, params });
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress });
      this.ws.send(body);
    });
  }

  close() {
    this.onClose = () => {};
    this.ws.close();
  }
}

const rpcUrl = `ws://${location.host}/rpc`;
let rpc = null;

async function longCall(method, params, onProgress = null, watch = null) {
  const conn = await new Rpc(rpcUrl).open();
  try {
    const result = conn.call(method, params, onProgress);
    if (watch) watch(conn.ws);
    return await result;
  } finally {
    conn.close();
  }
}

// ---------------------------------------------------------------- view state

const state = {
  me: "",
  nick: "",
  rooms: [],
  current: null,
  messages: [],          // of the current room, oldest first
  ids: new Set(),
  unread: {},
  oldestReached: false,
  loadingOlder: false,
  subscription: null,
};

const stored = {
  get room() { return localStorage.getItem("gc.room"); },
  set room(value) { localStorage.setItem("gc.room", value); },
  lastRead(room) { return Number(localStorage.getItem(`gc.read.${room}`) || 0); },
  markRead(room, ts) {
    if (ts > stored.lastRead(room)) localStorage.setItem(`gc.read.${room}`, String(ts));
  },
};

function showError(err) {
  const box = $("error");
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function shortId(peerId) {
  return peerId ? `[${visible(peerId.slice(-8))}]` : "?";
}

// Bidi controls (the "Trojan Source" set) and line/paragraph separators.
const BIDI_AND_SEPARATORS = new Set([
  0x061c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e,
  0x2066, 0x2067, 0x2068, 0x2069, 0x2028, 0x2029,
]);

// Peer text with every control a display could act on shown as a visible stand-in,
// as clients/render.py does for terminals: C0 as its control picture (ESC as ␛),
// DEL as ␡, C1 and bidi controls as <U+XXXX>. keepLines leaves \n (a message's own
// line breaks, which the page shows as lines of the same message).
function visible(text, keepLines = false) {
  let out = "";
  for (const ch of String(text)) {
    const code = ch.codePointAt(0);
    if (keepLines && ch === "\n") {
      out += ch;
    } else if (code < 0x20) {
      out += String.fromCodePoint(0x2400 + code);
    } else if (code === 0x7f) {
      out += "\u2421";
    } else if ((code >= 0x80 && code <= 0x9f) || BIDI_AND_SEPARATORS.has(code)) {
      out += `<U+${code.toString(16).toUpperCase().padStart(4, "0")}>`;
    } else {
      out += ch;
    }
  }
  return out;
}

function formatTime(ts) {
  const d = new Date(ts);
  const sameDay = d.toDateString() === new Date().toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${d.toLocaleDateString()} ${time}`;
}

function ago(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)}h ago`;
  return new Date(ms).toLocaleDateString();
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

// The thumbnail's type comes from its own first bytes, whatever a peer claims.
function thumbnailUrl(b64) {
  const types = [["/9j/", "image/jpeg"], ["UklGR", "image/webp"], ["iVBORw0KGgo", "image/png"],
                 ["R0lGOD", "image/gif"]];
  for (const [prefix, mime] of types) {
    if (b64 && b64.startsWith(prefix) && /^[A-Za-z0-9+/=]+$/.test(b64)) {
      return `data:${mime};base64,${b64}`;
    }
  }
  return null;
}

// ---------------------------------------------------------------- images

const fetchQueue = [];
let fetchesRunning = 0;

function imageUrl(cid) {
  return `/image/${encodeURIComponent(cid)}`;
}

function loadFullImage(message, img, bar) {
  // Held already (posted here, or fetched by the daemon itself)? Then no fetch.
  // The same URL either way: `probe.src` would read back absolute, and the image
  // element's src would then depend on which way the image came.
  const url = imageUrl(message.image.cid);
  const probe = new Image();
  probe.onload = () => showFull(img, url);
  probe.onerror = () => {
    fetchQueue.push({ message, img, bar });
    pumpFetches();
  };
  probe.src = url;
}

function showFull(img, src) {
  img.src = src;
  img.classList.remove("thumb");
  img.classList.add("full");
  img.dataset.loaded = "full";
}

function pumpFetches() {
  while (fetchesRunning < FETCHES_AT_ONCE && fetchQueue.length) {
    const { message, img, bar } = fetchQueue.shift();
    fetchesRunning += 1;
    bar.hidden = false;
    longCall("fetch", { cid: message.image.cid }, (done, total) => {
      bar.max = total || 1;
      bar.value = done;
    })
      .then(() => {
        showFull(img, imageUrl(message.image.cid));
      })
      .catch((err) => {
        img.dataset.loaded = "failed";
        img.title = `full image not available: ${err.message}`;
      })
      .finally(() => {
        bar.hidden = true;
        fetchesRunning -= 1;
        pumpFetches();
      });
  }
}

// ---------------------------------------------------------------- rendering

function renderMessage(m) {
  const li = document.createElement("li");
  li.className = "message" + (m.author === state.me ? " mine" : "");
  li.dataset.id = m.id;
  li.dataset.kind = m.kind;
  li.dataset.author = m.author;
  li.dataset.ts = String(m.ts);
  li.title = new Date(m.ts).toLocaleString();

  const meta = document.createElement("div");
  meta.className = "meta";
  // The peer id suffix comes first and always shows: no nick can imitate it.
  const suffix = document.createElement("span");
  suffix.className = "suffix";
  suffix.textContent = shortId(m.author);
  suffix.title = m.author;
  const nick = document.createElement("span");
  nick.className = "nick";
  nick.textContent = visible(m.nick || "");
  nick.title = m.author;
  const time = document.createElement("time");
  time.dateTime = new Date(m.ts).toISOString();
  time.textContent = formatTime(m.ts);
  time.title = new Date(m.ts).toLocaleString();
  meta.append(suffix, nick, time);
  li.append(meta);

  if (m.text) {
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = visible(m.text, true);
    li.append(text);
  }

  if (m.kind === "image" && m.image) {
    const figure = document.createElement("figure");
    const link = document.createElement("a");
    link.href = imageUrl(m.image.cid);
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.title = "open the full image";
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = visible(m.image.filename);
    img.dataset.cid = m.image.cid;
    img.dataset.loaded = "thumbnail";
    img.width = Math.min(m.image.width, 360);
    img.height = Math.round(img.width * (m.image.height / Math.max(1, m.image.width)));
    const thumb = thumbnailUrl(m.image.thumbnail);
    if (thumb) img.src = thumb;
    link.append(img);
    const caption = document.createElement("figcaption");
    caption.textContent =
      `${visible(m.image.filename)} · ${m.image.width}×${m.image.height} · ${formatSize(m.image.size)}`;
    const bar = document.createElement("progress");
    bar.hidden = true;
    bar.max = 1;
    bar.value = 0;
    figure.append(link, caption, bar);
    li.append(figure);
    loadFullImage(m, img, bar);
  }
  return li;
}

// A message that follows one of the same author within a few minutes shows no header.
function follows(m, prev) {
  return Boolean(prev) && prev.author === m.author && m.ts - prev.ts < GROUP_WITHIN_MS;
}

// Messages in order, grouped while they are still outside the document (one layout).
function renderRun(messages, before = null) {
  const fragment = document.createDocumentFragment();
  let prev = before;
  for (const m of messages) {
    const li = renderMessage(m);
    li.classList.toggle("cont", follows(m, prev));
    fragment.append(li);
    prev = m;
  }
  return fragment;
}

function renderRooms() {
  const list = $("room-list");
  list.replaceChildren();
  for (const room of state.rooms) {
    const li = document.createElement("li");
    li.dataset.room = room.room;
    if (room.room === state.current) li.className = "current";
    const button = document.createElement("button");
    button.type = "button";
    const name = document.createElement("span");
    name.textContent = `#${room.room}`;
    button.append(name);
    const count = state.unread[room.room] || 0;
    if (count && room.room !== state.current) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = count > 99 ? "99+" : String(count);
      button.append(badge);
    }
    button.addEventListener("click", () => openRoom(room.room));
    li.append(button);
    list.append(li);
  }
}

function nearBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function markRead() {
  const last = state.messages[state.messages.length - 1];
  if (state.current && last) stored.markRead(state.current, last.ts);
  state.unread[state.current] = 0;
}

function setSentinel() {
  $("history-sentinel").textContent = state.oldestReached ? "beginning of the room" : "";
}

// ---------------------------------------------------------------- actions

async function refreshRooms() {
  state.rooms = await rpc.call("rooms");
  renderRooms();
}

async function countUnread() {
  for (const room of state.rooms) {
    const last = stored.lastRead(room.room);
    const recent = await rpc.call("history", { room: room.room, limit: UNREAD_SCAN });
    state.unread[room.room] = recent.filter((m) => m.ts > last && m.author !== state.me).length;
  }
}

async function openRoom(room) {
  state.current = room;
  stored.room = room;
  state.messages = [];
  state.ids = new Set();
  state.oldestReached = false;
  $("room-title").textContent = room ? `#${room}` : "No room";
  $("leave-button").disabled = !room;
  const list = $("message-list");
  list.replaceChildren();
  renderRooms();
  if (!room) {
    setSentinel();
    return;
  }
  const page = await rpc.call("history", { room, limit: FIRST_PAGE });
  if (state.current !== room) return;
  state.messages = page;
  page.forEach((m) => state.ids.add(m.id));
  state.oldestReached = page.length < FIRST_PAGE;
  list.append(renderRun(page));
  setSentinel();
  scrollToBottom();
  markRead();
  renderRooms();
  if (!$("members").hidden) refreshMembers();
  if (!openRoom.firstDone) {
    openRoom.firstDone = true;
    performance.mark("gc-first-render");
  }
  document.body.dataset.rendered = String(page.length);
}

async function loadOlder() {
  if (!state.current || state.oldestReached || state.loadingOlder || !state.messages.length) {
    return;
  }
  state.loadingOlder = true;
  const room = state.current;
  $("history-sentinel").textContent = "loading older messages…";
  try {
    const older = await rpc.call("history",
      { room, limit: OLDER_PAGE, before: state.messages[0].id });
    if (state.current !== room) return;
    const fresh = older.filter((m) => !state.ids.has(m.id));
    fresh.forEach((m) => state.ids.add(m.id));
    state.messages = fresh.concat(state.messages);
    state.oldestReached = older.length < OLDER_PAGE;
    const box = $("messages");
    const before = box.scrollHeight;
    const list = $("message-list");
    const oldFirst = list.firstElementChild;
    list.prepend(renderRun(fresh));
    if (oldFirst && fresh.length) {
      const next = state.messages[fresh.length];
      oldFirst.classList.toggle("cont", follows(next, fresh[fresh.length - 1]));
    }
    box.scrollTop += box.scrollHeight - before;
  } catch (err) {
    showError(err);
  } finally {
    state.loadingOlder = false;
    setSentinel();
  }
}

function onMessage(m) {
  if (m.room === state.current) {
    if (state.ids.has(m.id)) return;
    const stick = nearBottom() || m.author === state.me;
    state.ids.add(m.id);
    const prev = state.messages[state.messages.length - 1];
    state.messages.push(m);
    $("message-list").append(renderRun([m], prev));
    if (stick) scrollToBottom();
    if (document.hasFocus() || m.author === state.me) markRead();
    return;
  }
  if (!state.rooms.some((r) => r.room === m.room)) {
    refreshRooms().catch(showError);
  }
  if (m.author !== state.me) {
    state.unread[m.room] = (state.unread[m.room] || 0) + 1;
    renderRooms();
  }
}

async function refreshMembers() {
  if (!state.current) return;
  const members = await rpc.call("members", { room: state.current });
  const list = $("member-list");
  list.replaceChildren();
  for (const m of members) {
    const li = document.createElement("li");
    const online = m.online ?? (Date.now() - m.last_seen < ONLINE_WITHIN_MS);
    const dot = document.createElement("span");
    dot.className = "dot" + (online ? " online" : "");
    const name = document.createElement("span");
    name.className = "member-nick";
    name.textContent = `${shortId(m.peer_id)} ${visible(m.nick || "")}`.trim()
      + (m.peer_id === state.me ? " (you)" : "");
    name.title = m.peer_id;
    const seen = document.createElement("span");
    seen.className = "seen";
    seen.textContent = online ? "online" : `last seen ${ago(m.last_seen)}`;
    li.append(dot, name, seen);
    list.append(li);
  }
}

async function sendText() {
  const input = $("text-input");
  const text = input.value;
  if (!text.trim() || !state.current) return;
  input.value = "";
  try {
    onMessage(await rpc.call("send", { room: state.current, text }));
  } catch (err) {
    input.value = text;
    showError(err);
  }
}

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function sendImage(file) {
  if (!state.current) {
    showError("join a room first");
    return;
  }
  if (!IMAGE_TYPES.includes(file.type)) {
    showError(`${file.name || "that file"} is not a PNG, JPEG, GIF or WebP image`);
    return;
  }
  const room = state.current;
  const captionInput = $("text-input");
  const caption = captionInput.value.trim();
  captionInput.value = "";
  const box = $("upload");
  const bar = $("upload-progress");
  $("upload-label").textContent = `sending ${file.name || "image"}`;
  bar.value = 0;
  box.hidden = false;
  try {
    const data = await readAsBase64(file);
    const params = { room, data, filename: file.name || "pasted-image" };
    if (caption) params.caption = caption;
    const total = data.length;
    // A WebSocket reports no upload progress; what is still buffered is what is left.
    const watch = (ws) => {
      const tick = () => {
        bar.value = Math.min(1, Math.max(0, 1 - ws.bufferedAmount / total));
        if (ws.readyState === WebSocket.OPEN && ws.bufferedAmount > 0) {
          requestAnimationFrame(tick);
        } else {
          $("upload-label").textContent = `processing ${file.name || "image"}`;
        }
      };
      tick();
    };
    const message = await longCall("send_image", params, null, watch);
    bar.value = 1;
    onMessage(message);
  } catch (err) {
    if (caption && !captionInput.value) captionInput.value = caption;
    showError(err);
  } finally {
    box.hidden = true;
  }
}

async function join(room) {
  const joined = await rpc.call("join", { room });
  await refreshRooms();
  await resubscribe();
  await openRoom(joined.room);
}

async function leave() {
  if (!state.current) return;
  await rpc.call("leave", { room: state.current });
  await refreshRooms();
  await openRoom(state.rooms.length ? state.rooms[0].room : null);
}

async function resubscribe() {
  if (state.subscription) {
    await rpc.call("unsubscribe", { subscription: state.subscription }).catch(() => {});
  }
  const sub = await rpc.call("subscribe", {});
  state.subscription = sub.subscription;
}

// ---------------------------------------------------------------- wiring

function wireUi() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendText();
  });
  $("text-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendText();
    }
  });
  $("image-input").addEventListener("change", (event) => {
    for (const file of event.target.files) sendImage(file);
    event.target.value = "";
  });
  const chat = $("chat");
  chat.addEventListener("dragover", (event) => {
    event.preventDefault();
    chat.classList.add("dragging");
  });
  chat.addEventListener("dragleave", () => chat.classList.remove("dragging"));
  chat.addEventListener("drop", (event) => {
    event.preventDefault();
    chat.classList.remove("dragging");
    for (const file of event.dataTransfer.files) sendImage(file);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])].filter((f) => IMAGE_TYPES.includes(f.type));
    if (files.length) {
      event.preventDefault();
      files.forEach(sendImage);
    }
  });
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("join-input");
    const room = input.value.trim();
    if (!room) return;
    join(room).then(() => { input.value = ""; }, showError);
  });
  $("leave-button").addEventListener("click", () => leave().catch(showError));
  $("nick-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("nick-input").value.trim();
    if (!name) return;
    rpc.call("nick", { name }).then((r) => {
      state.nick = r.nick;
      $("nick-input").value = r.nick;
    }, showError);
  });
  $("members-toggle").addEventListener("click", () => {
    const panel = $("members");
    panel.hidden = !panel.hidden;
    if (!panel.hidden) refreshMembers().catch(showError);
  });
  setInterval(() => {
    if (!$("members").hidden) refreshMembers().catch(() => {});
  }, 15_000);
  window.addEventListener("focus", () => { markRead(); renderRooms(); });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadOlder();
  }, { root: $("messages") }).observe($("history-sentinel"));
}

function setConnection(text, online) {
  const el = $("conn-state");
  el.textContent = text;
  el.classList.toggle("online", online);
}

async function connect() {
  rpc = await new Rpc(rpcUrl).open();
  rpc.onNotification = (note) => {
    if (note.method === "message") {
      onMessage(note.params.message);
    } else if (note.method === "subscription_end") {
      resubscribe().then(() => openRoom(state.current)).catch(showError);
    }
  };
  rpc.onClose = () => {
    setConnection("disconnected", false);
    document.body.dataset.state = "disconnected";
    setTimeout(start, 2000);
  };
  const me = await rpc.call("id");
  state.me = me.peer_id;
  state.nick = me.nick;
  $("nick-input").value = me.nick || "";
  $("peer-id").textContent = me.peer_id;
  state.subscription = null;  // a new connection holds none of the old feeds
  await resubscribe();
  await refreshRooms();
  const wanted = stored.room;
  const room = state.rooms.some((r) => r.room === wanted) ? wanted
    : (state.rooms[0] ? state.rooms[0].room : null);
  await openRoom(room);
  setConnection("online", true);
  document.body.dataset.state = "ready";
  await countUnread();
  state.unread[state.current] = 0;
  renderRooms();
}

async function start() {
  try {
    await connect();
  } catch (err) {
    setConnection("disconnected", false);
    showError(err);
    setTimeout(start, 3000);
  }
}

wireUi();
start();
