// The one WebSocket of a tab (contract: /ws/chat/). It reconnects on its own, syncs
// what it missed, and hands every message to the page exactly once.
//
// Events (CustomEvent, payload in `detail`):
//   state     {state: "connecting" | "ready" | "reconnecting" | "offline", attempt}
//   ready     the server's ready frame (after every (re)connect)
//   message   a message not seen before in this tab
//   ack, typing, read, presence, error, synced   the server's frames as they are

import { api } from "./util.js";

const PING_EVERY_MS = 20_000;
const PONG_TIMEOUT_MS = 10_000;
// With a session cookie the server answers `ready` at once; a socket that opened but
// stays silent is the token handshake waiting for us (our session is gone) or a stuck
// proxy: close it and start over.
const READY_TIMEOUT_MS = 12_000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15_000;
// Messages of different conversations may commit out of id order, so the highest id
// seen is not a safe place to resume from: resume from the highest id seen one
// checkpoint earlier (a few seconds); what comes twice is dropped by id.
const CHECKPOINT_EVERY_MS = 10_000;
const CLOSE_UNAUTHENTICATED = 4401;

export class ChatSocket extends EventTarget {
  constructor(path) {
    super();
    this.path = path;
    this.ws = null;
    this.ready = false;
    this.started = false;
    this.attempt = 0;
    this.seen = new Set();
    this.maxId = 0; // highest message id seen
    this.checkpoint = 0; // maxId at the previous checkpoint
    this.resumeFrom = 0; // where the next sync starts
    this.timers = {};
    this.syncing = false;
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.path}`;
  }

  /** Connect, and sync everything after `sinceId` (the newest message the page already has). */
  start(sinceId = null) {
    if (this.started) return;
    this.started = true;
    if (sinceId !== null) this.noteId(sinceId, { resume: true });
    this.knowsWhereToResume = sinceId !== null;
    this.timers.checkpoint = setInterval(() => {
      this.resumeFrom = Math.max(this.resumeFrom, this.checkpoint);
      this.checkpoint = this.maxId;
    }, CHECKPOINT_EVERY_MS);
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => this.emit("state", { state: "offline", attempt: this.attempt }));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
    this.connect();
  }

  /** Send a frame if the socket is ready; returns whether it went out. */
  send(frame) {
    if (!this.ready || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  noteId(id, { resume = false } = {}) {
    if (typeof id !== "number") return;
    this.maxId = Math.max(this.maxId, id);
    if (resume) {
      this.resumeFrom = Math.max(this.resumeFrom, id);
      this.checkpoint = Math.max(this.checkpoint, id);
    }
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  connect() {
    clearTimeout(this.timers.retry);
    this.emit("state", { state: this.attempt === 0 ? "connecting" : "reconnecting", attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.timers.readyWait = setTimeout(() => ws.close(), READY_TIMEOUT_MS);
    });
    ws.addEventListener("message", (event) => this.onFrame(ws, event));
    ws.addEventListener("close", (event) => this.onClose(ws, event));
  }

  onFrame(ws, event) {
    if (ws !== this.ws || typeof event.data !== "string") return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    clearTimeout(this.timers.pong);
    switch (frame.type) {
      case "ready":
        this.onReady(frame);
        break;
      case "pong":
        break;
      case "message":
        this.onMessage(frame.message);
        break;
      case "ack":
        if (frame.message) {
          this.seen.add(frame.message.id);
          this.noteId(frame.message.id);
        }
        this.emit("ack", frame);
        break;
      case "synced":
        this.onSynced(frame);
        break;
      default:
        this.emit(frame.type, frame);
    }
  }

  onReady(frame) {
    clearTimeout(this.timers.readyWait);
    this.ready = true;
    this.attempt = 0;
    if (!this.knowsWhereToResume) {
      // Nothing loaded over REST (it failed): start from now rather than replaying all.
      this.knowsWhereToResume = true;
      this.noteId(frame.last_message_id ?? 0, { resume: true });
    }
    this.emit("state", { state: "ready", attempt: 0 });
    this.emit("ready", frame);
    this.sync(this.resumeFrom);
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  sync(since) {
    this.syncing = true;
    this.send({ type: "sync", since });
  }

  onSynced(frame) {
    if (typeof frame.last_id === "number") this.noteId(frame.last_id);
    if (frame.more) {
      this.sync(frame.last_id);
      return;
    }
    this.syncing = false;
    this.emit("synced", frame);
  }

  onMessage(message) {
    if (!message || typeof message.id !== "number" || this.seen.has(message.id)) return;
    this.seen.add(message.id);
    this.noteId(message.id);
    this.emit("message", message);
  }

  ping() {
    if (!this.send({ type: "ping" })) return;
    clearTimeout(this.timers.pong);
    // No answer at all: the connection is dead without a close (sleep, network
    // change). Any frame counts as an answer, see onFrame.
    this.timers.pong = setTimeout(() => this.ws && this.ws.close(), PONG_TIMEOUT_MS);
  }

  async onClose(ws, event) {
    if (ws !== this.ws) return;
    this.ready = false;
    this.ws = null;
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    clearTimeout(this.timers.readyWait);
    if (event.code === CLOSE_UNAUTHENTICATED) {
      // Session gone (logged out in another tab, expired)? The API answers 401 and
      // api() takes the page to the login form; otherwise keep trying.
      try {
        await api("/api/me/");
      } catch {
        /* offline or 401: handled by the backoff or the redirect */
      }
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.ws) return; // reconnectNow() got there first
    this.attempt += 1;
    this.emit("state", { state: navigator.onLine === false ? "offline" : "reconnecting", attempt: this.attempt });
    // Exponential backoff with jitter, so that a restarted server is not hit by every
    // tab at the same instant.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.attempt - 1));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  /** Skip the wait when the browser says the network is back or the tab is shown again. */
  reconnectNow() {
    if (!this.started || this.ws) return;
    this.attempt = Math.max(0, this.attempt - 1);
    this.connect();
  }
}
