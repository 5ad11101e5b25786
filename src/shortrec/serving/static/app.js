// The live-feed page: pick a user, see their feed and recent views, post watch/skip events.
// Plain DOM + fetch, no build step; captions are inserted as text, never as HTML.
// Ids are 64-bit integers: the page keeps them as decimal strings, never as JS numbers (which
// round above 2^53), and a failed load clears the feed so no button acts for another user.
"use strict";

const FEED_SIZE = 12;
const HISTORY_SIZE = 15;
const WATCH_RATIO = { watch: 1.0, skip: 0.1 }; // a skip is a short view, as KuaiRec logs it

const ID_PATTERN = /^[0-9]{1,19}$/;

const $ = (id) => document.getElementById(id);
let currentUser = null; // decimal string
let loadNumber = 0; // only the newest load may fill the page

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// JSON.parse, but integers beyond 2^53 keep their exact source text (where the browser gives it).
function exactIntegers(key, value, context) {
  if (typeof value === "number" && !Number.isSafeInteger(value) && context?.source
      && /^-?[0-9]+$/.test(context.source)) return context.source;
  return value;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = {};
  try { body = JSON.parse(await response.text(), exactIntegers); } catch { /* not JSON */ }
  if (!response.ok) throw new Error(body.message || body.error || `HTTP ${response.status}`);
  return body;
}

function clearUser() {
  currentUser = null;
  $("feed").replaceChildren();
  $("feed-meta").textContent = "";
  $("history").replaceChildren();
  $("history-meta").textContent = "";
}

function seconds(ms) {
  return ms == null ? "" : `${(ms / 1000).toFixed(1)} s`;
}

function categoryChips(categories) {
  return el("div", { class: "chips" },
    ...categories.map((c) => el("span", { class: "chip" }, c.name)));
}

function feedCard(item) {
  const caption = item.caption || item.cover_text || `video ${item.video_id}`;
  const score = item.score == null ? "" : `score ${item.score.toFixed(3)}`;
  const watch = el("button", { class: "watch", type: "button", "data-testid": "watch" }, "Watch");
  const skip = el("button", { type: "button", "data-testid": "skip" }, "Skip");
  watch.addEventListener("click", () => postView(item.video_id, "watch"));
  skip.addEventListener("click", () => postView(item.video_id, "skip"));
  return el("li", { class: "card", "data-testid": "feed-item", "data-video-id": String(item.video_id) },
    el("div", { class: "caption" }, caption),
    el("div", { class: "meta" },
      [`#${item.rank}`, `video ${item.video_id}`, seconds(item.video_duration_ms), score]
        .filter(Boolean).join(" · ")),
    categoryChips(item.categories),
    item.topic_tags.length ? el("div", { class: "meta" }, item.topic_tags.map((t) => `#${t}`).join(" ")) : "",
    (item.tag_names || []).length ? el("div", { class: "meta" }, item.tag_names.join(" · ")) : "",
    el("div", { class: "actions" }, watch, skip));
}

function historyRow(view) {
  const when = view.time ? new Date(view.time).toLocaleString() : "";
  const caption = view.caption || `video ${view.video_id}`;
  return el("li", { class: view.source, "data-testid": "history-item", "data-video-id": String(view.video_id) },
    el("div", {}, caption),
    el("div", { class: "meta subtle" },
      `video ${view.video_id} · watched ${Math.round(view.watch_ratio * 100)}% · ${view.source} · ${when}`));
}

async function showUser(userId) {
  const load = ++loadNumber;
  userId = String(userId).trim();
  if (!ID_PATTERN.test(userId)) {
    clearUser();
    setStatus(`Not a user id: ${JSON.stringify(userId)} (digits only)`, true);
    return;
  }
  setStatus(`Loading user ${userId}…`);
  try {
    const started = performance.now();
    const [feed, history] = await Promise.all([
      api(`/users/${userId}/recommendations?k=${FEED_SIZE}`),
      api(`/users/${userId}/history?limit=${HISTORY_SIZE}`),
    ]);
    const ms = Math.round(performance.now() - started);
    if (load !== loadNumber) return; // a newer load started meanwhile
    currentUser = userId;
    $("feed").replaceChildren(...feed.items.map(feedCard));
    $("feed-meta").textContent = `· ${feed.strategy === "popularity" ? "cold start: most popular" : feed.model}`;
    $("history").replaceChildren(...history.items.map(historyRow));
    $("history-meta").textContent = `· ${history.total} views`;
    setStatus(`User ${userId}: ${feed.history_length} views so far · answered in ${ms} ms`);
  } catch (error) {
    if (load !== loadNumber) return;
    clearUser();
    setStatus(`Could not load user ${userId}: ${error.message}`, true);
  }
}

function newEventId() { // crypto.randomUUID needs https; getRandomValues does not
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "page-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function postView(videoId, action) {
  const userId = currentUser;
  videoId = String(videoId);
  if (userId === null || !ID_PATTERN.test(videoId)) return;
  // Ids go into the JSON text as they are (checked digits): no rounding through numbers.
  // The event_id makes a retried post count once.
  const body = `{"user_id": ${userId}, "video_id": ${videoId}, `
    + `"watch_ratio": ${WATCH_RATIO[action]}, "event_id": "${newEventId()}"}`;
  try {
    await api("/events", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    await Promise.all([showUser(userId), showServer()]);
    if (currentUser !== userId) return; // another user was loaded meanwhile
    setStatus(`${action === "watch" ? "Watched" : "Skipped"} video ${videoId}; feed updated. ${$("status").textContent}`);
  } catch (error) {
    setStatus(`Could not record the view: ${error.message}`, true);
  }
}

async function showServer() {
  const health = await api("/health");
  $("model").textContent = `model: ${health.model.name} · ${health.videos} videos · ${health.live_events} live events`;
}

async function init() {
  try {
    const [, users] = await Promise.all([showServer(), api("/users?limit=200")]);
    $("user-select").replaceChildren(
      ...users.user_ids.map((id) => el("option", { value: String(id) }, `user ${id}`)));
  } catch (error) {
    setStatus(`Server not reachable: ${error.message}`, true);
    return;
  }
  $("user-select").addEventListener("change", () => showUser($("user-select").value));
  $("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("user-input").value.trim();
    showUser(typed !== "" ? typed : $("user-select").value);
  });
  if ($("user-select").value !== "") showUser($("user-select").value);
}

init();
