// Corridor dashboard: plain JavaScript, no dependencies, data only from /api/v1.
// Every value from the API is inserted with textContent / attributes, never as HTML.
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#7f7f7f", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("corridor-key") || "", keyScope: "", readsNeedKey: false, sectors: [], color: {},
  sourceNames: {}, open: new Set(), generation: 0, controller: null, pollTimer: null, events: null,
  scrollPending: location.hash.startsWith("#agreement=") }; // a shared link's row is scrolled to once, when drawn
const MIN_WEEKS = 4; // the chart shows at least this many weeks, starting near the first with data
const POLL_MS = 60000; // the next refresh starts this long after the last one ended
const TIMELINE_SHOWN = 20; // items of an agreement's timeline shown on the board
const REFRESH_TIMEOUT_MS = 20000; // a refresh whose answers take longer is given up (a hung server does not pile up requests)

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// Only http(s) links become hrefs (the store keeps no others; this holds if one slips through).
const webLink = (url) => (typeof url === "string" && /^https?:\/\//i.test(url) ? url : null);

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

async function api(path, options) {
  const headers = Object.assign({ "Accept": "application/json" }, (options && options.headers) || {});
  if (state.key) headers["Authorization"] = "Bearer " + state.key;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* not JSON */ }
    throw Object.assign(new Error(message), { status: response.status });
  }
  return response.status === 204 ? null : response.json();
}

function query() {
  const params = new URLSearchParams();
  if ($("country").value) params.set("country", $("country").value);
  if ($("sector").value) params.set("sector", $("sector").value);
  if ($("q").value.trim().length >= 2) params.set("q", $("q").value.trim());
  return params;
}

// A sector's colour; one not among the loaded sectors (they could not be read yet) gets the next free one.
function colorOf(id) {
  if (!state.color[id]) state.color[id] = COLORS[Object.keys(state.color).length % COLORS.length];
  return state.color[id];
}

function drawChart(data) {
  state.chartData = data;
  const box = $("chart");
  box.replaceChildren();
  // Fit the range to the data: start a week before the first week with any item (at least
  // MIN_WEEKS shown), so a new installation does not draw 26 weeks of flat zeros.
  const first = data.weeks.findIndex((w, i) => data.sectors.some((s) => s.weeks[i].count > 0));
  const from = first < 0 ? 0 : Math.max(0, Math.min(first - 1, data.weeks.length - MIN_WEEKS));
  const weeks = data.weeks.slice(from);
  const only = $("sector").value; // the Sector filter applies to the chart too
  const top = data.sectors.filter((s) => s.total > 0 && (!only || s.id === only)).sort((a, b) => b.total - a.total).slice(0, 8)
    .map((s) => ({ ...s, weeks: s.weeks.slice(from) }));
  // Drawn at the width it is shown at, so text keeps its size on a phone (a 900-unit drawing
  // scaled into 390 pixels made 11-pixel labels about 5 pixels tall).
  const W = Math.max(300, Math.round(box.clientWidth || 900)), H = W < 600 ? 220 : 260;
  const L = 34, R = 10, T = 10, B = 26;
  const max = Math.max(1, ...top.flatMap((s) => s.weeks.map((w) => w.count)));
  const x = (i) => L + (weeks.length > 1 ? i * (W - L - R) / (weeks.length - 1) : (W - L - R) / 2);
  const y = (v) => H - B - v * (H - T - B) / max;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "items per sector per week",
    "data-weeks": weeks.length });
  for (let tick = 0; tick <= 4; tick++) {
    const v = Math.round(max * tick / 4);
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis" }));
    const label = svg("text", { x: 2, y: y(v) + 4 }); label.textContent = v; chart.append(label);
  }
  const labels = Math.max(2, Math.floor((W - L - R) / 70)); // about one date label per 70 pixels
  weeks.forEach((week, i) => {
    if (i % Math.ceil(weeks.length / labels) === 0) {
      const label = svg("text", { x: Math.min(x(i) - 16, W - 36), y: H - 6 }); label.textContent = week.slice(5); chart.append(label);
    }
  });
  $("legend").replaceChildren();
  for (const sector of top) {
    const color = colorOf(sector.id);
    const points = sector.weeks.map((w, i) => `${x(i).toFixed(1)},${y(w.count).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points, fill: "none", stroke: color, "stroke-width": 2.2, "data-sector": sector.id }));
    $("legend").append(el("li", {}, el("i", { style: `background:${color}` }), `${sector.id} (${sector.total})`));
  }
  if (!top.length) chart.append(Object.assign(svg("text", { x: W / 2 - 60, y: H / 2 }), { textContent: "no events in this window" }));
  box.append(chart);
}

// The snippet with the matched term marked, found where the classifier's matcher
// (services/classifier/matching.py) finds terms: at a word's start, whole word first (a stem or
// a plural after), case-exact for an acronym ("IT", not "it" inside "facilities"), a Turkish "İ"
// read as "I" (one character for one, so positions stay: lower-casing first shifted them); failing
// that, anywhere ignoring case. Built as DOM nodes.
const WORD = "[\\p{L}\\p{N}\\p{M}]";
function termAt(snippet, term) {
  const text = snippet.replace(/İ/g, "I"), t = term.replace(/İ/g, "I");
  const escaped = t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const flags = t.length <= 5 && t === t.toUpperCase() && t !== t.toLowerCase() ? "u" : "iu";
  const tries = [`(?<!${WORD})${escaped}(?!${WORD})`, `(?<!${WORD})${escaped}`];
  for (const pattern of tries) {
    let re;
    try { re = new RegExp(pattern, flags); } catch (e) { continue; } // no lookbehind (Safari < 16.4)
    const found = re.exec(text);
    if (found) return found;
  }
  return new RegExp(escaped, "iu").exec(text);
}

function marked(snippet, term) {
  const found = term ? termAt(snippet, term) : null;
  if (!found) return el("q", {}, snippet);
  const at = found.index, end = at + found[0].length;
  return el("q", {}, snippet.slice(0, at), el("mark", {}, snippet.slice(at, end)), snippet.slice(end));
}

// Text on a coloured badge in whichever of white and the page's ink reads better on it (white on
// the light palette colours fell to a contrast of 2:1).
function inkOn(hex) {
  const lum = (h) => {
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16) / 255)
      .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const bg = lum(hex), ink = lum("#1d2330");
  return (1.05) / (bg + 0.05) >= (bg + 0.05) / (ink + 0.05) ? "#fff" : "#1d2330";
}

// An /api/v1 link that works where reads need a key: a link opened from the page (or given to a
// feed reader) cannot send the Authorization header, so it carries the key entered here, but
// only a key known to be a read key and only where reads need one. The admin key is never put
// in a link: links are copied into feed readers, histories and proxy logs.
function apiLink(path) {
  if (!state.key || !state.readsNeedKey || state.keyScope !== "read") return path;
  return path + (path.includes("?") ? "&" : "?") + "key=" + encodeURIComponent(state.key);
}

function sourceName(item) {
  if (state.sourceNames[item.source_id]) return state.sourceNames[item.source_id];
  try { return new URL(item.source_url).hostname; } catch (e) { return item.source_id; }
}

function drawEvents(page) {
  state.events = page;
  const list = $("events");
  list.replaceChildren();
  for (const item of page.items) {
    const when = new Date(item.published_at || item.fetched_at);
    const li = el("li", {},
      el("a", { class: "title", href: webLink(item.url) || apiLink(`/api/v1/events/${encodeURIComponent(item.id)}`), target: "_blank", rel: "noopener" }, item.title || "(untitled)"),
      el("div", { class: "meta" }, `${when.toISOString().slice(0, 16).replace("T", " ")} UTC · ${sourceName(item)}` +
        (item.publisher ? ` (${item.publisher})` : "") +
        (item.duplicates.length ? ` · also in ${item.duplicates.length} other source(s)` : "")));
    const tags = el("div", {});
    for (const c of item.countries) tags.append(el("span", { class: "country" }, c === "PK" ? "Pakistan" : "Kazakhstan"));
    for (const s of item.sector_scores) {
      const color = state.color[s.id] || "#555555";
      tags.append(el("span", { class: "badge", style: `background:${color};color:${inkOn(color)}` }, `${s.id} ${s.score}`));
    }
    li.append(tags);
    // One line per distinct snippet (two sectors matched in one title share it), term marked.
    const seen = new Set();
    const evidence = item.evidence.filter((e) => e.kind === "sector" && !seen.has(e.snippet) && seen.add(e.snippet));
    for (const e of evidence.slice(0, 2)) li.append(el("p", { class: "evidence" }, `${e.label}: `, marked(e.snippet, e.term)));
    list.append(li);
  }
  if (!page.items.length) list.append(el("li", {}, "No events match."));
  $("rss").href = apiLink("/api/v1/events.rss?" + query().toString());
  $("ics").href = apiLink("/api/v1/agreements.ics");
  const hint = state.readsNeedKey && state.keyScope !== "read" ? "reads need a key: add ?key= with a read key for a feed reader" : "";
  for (const id of ["rss", "ics"]) $(id).title = hint;
}

function drawSources(sources) {
  const body = document.querySelector("#sources tbody");
  body.replaceChildren();
  const failing = sources.filter((s) => s.consecutive_errors > 0).sort((a, b) => b.consecutive_errors - a.consecutive_errors);
  const rest = sources.filter((s) => s.consecutive_errors === 0);
  for (const s of [...failing, ...rest].slice(0, 40)) {
    const bad = s.consecutive_errors > 0;
    const status = !s.active ? "paused" : bad ? `${s.last_error_kind || "error"} ×${s.consecutive_errors}` : (s.last_status || "new");
    body.append(el("tr", { class: bad ? "failing" : "" },
      el("td", {}, s.name || s.url),
      el("td", { class: bad ? "" : "ok" }, status),
      el("td", {}, bad ? (s.last_success_at ? s.last_success_at.slice(0, 16).replace("T", " ") : "never worked") : "–"),
      el("td", {}, s.next_check_at.slice(0, 16).replace("T", " "))));
  }
  if (!sources.length) body.append(el("tr", {}, el("td", { colspan: 4 }, "No sources yet.")));
}

const PROGRESS = ["signed", "follow_up_talks", "approved", "planning", "financed", "underway", "operational"];
const day = (iso) => (iso ? iso.slice(0, 10) : "–");

function drawBoard(rows) {
  const body = document.querySelector("#board tbody");
  body.replaceChildren();
  for (const a of rows) {
    const steps = el("span", { class: "steps", title: a.stage, "data-stage": a.stage });
    PROGRESS.forEach((s, i) => steps.append(el("i", { class: i <= PROGRESS.indexOf(a.stage) ? "on" : "" })));
    const flags = [];
    if (a.setback) flags.push(el("span", { class: "flag setback", title: "setback reported " + day(a.setback_at) }, "setback"));
    if (a.stalled) flags.push(el("span", { class: "flag stalled", title: a.stall_reason || "" }, "stalled"));
    // The title is a button (keyboard and screen readers reach it; its click bubbles to the row's).
    const open = el("button", { type: "button", class: "open", "aria-expanded": state.open.has(a.id) ? "true" : "false" }, a.title);
    const row = el("tr", { class: ["row", a.stalled ? "stalled" : "", a.setback ? "setback" : ""].join(" ").trim(), "data-id": a.id },
      el("td", {}, open, el("span", { class: "area" }, a.area_label)),
      el("td", {}, steps, el("span", { class: "stage-name" }, a.stage.replace(/_/g, " ")), ...flags),
      el("td", {}, day(a.last_progress_at)),
      el("td", {}, `${a.days_quiet} d`));
    row.addEventListener("click", () => toggleTimeline(row, a.id));
    body.append(row);
    if (state.open.has(a.id)) showTimeline(row, a.id); // kept open across refreshes
  }
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 4 }, "No agreements in the registry.")));
}

function toggleTimeline(row, id) {
  state.scrollPending = false; // the user is choosing rows now: no jump to a link's row
  const next = row.nextElementSibling;
  const button = row.querySelector("button.open");
  if (next && next.classList.contains("detail")) {
    next.remove();
    state.open.delete(id);
    if (button) button.setAttribute("aria-expanded", "false");
    // The address names an open timeline only (a reload opened a closed one again); replaced,
    // not pushed: opening rows does not fill the history with entries Back cannot follow.
    if (location.hash === "#agreement=" + encodeURIComponent(id)) history.replaceState(null, "", location.pathname + location.search);
    return;
  }
  state.open.add(id);
  if (button) button.setAttribute("aria-expanded", "true");
  history.replaceState(null, "", "#agreement=" + encodeURIComponent(id)); // a link to this view
  showTimeline(row, id);
}

// /#agreement=ID opens that timeline: at start, and when the address changes on a loaded page.
// Whether the linked row is on the board (false: no link, or the board has not arrived).
function openLinked(scroll) {
  const linked = /^#agreement=(.+)$/.exec(location.hash);
  if (!linked) return false;
  let id;
  try { id = decodeURIComponent(linked[1]); } catch (e) { return false; } // a malformed link: ignored
  state.open.add(id);
  const row = document.querySelector(`#board tr.row[data-id="${CSS.escape(id)}"]`);
  if (!row) return false; // drawn open when the board arrives
  const next = row.nextElementSibling;
  if (!(next && next.classList.contains("detail"))) {
    const button = row.querySelector("button.open");
    if (button) button.setAttribute("aria-expanded", "true");
    showTimeline(row, id);
  }
  if (scroll) row.scrollIntoView({ block: "start" });
  return true;
}

async function showTimeline(row, id) {
  const cell = el("td", { colspan: 4 }, "Loading…");
  row.after(el("tr", { class: "detail", "data-detail": id }, cell));
  try {
    // Bounded like a refresh: a hung server left "Loading…" for good.
    const a = await api(`/api/v1/agreements/${encodeURIComponent(id)}`, { signal: AbortSignal.timeout(REFRESH_TIMEOUT_MS) });
    const support = a.corroboration.filter((c) => c.items).map((c) =>
      `${c.stage.replace(/_/g, " ")}: ${c.sources.map((s) => s.name || s.id).join(", ")}` +
      (c.supported ? " ✓" : " (not yet corroborated)") + (c.both_countries ? " · both countries" : "") + (c.official ? " · official" : ""));
    const list = el("ol", { class: "timeline" });
    const shown = a.timeline.slice(0, TIMELINE_SHOWN);
    const since = `${a.signed_on}T00:00:00Z`; // the timeline and its count start at the signing; so do its links
    for (const t of shown) {
      const li = el("li", {}, `${day(t.at)} · ${(t.stage || "").replace(/_/g, " ")} · `,
        el("a", { href: webLink(t.url) || apiLink(`/api/v1/events/${encodeURIComponent(t.id)}`), target: "_blank", rel: "noopener" }, t.title),
        ` — ${t.source_name || t.source_id}` + (t.publisher ? ` (${t.publisher})` : "") + (t.via === "agreement" ? "" : " (news of its area)"));
      // Why the item is here (two distinct link snippets at most) and why it reports its stage
      // (its own line even when the sentence is the same: it marks another term).
      const seen = new Set();
      const evidence = t.evidence || [];
      const links = evidence.filter((e) => e.kind === "agreement" && !seen.has(e.snippet) && seen.add(e.snippet));
      for (const e of [...links.slice(0, 2), ...evidence.filter((e) => e.kind === "stage").slice(0, 1)]) {
        const label = e.kind === "stage" ? `${e.label.replace(/_/g, " ")}: ` : "linked: ";
        li.append(el("p", { class: "evidence", "data-kind": e.kind }, label, marked(e.snippet, e.term)));
      }
      list.append(li);
    }
    cell.replaceChildren(
      el("p", { class: "meta" }, `Signed ${a.signed_on} · ${a.commits_to}`),
      el("p", { class: "meta" }, support.length ? "Reported: " + support.join(" | ") : "No reports yet."),
      a.timeline.length ? list : el("p", { class: "meta" }, "No items linked yet."),
      // The timeline is cut: say so, and where the rest is.
      a.items > shown.length ? el("p", { class: "meta", "data-more": a.items },
        `Newest ${shown.length} of ${a.items} items · `,
        el("a", { href: apiLink(`/api/v1/events?agreement=${encodeURIComponent(id)}&since=${since}`), target: "_blank", rel: "noopener" }, "all of them")) : "",
      el("p", { class: "meta" }, el("a", { href: apiLink(`/api/v1/events.rss?agreement=${encodeURIComponent(id)}&since=${since}`) }, "RSS"), " · ",
        el("a", { href: apiLink(`/api/v1/agreements/${encodeURIComponent(id)}.ics`) }, "calendar")));
  } catch (e) { cell.textContent = "Could not load: " + e.message; }
}

// What the entered key may do, learnt from the subscription list (admin only): "admin", "read"
// or "" (not known yet); the links are drawn again once it is known.
function setKeyScope(scope) {
  if (state.keyScope === scope) return;
  state.keyScope = scope;
  refresh();
}

async function loadSubscriptions() {
  const msg = $("admin-msg");
  if (!state.key) {
    msg.textContent = "Enter an admin key to manage subscriptions."; $("subform").hidden = true; $("subs").replaceChildren();
    markAdmin(); return;
  }
  const key = state.key; // the answer is about this key: another may have been entered meanwhile
  try {
    const subs = await api("/api/v1/subscriptions");
    if (state.key !== key) return;
    setKeyScope("admin");
    $("subs").replaceChildren(...subs.map((s) => el("li", {},
      `${s.webhook_url || s.email || "kafka"} — ${s.sectors.join(", ") || "all sectors"} — ${s.cadence}${s.active ? "" : " (paused)"} `,
      Object.assign(el("button", { type: "button", "data-id": s.id }, "delete"), { onclick: () => removeSubscription(s.id) }))));
    msg.textContent = `${subs.length} subscription(s).`;
    $("subform").hidden = false;
  } catch (e) {
    if (state.key !== key) return; // a late answer for a key no longer entered: the admin key's
    // scope must never be taken from an earlier read key's 401 (its links would carry it)
    // The list an admin key showed goes too (webhook URLs are secrets of their own).
    msg.textContent = "Cannot list subscriptions: " + e.message; $("subform").hidden = true; $("subs").replaceChildren();
    if (e.status === 401) setKeyScope("read");
  }
  markAdmin();
}

// Whether the subscription form is on screen, as rendered (for people reading the DOM, and tests).
function markAdmin() {
  document.body.dataset.subscriptionForm = getComputedStyle($("subform")).display === "none" ? "hidden" : "shown";
}

async function removeSubscription(id) {
  try {
    await api(`/api/v1/subscriptions/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (e) { $("admin-msg").textContent = "Not deleted: " + e.message; return; }
  loadSubscriptions();
}

async function subscribe(event) {
  event.preventDefault();
  const target = $("target").value.trim();
  const body = { sectors: [...$("subsectors").selectedOptions].map((o) => o.value), cadence: $("cadence").value };
  if (target.includes("@") && !/^https?:\/\//i.test(target)) body.email = target; else body.webhook_url = target;
  try {
    const created = await api("/api/v1/subscriptions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    // The list first: it writes its count into the same line, which wiped the secret at once.
    await loadSubscriptions();
    $("admin-msg").textContent = created.secret ? `Created. Signing secret (shown once): ${created.secret}` :
      "Created. A confirmation email is on its way.";
  } catch (e) { $("admin-msg").textContent = "Not created: " + e.message; }
}

// The sector list (filter and subscription choices, colours). Read by refresh() until it has
// been read once: where reads need a key, the first visit has none until the user enters it.
function setSectors(data) {
  if (state.sectors.length || !data) return;
  state.sectors = data.sectors.map((s) => s.id);
  state.sectors.forEach((id, i) => { state.color[id] = COLORS[i % COLORS.length]; });
  for (const id of state.sectors) { $("sector").append(el("option", { value: id }, id)); $("subsectors").append(el("option", { value: id }, id)); }
}

function showLoadError(message) {
  document.body.dataset.ready = message ? "error" : "ok";
  $("load-msg").textContent = message ? "Some data could not be loaded: " + message : "";
}

// One refresh at a time counts: a newer one cancels the requests of an older one, whose answers
// are then ignored (a slow answer never overwrites a newer filter's), and each gives up after
// REFRESH_TIMEOUT_MS.
async function refresh() {
  const generation = ++state.generation;
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  const timeout = setTimeout(() => controller.abort(new Error(`no answer within ${REFRESH_TIMEOUT_MS / 1000} s`)), REFRESH_TIMEOUT_MS);
  const signal = controller.signal;
  const params = query();
  // Each panel is drawn as soon as its own answer arrives (one slow route blanked the whole page
  // until it answered); the sector list and the source names come first when they can.
  const current = () => generation === state.generation;
  const list = state.sectors.length ? Promise.resolve(null) : api(`/api/v1/sectors?weeks=1`, { signal });
  const names = api("/api/v1/sources", { signal });
  const panels = [
    list.then((v) => current() && setSectors(v)),
    names.then((v) => {
      if (!current()) return;
      for (const source of v) if (source.name) state.sourceNames[source.id] = source.name;
      drawSources(v);
      if (state.events) drawEvents(state.events); // drawn before the names came: with them now
    }),
    api("/api/v1/agreements", { signal }).then((v) => {
      if (!current()) return;
      drawBoard(v);
      if (openLinked(state.scrollPending)) state.scrollPending = false; // a shared link: scrolled to once
    }),
    Promise.all([api(`/api/v1/sectors?weeks=${$("weeks").value}` + ($("country").value ? `&country=${$("country").value}` : ""), { signal }),
      list.catch(() => null)]).then(([v]) => current() && drawChart(v)),
    // Not held back by the sources (another service behind the proxy): names fill in when they come.
    Promise.all([api("/api/v1/events?limit=25&" + params.toString(), { signal }), list.catch(() => null)])
      .then(([v]) => current() && drawEvents(v)),
  ];
  let results;
  try { results = await Promise.allSettled(panels); } finally { clearTimeout(timeout); }
  if (!current()) return; // a newer refresh is under way: its answers count
  state.controller = null;
  const failed = results.find((r) => r.status === "rejected");
  showLoadError(failed ? failed.reason.message : "");
}

// Polls while the tab is shown; the next one is scheduled when this one has ended (never two timers).
async function poll() {
  if (!document.hidden) await refresh().catch((e) => showLoadError(e.message));
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(poll, POLL_MS);
}

async function init() {
  window.addEventListener("hashchange", () => openLinked(true));
  for (const id of ["country", "weeks", "sector"]) $(id).addEventListener("change", refresh);
  let timer; $("q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 300); });
  $("keyform").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("key").value.trim(); state.keyScope = "";
    sessionStorage.setItem("corridor-key", state.key);
    refresh(); loadSubscriptions();
  });
  // Whether reads need a key at all (a keyless read answered 401): only then do links carry one.
  // Asked beside the first refresh, bounded like it: a slow answer holds back no panel.
  fetch("/api/v1/sectors?weeks=1", { headers: { Accept: "application/json" }, signal: AbortSignal.timeout(REFRESH_TIMEOUT_MS) })
    .then((r) => {
      const needed = r.status === 401;
      if (needed === state.readsNeedKey) return;
      state.readsNeedKey = needed;
      if (state.events) drawEvents(state.events); // the links again, not a whole refresh
    }).catch(() => { /* unknown: links carry no key */ });
  $("ics").href = apiLink("/api/v1/agreements.ics");
  $("subform").addEventListener("submit", subscribe);
  $("controls").addEventListener("submit", (e) => e.preventDefault());
  let resized; // the chart is drawn at its width: draw it again when that changes
  window.addEventListener("resize", () => { clearTimeout(resized); resized = setTimeout(() => state.chartData && drawChart(state.chartData), 150); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); }); // shown again: refresh now
  await refresh().catch((e) => showLoadError(e.message));
  loadSubscriptions();
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(poll, POLL_MS);
}

init();
