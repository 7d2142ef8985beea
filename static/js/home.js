// Home: the conversations, most recent first, kept live by the inbox.

import { booted, inbox, me } from "./app.js";
import { avatar, el, fullTime, relativeTime } from "./util.js";

const list = document.querySelector("[data-conversations]");
const loading = document.querySelector("[data-conversations-loading]");
const empty = document.querySelector("[data-conversations-empty]");
const error = document.querySelector("[data-conversations-error]");
const rows = new Map(); // peer username → li

inbox.listOnScreen = true;

function buildRow(peer) {
  const li = el("li", { class: "conversation", dataset: { peer } });
  const link = el("a", { class: "conversation-row", href: `/chat/${encodeURIComponent(peer)}/` });
  const dot = avatar(peer, { online: false });
  const name = el("span", { class: "conversation-name", text: peer });
  const time = el("time", { class: "conversation-time" });
  const you = el("span", { class: "preview-you" });
  const previewText = el("span", { class: "preview-text" });
  const preview = el("span", { class: "conversation-preview", dataset: { preview: "" } }, you, previewText);
  const badge = el("span", { class: "badge", dataset: { unread: "" } });
  const status = el("span", { class: "visually-hidden" });
  link.append(
    dot,
    el(
      "span",
      { class: "conversation-main" },
      el("span", { class: "conversation-top" }, name, time),
      el("span", { class: "conversation-bottom" }, preview, badge),
    ),
    status,
  );
  li.append(link);
  li.parts = { dot: dot.querySelector(".presence-dot"), time, you, previewText, badge, status, link };
  return li;
}

function fillRow(li, conversation) {
  const { dot, time, you, previewText, badge, status } = li.parts;
  const { peer, last_message: last, unread_count: unread } = conversation;
  dot.classList.toggle("online", Boolean(peer.online));
  li.classList.toggle("unread", unread > 0);
  if (last) {
    const mine = last.sender === me;
    you.textContent = mine ? "You: " : "";
    previewText.textContent = last.body.replace(/\s+/g, " ");
    const date = new Date(last.created_at);
    time.dateTime = last.created_at;
    time.title = fullTime(date);
    time.textContent = relativeTime(date);
    li.parts.you.classList.toggle("read", mine && conversation.peer_read_up_to >= last.id);
  } else {
    you.textContent = "";
    previewText.textContent = "No messages yet";
    time.textContent = "";
  }
  badge.hidden = !unread;
  badge.textContent = unread > 99 ? "99+" : String(unread || "");
  status.textContent = [peer.online ? "online" : "offline", unread ? `${unread} unread` : ""].filter(Boolean).join(", ");
}

function render() {
  const conversations = inbox.list();
  loading.hidden = true;
  empty.hidden = conversations.length > 0;
  list.hidden = conversations.length === 0;
  const wanted = new Set();
  let previous = null;
  for (const conversation of conversations) {
    const peer = conversation.peer.username;
    wanted.add(peer);
    let li = rows.get(peer);
    if (!li) {
      li = buildRow(peer);
      rows.set(peer, li);
    }
    fillRow(li, conversation);
    // Move only what is out of place, so that a focused row keeps its focus.
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== li) list.insertBefore(li, expected);
    previous = li;
  }
  for (const [peer, li] of rows) {
    if (!wanted.has(peer)) {
      li.remove();
      rows.delete(peer);
    }
  }
}

let listening = false;

function show() {
  render();
  if (!listening) inbox.addEventListener("change", render);
  listening = true;
}

async function start() {
  await booted;
  if (!inbox.loaded) {
    loading.hidden = true;
    error.hidden = false;
    return;
  }
  show();
}

error.querySelector("[data-retry]").addEventListener("click", async () => {
  error.hidden = true;
  loading.hidden = false;
  try {
    await inbox.load();
    show();
  } catch {
    loading.hidden = true;
    error.hidden = false;
  }
});

// Relative times ("5 min") age while the page stays open.
setInterval(() => inbox.loaded && render(), 30_000);

start();
