// Small helpers shared by every page. Nothing here ever parses text as HTML:
// elements are built with createElement and filled with textContent.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// --- HTTP -----------------------------------------------------------------------

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "csrftoken") return decodeURIComponent(rest.join("="));
  }
  return "";
}

export class ApiError extends Error {
  constructor(status, data) {
    super((data && (data.detail || JSON.stringify(data))) || `HTTP ${status}`);
    this.status = status;
    this.data = data;
  }
}

function loginUrl() {
  return `/accounts/login/?next=${encodeURIComponent(location.pathname + location.search)}`;
}

/** JSON over the browser session. Every call carries the CSRF token (Django checks it
 * on unsafe methods; sending it always keeps one code path). */
export async function api(url, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json", "X-CSRFToken": csrfToken() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  if (response.status === 401) {
    location.assign(loginUrl());
    throw new ApiError(401, null);
  }
  const data = response.status === 204 || response.status === 205 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// --- Identifiers ------------------------------------------------------------------

export function newClientId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// --- Text -------------------------------------------------------------------------

// http(s) URLs, and bare www. addresses; trailing punctuation is trimmed below.
const LINK = /\b(?:https?:\/\/|www\.)[^\s<>"']+/gi;
const TRAILING = /[.,;:!?\]}'"»]$/;

/** Drop punctuation that ends the sentence rather than the URL; a closing parenthesis
 * stays when the URL opened one (Wikipedia-style links). */
function trimUrl(raw) {
  for (;;) {
    if (TRAILING.test(raw)) raw = raw.slice(0, -1);
    else if (raw.endsWith(")") && raw.split("(").length < raw.split(")").length) raw = raw.slice(0, -1);
    else return raw;
  }
}

function safeHref(candidate) {
  try {
    const url = new URL(candidate.startsWith("www.") ? `https://${candidate}` : candidate);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/** The message text as text nodes, with http(s) links as anchors. */
export function linkify(text) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(LINK)) {
    const raw = trimUrl(match[0]);
    const href = safeHref(raw);
    if (!href) continue;
    fragment.append(document.createTextNode(text.slice(last, match.index)));
    const anchor = document.createElement("a");
    anchor.href = href;
    anchor.textContent = raw;
    anchor.target = "_blank";
    anchor.rel = "noopener noreferrer";
    fragment.append(anchor);
    last = match.index + raw.length;
  }
  fragment.append(document.createTextNode(text.slice(last)));
  return fragment;
}

// --- Time -------------------------------------------------------------------------

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const weekdayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short" });
const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const longDateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
const dayHeadingFormat = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long" });

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

function daysAgo(date, now = new Date()) {
  return Math.round((startOfDay(now) - startOfDay(date)) / DAY);
}

export function clockTime(date) {
  return timeFormat.format(date);
}

export function fullTime(date) {
  return fullFormat.format(date);
}

/** "Today", "Yesterday", "Monday, 3 December", with the year when it is not this one. */
export function dayHeading(date, now = new Date()) {
  const ago = daysAgo(date, now);
  if (ago === 0) return "Today";
  if (ago === 1) return "Yesterday";
  return date.getFullYear() === now.getFullYear() ? dayHeadingFormat.format(date) : longDateFormat.format(date);
}

/** Compact relative time for lists: "now", "5 min", "3 h", "Yesterday", "Mon", "3 Dec". */
export function relativeTime(date, now = new Date()) {
  const elapsed = now - date;
  if (elapsed < MINUTE) return "now";
  if (elapsed < HOUR) return `${Math.floor(elapsed / MINUTE)} min`;
  const ago = daysAgo(date, now);
  if (ago === 0) return `${Math.floor(elapsed / HOUR)} h`;
  if (ago === 1) return "Yesterday";
  if (ago < 7) return weekdayFormat.format(date);
  return date.getFullYear() === now.getFullYear() ? dateFormat.format(date) : longDateFormat.format(date);
}

/** "online", "last seen just now", "last seen 5 minutes ago", "last seen yesterday at 09:12". */
export function presenceText(online, lastSeen, now = new Date()) {
  if (online) return "online";
  if (!lastSeen) return "offline";
  const date = new Date(lastSeen);
  const elapsed = now - date;
  if (elapsed < MINUTE) return "last seen just now";
  if (elapsed < HOUR) {
    const minutes = Math.floor(elapsed / MINUTE);
    return `last seen ${minutes} minute${minutes === 1 ? "" : "s"} ago`;
  }
  const ago = daysAgo(date, now);
  if (ago === 0) return `last seen today at ${clockTime(date)}`;
  if (ago === 1) return `last seen yesterday at ${clockTime(date)}`;
  return `last seen ${date.getFullYear() === now.getFullYear() ? dateFormat.format(date) : longDateFormat.format(date)}`;
}

// --- Avatars ------------------------------------------------------------------------

function hue(name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

/** Colour a server-rendered or new avatar from its name, the same for everyone. */
export function paintAvatar(node, name) {
  node.style.setProperty("--avatar-hue", String(hue(name)));
  return node;
}

export function avatar(name, { online = null, size = "" } = {}) {
  const node = el("span", { class: `avatar ${size}`.trim(), "aria-hidden": "true" }, initial(name));
  paintAvatar(node, name);
  if (online !== null) node.append(el("span", { class: `presence-dot${online ? " online" : ""}` }));
  return node;
}

export function initial(name) {
  return (Array.from(name)[0] || "?").toUpperCase();
}

export function debounce(fn, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}
