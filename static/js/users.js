// All users: live search over GET /api/users/?search=, on top of the server-rendered
// list and form (which keep working without JavaScript).

import "./app.js";
import { api, debounce, el, paintAvatar, presenceText, avatar } from "./util.js";

const form = document.querySelector("[data-user-search-form]");
const input = document.querySelector("[data-live-search]");
const list = document.querySelector("[data-user-list]");
const more = document.querySelector("[data-users-more]");
const status = document.querySelector("[data-search-status]");
const serverPager = document.querySelector("[data-server-pager]");

for (const node of document.querySelectorAll("[data-avatar]")) paintAvatar(node, node.dataset.avatar);

let current = null; // AbortController of the request in flight
let nextUrl = null;
let lastQuery = input.value.trim();

function userRow(user) {
  return el(
    "li",
    {},
    el(
      "a",
      {
        class: "user-row",
        href: `/chat/${encodeURIComponent(user.username)}/`,
        dataset: { userId: user.id, username: user.username },
      },
      avatar(user.username, { online: user.online }),
      el(
        "span",
        { class: "user-main" },
        el("span", { class: "name", text: user.username }),
        el("span", {
          class: `user-status muted${user.online ? " is-online" : ""}`,
          text: presenceText(user.online, user.last_seen),
        }),
      ),
      el("span", { class: "chevron", "aria-hidden": "true", text: "›" }),
    ),
  );
}

async function search(query, { append = false } = {}) {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const url = append ? nextUrl : `/api/users/?search=${encodeURIComponent(query)}`;
  list.setAttribute("aria-busy", "true");
  try {
    const page = await api(url, { signal: controller.signal });
    if (controller !== current) return;
    if (!append) list.replaceChildren();
    for (const user of page.results) list.append(userRow(user));
    if (!list.children.length) {
      list.append(
        el("li", { class: "empty", text: query ? `Nobody matches “${query}”.` : "Nobody else has registered yet." }),
      );
    }
    nextUrl = page.next;
    more.hidden = !nextUrl;
    if (serverPager) serverPager.hidden = true;
    const shown = list.querySelectorAll(".user-row").length;
    status.textContent = `${shown}${nextUrl ? "+" : ""} user${shown === 1 ? "" : "s"} shown`;
    // Keep the address shareable and the back button meaningful.
    const address = new URL(location.href);
    if (query) address.searchParams.set("q", query);
    else address.searchParams.delete("q");
    address.searchParams.delete("page");
    history.replaceState(null, "", address);
  } catch (error) {
    if (error.name !== "AbortError") status.textContent = "Search failed. Try again.";
  } finally {
    if (controller === current) list.removeAttribute("aria-busy");
  }
}

const searchSoon = debounce(() => {
  const query = input.value.trim();
  if (query === lastQuery) return;
  lastQuery = query;
  search(query);
}, 200);

input.addEventListener("input", searchSoon);
form.addEventListener("submit", (event) => {
  event.preventDefault();
  lastQuery = input.value.trim();
  search(lastQuery);
});
more.addEventListener("click", () => nextUrl && search(lastQuery, { append: true }));
