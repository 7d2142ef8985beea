// The chat with one person: history from the REST API (newest first, older pages on
// scrolling up), live messages, typing and read state from the socket.

import { booted, inbox, me, socket } from "./app.js";
import {
  ApiError,
  api,
  clockTime,
  dayHeading,
  dayKey,
  el,
  fullTime,
  linkify,
  newClientId,
  paintAvatar,
  presenceText,
} from "./util.js";

const MAX_BODY = 4000;
const SEND_TIMEOUT_MS = 10_000;
const TYPING_SEND_EVERY_MS = 3_000;
const TYPING_SHOW_MS = 6_000;
const NEAR_BOTTOM_PX = 80;
const SHOW_JUMP_PX = 240;
const LOAD_OLDER_PX = 400;
// Messages from one sender closer together than this share a bubble group.
const GROUP_GAP_MS = 5 * 60_000;

const root = document.querySelector("[data-chat]");
const peer = root.dataset.peer;
const scroller = root.querySelector("[data-scroller]");
const list = root.querySelector("[data-messages]");
const edge = root.querySelector("[data-history-edge]");
const typingRow = root.querySelector("[data-typing]");
const jumpButton = root.querySelector("[data-jump-latest]");
const jumpCount = root.querySelector("[data-jump-count]");
const form = root.querySelector("[data-composer]");
const input = root.querySelector("[data-composer-input]");
const sendButton = root.querySelector("[data-send]");
const charCount = root.querySelector("[data-char-count]");
const statusLine = root.querySelector("[data-peer-status]");
const peerDot = root.querySelector("[data-peer-dot]");

for (const node of root.querySelectorAll("[data-avatar]")) paintAvatar(node, node.dataset.avatar);

// --- State ------------------------------------------------------------------------------

/** A message on screen. Mine start without an id ("sending") and get one on ack. */
const byId = new Map();
const byClientId = new Map();
let records = [];
let pendingSeq = 0;

let peerInfo = { online: false, last_seen: null };
let peerReadUpTo = 0;
let readSentUpTo = 0;
let nextUrl = `/api/conversations/${encodeURIComponent(peer)}/messages/`;
let loadingOlder = false;
let historyLoaded = false;
let dividerBeforeId = null;
let dividerStale = false; // the user has read past it; the next unread batch moves it
let unseenBelow = 0;
let stuckToBottom = true;
let peerTyping = false;
let typingTimer = null;
let lastTypingSent = 0;

const draftKey = `messenger:draft:${me}:${peer}`;

function belongsHere(message) {
  return (
    (message.sender === peer && message.recipient === me) || (message.sender === me && message.recipient === peer)
  );
}

// --- Icons (built as SVG nodes, no markup parsing) -------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const ICONS = {
  sending: "M12 4a8 8 0 1 0 0 16 8 8 0 0 0 0-16Zm0 1.8a6.2 6.2 0 1 1 0 12.4 6.2 6.2 0 0 1 0-12.4Zm-.9 2.2v4.8l3.9 2.3.9-1.5-3-1.8V8z",
  sent: "M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z",
  read: "m18 7-1.4-1.4-6.3 6.3 1.4 1.4zm4.2-1.4L11.7 16.2 7.5 12l-1.4 1.4 5.6 5.6 12-12zM.4 13.4 6 19l1.4-1.4L1.8 12z",
  failed: "M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18Zm1 14h-2v-2h2zm0-4h-2V7h2z",
};

function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "16");
  svg.setAttribute("height", "16");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

const STATUS_LABEL = { sending: "Sending", sent: "Sent", read: "Read", failed: "Not sent" };

// --- Message elements -----------------------------------------------------------------

function statusOf(record) {
  if (record.id === null) return record.failed ? "failed" : "sending";
  return record.id <= peerReadUpTo ? "read" : "sent";
}

function buildMessage(record) {
  const li = el("li", { class: `msg ${record.mine ? "mine" : "theirs"}` });
  const body = el("div", { class: "msg-body" });
  body.append(linkify(record.message.body));
  const time = el("time", { class: "msg-time" });
  const meta = el("span", { class: "msg-meta" }, time);
  const bubble = el(
    "div",
    { class: "bubble" },
    el("span", { class: "visually-hidden", text: record.mine ? "You:" : `${peer}:` }),
    body,
    meta,
  );
  li.append(bubble);
  record.el = li;
  record.parts = { time };
  if (record.mine) {
    const status = el("span", { class: "msg-status", role: "img" });
    meta.append(status);
    const reason = el("span", { class: "failed-reason" });
    const retry = el("button", { type: "button", class: "link-button retry", text: "Retry" });
    retry.addEventListener("click", () => transmit(record));
    const failed = el("div", { class: "msg-failed", role: "alert" }, reason, " ", retry);
    failed.hidden = true;
    li.append(failed);
    Object.assign(record.parts, { status, reason, failed });
  }
  updateMessage(record);
  return li;
}

function updateMessage(record) {
  const { el: li, parts, message } = record;
  li.dataset.id = record.id ?? "";
  li.dataset.sender = message.sender;
  const date = new Date(message.created_at);
  parts.time.dateTime = message.created_at;
  parts.time.title = fullTime(date);
  parts.time.textContent = clockTime(date);
  if (!record.mine) return;
  li.dataset.clientId = record.clientId || "";
  const status = statusOf(record);
  if (li.dataset.status === status && parts.reason.textContent === (record.error || "Not sent.")) return;
  li.dataset.status = status;
  parts.status.replaceChildren(icon(status));
  parts.status.setAttribute("aria-label", STATUS_LABEL[status]);
  parts.status.title = STATUS_LABEL[status];
  parts.failed.hidden = status !== "failed";
  parts.reason.textContent = record.error || "Not sent.";
}

function addRecord(record) {
  buildMessage(record);
  if (record.id !== null) byId.set(record.id, record);
  if (record.clientId) byClientId.set(record.clientId, record);
  records.push(record);
}

function sortRecords() {
  records.sort((a, b) => {
    if (a.id === null || b.id === null) {
      if (a.id !== null) return -1;
      if (b.id !== null) return 1;
      return a.seq - b.seq;
    }
    return a.id - b.id;
  });
}

/** A message from the API or the socket, unless it is on screen already. Returns the
 * record when it is new. */
function acceptMessage(message) {
  if (byId.has(message.id)) return null;
  const mine = message.sender === me;
  if (mine && message.client_id && byClientId.has(message.client_id)) {
    confirm(byClientId.get(message.client_id), message);
    return null;
  }
  const record = { id: message.id, clientId: message.client_id, mine, message, failed: false };
  addRecord(record);
  return record;
}

function confirm(record, message) {
  clearTimeout(record.timer);
  if (record.id !== null) return;
  record.id = message.id;
  record.message = message;
  record.failed = false;
  record.error = null;
  byId.set(message.id, record);
  updateMessage(record);
}

// --- Layout: day headings, groups, the "new messages" divider ----------------------------

const dayNodes = new Map();
const divider = el("li", { class: "unread-divider", dataset: { unreadDivider: "" } }, el("span", { text: "New messages" }));

function dayNode(date, used) {
  const key = dayKey(date);
  let node = used.has(key) ? null : dayNodes.get(key);
  used.add(key);
  if (!node) {
    node = el("li", { class: "day-heading" }, el("span"));
    dayNodes.set(key, node);
  }
  node.firstChild.textContent = dayHeading(date);
  return node;
}

function render() {
  sortRecords();
  const wanted = [];
  let previousDay = null;
  let previous = null;
  const usedDays = new Set(); // a day seen twice (clock skew) gets a second heading
  for (const record of records) {
    const date = new Date(record.message.created_at);
    const day = dayKey(date);
    if (day !== previousDay) {
      wanted.push(dayNode(date, usedDays));
      previousDay = day;
      if (previous) previous.el.classList.add("group-end");
      previous = null;
    }
    if (dividerBeforeId !== null && record.id === dividerBeforeId) {
      wanted.push(divider);
      if (previous) previous.el.classList.add("group-end");
      previous = null;
    }
    const continues =
      previous !== null &&
      previous.message.sender === record.message.sender &&
      date - new Date(previous.message.created_at) < GROUP_GAP_MS;
    record.el.classList.toggle("group-start", !continues);
    if (previous) previous.el.classList.toggle("group-end", !continues);
    wanted.push(record.el);
    previous = record;
  }
  if (previous) previous.el.classList.add("group-end");
  // Move only what is out of place: focus and text selection survive.
  let cursor = list.firstChild;
  for (const node of wanted) {
    if (node === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(node, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}

// --- Scrolling ---------------------------------------------------------------------------

function distanceFromBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
}

function scrollToBottom(smooth = false) {
  scroller.scrollTo({ top: scroller.scrollHeight, behavior: smooth ? "smooth" : "auto" });
  stuckToBottom = true;
}

function updateJumpButton() {
  const far = distanceFromBottom() > SHOW_JUMP_PX;
  if (!far && distanceFromBottom() < NEAR_BOTTOM_PX) unseenBelow = 0;
  jumpButton.hidden = !far;
  jumpCount.hidden = unseenBelow === 0;
  jumpCount.textContent = String(unseenBelow);
  jumpButton.setAttribute(
    "aria-label",
    unseenBelow ? `Jump to the latest message, ${unseenBelow} new` : "Jump to the latest message",
  );
}

scroller.addEventListener(
  "scroll",
  () => {
    stuckToBottom = distanceFromBottom() < NEAR_BOTTOM_PX;
    updateJumpButton();
    markRead();
    if (historyLoaded && scroller.scrollTop < LOAD_OLDER_PX) loadOlder();
  },
  { passive: true },
);

// The phone keyboard, a new line in the composer or a window resize shrink the list:
// whoever was at the bottom stays there.
new ResizeObserver(() => stuckToBottom && scrollToBottom()).observe(scroller);

jumpButton.addEventListener("click", () => {
  scrollToBottom(true);
  unseenBelow = 0;
  updateJumpButton();
  input.focus({ preventScroll: true });
});

// --- History --------------------------------------------------------------------------------

function showEdge() {
  edge.replaceChildren();
  if (nextUrl) {
    edge.append(el("span", { class: "spinner", "aria-hidden": "true" }), " Loading older messages…");
  } else if (records.length) {
    edge.append(`This is the beginning of your conversation with ${peer}.`);
  } else {
    edge.classList.add("empty-chat");
    edge.append(
      el("span", { class: "empty-chat-title", text: "No messages yet" }),
      el("span", { text: `Say hello to ${peer}!` }),
    );
  }
  if (records.length) edge.classList.remove("empty-chat");
}

async function loadOlder() {
  if (loadingOlder || !nextUrl) return;
  loadingOlder = true;
  try {
    const page = await api(nextUrl);
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    for (const message of page.results) acceptMessage(message);
    nextUrl = page.next;
    render();
    showEdge();
    // Keep what the user is looking at in place while older messages appear above.
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  } catch {
    edge.replaceChildren("Could not load older messages. ");
    edge.append(el("button", { type: "button", class: "link-button", text: "Try again", onclick: () => loadOlder() }));
  } finally {
    loadingOlder = false;
  }
  // Short histories do not fill the screen, so no scroll would ever ask for more.
  if (nextUrl && scroller.scrollTop < LOAD_OLDER_PX && historyLoaded) requestAnimationFrame(() => loadOlder());
}

/** The "new messages" divider goes before the oldest of the `unread` newest messages of the peer. */
function placeDivider(unread) {
  if (!unread) return;
  let count = 0;
  for (let i = records.length - 1; i >= 0; i -= 1) {
    if (records[i].mine || records[i].id === null) continue;
    dividerBeforeId = records[i].id;
    count += 1;
    if (count >= unread) break;
  }
}

async function loadHistory() {
  const first = api(nextUrl);
  await booted;
  const conversation = inbox.get(peer);
  if (conversation) {
    peerInfo = conversation.peer;
    peerReadUpTo = conversation.peer_read_up_to || 0;
  } else {
    lookUpPeer();
  }
  showPresence();
  let page;
  try {
    page = await first;
  } catch {
    edge.replaceChildren("Could not load messages. ");
    edge.append(el("button", { type: "button", class: "link-button", text: "Try again", onclick: () => location.reload() }));
    return;
  }
  for (const message of page.results) acceptMessage(message);
  nextUrl = page.next;
  sortRecords();
  const unread = conversation ? conversation.unread_count : 0;
  placeDivider(unread);
  if (!unread) readSentUpTo = latestPeerId();
  render();
  for (const record of records) updateMessage(record);
  showEdge();
  historyLoaded = true;
  // Open at the first unread message when there are more than a screenful of them.
  if (dividerBeforeId !== null && divider.offsetTop < scroller.scrollHeight - scroller.clientHeight) {
    scroller.scrollTop = Math.max(0, divider.offsetTop - 24);
    stuckToBottom = distanceFromBottom() < NEAR_BOTTOM_PX;
  } else {
    scrollToBottom();
  }
  updateJumpButton();
  markRead();
  if (nextUrl && scroller.scrollTop < LOAD_OLDER_PX) loadOlder();
}

// --- Read state -----------------------------------------------------------------------------

function latestPeerId() {
  for (let i = records.length - 1; i >= 0; i -= 1) {
    if (!records[i].mine && records[i].id !== null) return records[i].id;
  }
  return 0;
}

function reading() {
  return historyLoaded && document.visibilityState === "visible" && distanceFromBottom() < NEAR_BOTTOM_PX;
}

function markRead() {
  if (!reading()) return;
  const upTo = latestPeerId();
  if (upTo <= readSentUpTo) return;
  if (socket.send({ type: "read", peer, up_to: upTo })) {
    readSentUpTo = upTo;
    dividerStale = true;
    inbox.markRead(peer);
  }
}

inbox.activePeer = peer;
inbox.isReading = reading;
document.addEventListener("visibilitychange", markRead);
window.addEventListener("focus", markRead);

// --- Presence and typing ----------------------------------------------------------------------

async function lookUpPeer() {
  // No conversation yet: ask the directory (search matches parts of names).
  try {
    const page = await api(`/api/users/?search=${encodeURIComponent(peer)}`);
    const found = page.results.find((user) => user.username === peer);
    if (found) {
      peerInfo = found;
      showPresence();
    }
  } catch {
    /* the header just stays without a status */
  }
}

function showPresence() {
  peerDot.classList.toggle("online", Boolean(peerInfo.online));
  statusLine.classList.toggle("typing", peerTyping);
  statusLine.classList.toggle("online", !peerTyping && Boolean(peerInfo.online));
  statusLine.textContent = peerTyping ? "typing…" : presenceText(peerInfo.online, peerInfo.last_seen);
}
setInterval(showPresence, 30_000);

function setPeerTyping(on) {
  clearTimeout(typingTimer);
  const keepBottom = stuckToBottom;
  peerTyping = on;
  typingRow.hidden = !on;
  showPresence();
  if (on) typingTimer = setTimeout(() => setPeerTyping(false), TYPING_SHOW_MS);
  if (keepBottom) scrollToBottom();
}

socket.addEventListener("typing", ({ detail }) => {
  if (detail.from === peer) setPeerTyping(true);
});

socket.addEventListener("presence", ({ detail }) => {
  if (detail.user !== peer) return;
  peerInfo = { ...peerInfo, online: detail.online, last_seen: detail.last_seen ?? peerInfo.last_seen };
  showPresence();
});

// --- Live messages -----------------------------------------------------------------------------

socket.addEventListener("message", ({ detail: message }) => {
  if (!belongsHere(message)) return;
  const wasAtBottom = stuckToBottom;
  const record = acceptMessage(message);
  if (!record) {
    render();
    return;
  }
  if (!record.mine) {
    setPeerTyping(false);
    if (!reading() && (dividerBeforeId === null || dividerStale)) {
      dividerBeforeId = record.id;
      dividerStale = false;
    }
  }
  render();
  showEdge();
  if (wasAtBottom) scrollToBottom(true);
  else if (!record.mine) unseenBelow += 1;
  updateJumpButton();
  markRead();
});

socket.addEventListener("ack", ({ detail }) => {
  const record = byClientId.get(detail.client_id);
  if (!record || !detail.message) return;
  confirm(record, detail.message);
  render();
});

socket.addEventListener("read", ({ detail }) => {
  if (detail.by !== peer || detail.up_to <= peerReadUpTo) return;
  peerReadUpTo = detail.up_to;
  for (const record of records) if (record.mine) updateMessage(record);
});

socket.addEventListener("error", ({ detail }) => {
  const record = detail.client_id && byClientId.get(detail.client_id);
  if (!record || record.id !== null) return;
  fail(
    record,
    detail.code === "rate_limited"
      ? `Sending too fast${detail.retry_after ? `: wait ${Math.ceil(detail.retry_after)} s` : ""}.`
      : detail.detail
        ? `Not sent: ${detail.detail}`
        : "Not sent.",
  );
});

socket.addEventListener("ready", () => {
  // Messages that could not go out while disconnected go now, under the same
  // client_id, so the server stores each once whatever happened before.
  for (const record of records) if (record.id === null && !record.failed) transmit(record);
  markRead();
});

// The inbox is reloaded after a reconnect: read receipts and presence changes that
// happened meanwhile are not replayed by `sync`, but they are in the fresh list.
inbox.addEventListener("change", () => {
  const conversation = inbox.get(peer);
  if (!conversation || conversation.incomplete) return;
  if (conversation.peer_read_up_to > peerReadUpTo) {
    peerReadUpTo = conversation.peer_read_up_to;
    for (const record of records) if (record.mine) updateMessage(record);
  }
  if (conversation.peer.online !== peerInfo.online || conversation.peer.last_seen !== peerInfo.last_seen) {
    peerInfo = conversation.peer;
    showPresence();
  }
});

// --- Sending ---------------------------------------------------------------------------------------

function transmit(record) {
  clearTimeout(record.timer);
  record.failed = false;
  record.error = null;
  updateMessage(record);
  const frame = { type: "send", to: peer, body: record.message.body, client_id: record.clientId };
  if (!socket.send(frame)) {
    // No socket right now: REST stores it the same way (same client_id, same delivery).
    api(`/api/conversations/${encodeURIComponent(peer)}/messages/`, {
      method: "POST",
      body: { body: frame.body, client_id: frame.client_id },
    })
      .then((message) => {
        if (message) {
          confirm(record, message);
          render();
        }
      })
      .catch((error) => {
        // Refused (validation, rate limit): say why now. Unreachable: the socket
        // resends on reconnect, or the timeout marks it failed.
        if (error instanceof ApiError && record.id === null) {
          const detail = error.data && typeof error.data.detail === "string" ? error.data.detail : null;
          const reason = error.status === 429 ? "Sending too fast: try again in a moment." : detail;
          fail(record, reason ? `Not sent. ${reason}` : "Not sent.");
        }
      });
  }
  record.timer = setTimeout(() => record.id === null && fail(record, "Not sent."), SEND_TIMEOUT_MS);
}

function fail(record, reason) {
  clearTimeout(record.timer);
  record.failed = true;
  record.error = reason;
  updateMessage(record);
}

function submit() {
  const body = input.value.trim();
  if (!body || body.length > MAX_BODY) return;
  const clientId = newClientId();
  pendingSeq += 1;
  const record = {
    id: null,
    clientId,
    seq: pendingSeq,
    mine: true,
    failed: false,
    message: { sender: me, recipient: peer, body, created_at: new Date().toISOString(), client_id: clientId },
  };
  addRecord(record);
  dividerBeforeId = null;
  render();
  showEdge();
  scrollToBottom();
  input.value = "";
  saveDraft();
  composerChanged();
  transmit(record);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
  input.focus();
});

input.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; never while an IME is composing a character.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    submit();
  }
});

function saveDraft() {
  try {
    if (input.value) localStorage.setItem(draftKey, input.value);
    else localStorage.removeItem(draftKey);
  } catch {
    /* storage full or disabled: drafts are a convenience */
  }
}

function composerChanged() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 180)}px`;
  const length = input.value.trim().length;
  const left = MAX_BODY - input.value.length;
  charCount.hidden = left > 400;
  charCount.textContent = `${left} characters left`;
  charCount.classList.toggle("over", left < 0);
  sendButton.disabled = length === 0 || length > MAX_BODY;
}

input.addEventListener("input", () => {
  saveDraft();
  composerChanged();
  const now = Date.now();
  if (input.value.trim() && now - lastTypingSent > TYPING_SEND_EVERY_MS) {
    if (socket.send({ type: "typing", to: peer })) lastTypingSent = now;
  }
});

try {
  input.value = localStorage.getItem(draftKey) || "";
} catch {
  input.value = "";
}
composerChanged();
if (window.matchMedia("(pointer: fine)").matches) input.focus({ preventScroll: true });

loadHistory();
