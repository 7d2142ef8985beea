// Loaded on every page of a logged-in user: the tab's socket, the inbox (unread counts
// for the title), the "reconnecting" banner and desktop notifications. Page modules
// import `socket`, `inbox` and `me` from here, so a tab has exactly one of each.

import { Inbox } from "./inbox.js";
import { ChatSocket } from "./socket.js";
import { debounce, el } from "./util.js";

export const me = document.body.dataset.me;
export const socket = new ChatSocket(document.body.dataset.wsPath || "/ws/chat/");
export const inbox = new Inbox(me);

// --- Unread total: page title and the "Chats" link -----------------------------------

const baseTitle = document.title.replace(/^\(\d+\+?\)\s*/, "");
const navBadge = document.querySelector("[data-unread-total]");

function showUnreadTotal() {
  const total = inbox.totalUnread();
  document.title = total > 0 ? `(${total > 99 ? "99+" : total}) ${baseTitle}` : baseTitle;
  if (navBadge) {
    navBadge.hidden = total === 0;
    navBadge.textContent = total > 99 ? "99+" : String(total);
    navBadge.setAttribute("aria-label", `${total} unread`);
  }
}
inbox.addEventListener("change", showUnreadTotal);
// A message from someone new: reload the list to learn who they are.
inbox.addEventListener(
  "unknown-peer",
  debounce(() => inbox.load().catch(() => {}), 300),
);

// --- Connection banner --------------------------------------------------------------

const banner = document.querySelector("[data-connection-banner]");
const bannerText = document.querySelector("[data-connection-text]");
let bannerTimer = null;
let everReady = false;

socket.addEventListener("state", ({ detail }) => {
  // Also readable from outside (tests, support): <body data-socket-state="ready">.
  document.body.dataset.socketState = detail.state;
  if (!banner) return;
  clearTimeout(bannerTimer);
  if (detail.state === "ready") {
    banner.hidden = true;
    banner.classList.remove("visible");
    everReady = true;
    return;
  }
  const text =
    detail.state === "offline"
      ? "You are offline. Waiting for the network…"
      : everReady
        ? "Reconnecting…"
        : "Connecting…";
  // A blip shorter than this is not worth a banner.
  bannerTimer = setTimeout(
    () => {
      bannerText.textContent = text;
      banner.hidden = false;
      banner.classList.add("visible");
    },
    everReady ? 400 : 1500,
  );
});

// --- Socket → inbox -------------------------------------------------------------------

socket.addEventListener("message", ({ detail }) => inbox.applyMessage(detail));
socket.addEventListener("ack", ({ detail }) => detail.message && inbox.applyMessage(detail.message));
socket.addEventListener("read", ({ detail }) => inbox.applyRead(detail));
socket.addEventListener("presence", ({ detail }) => inbox.applyPresence(detail));
// After a reconnect, presence changes and read markers may have been missed (sync
// replays messages only): take the list afresh. The first `ready` follows a fresh load.
let readyCount = 0;
socket.addEventListener("ready", () => {
  readyCount += 1;
  if (readyCount > 1) inbox.load().catch(() => {});
});

// --- Notifications ---------------------------------------------------------------------

const notifyButton = document.querySelector("[data-enable-notifications]");
const canNotify = "Notification" in window;

function refreshNotifyButton() {
  if (notifyButton) notifyButton.hidden = !canNotify || Notification.permission !== "default";
}
refreshNotifyButton();
notifyButton?.addEventListener("click", async () => {
  // Browsers only let a page ask in answer to a click.
  try {
    await Notification.requestPermission();
  } finally {
    refreshNotifyButton();
  }
});

function preview(body) {
  return body.length > 140 ? `${body.slice(0, 139)}…` : body;
}

function notifyDesktop(message) {
  if (!canNotify || Notification.permission !== "granted") return;
  // One notification per sender: a newer one replaces it instead of piling up.
  const notification = new Notification(message.sender, {
    body: preview(message.body),
    tag: `messenger-${message.sender}`,
    renotify: true,
  });
  notification.addEventListener("click", () => {
    window.focus();
    location.assign(`/chat/${encodeURIComponent(message.sender)}/`);
    notification.close();
  });
}

const toasts = document.querySelector("[data-toasts]");

function toast(message) {
  if (!toasts) return;
  const link = el(
    "a",
    { class: "toast", href: `/chat/${encodeURIComponent(message.sender)}/` },
    el("strong", { text: message.sender }),
    el("span", { text: preview(message.body) }),
  );
  toasts.append(link);
  while (toasts.children.length > 3) toasts.firstElementChild.remove();
  setTimeout(() => link.remove(), 6000);
}

socket.addEventListener("message", ({ detail: message }) => {
  if (message.sender === me) return;
  if (document.visibilityState === "hidden") notifyDesktop(message);
  else if (!inbox.listOnScreen && inbox.activePeer !== message.sender) toast(message);
});

// --- Start ---------------------------------------------------------------------------

async function boot() {
  try {
    await inbox.load();
  } catch {
    // The socket still works; it will resume from its `ready` frame.
  }
  socket.start(inbox.loaded ? inbox.maxMessageId() : null);
}

export const booted = boot();
