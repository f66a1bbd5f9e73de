// The command-centre console: sign-in, live alert feed, alert detail with
// actions, district vital signs, department performance and the audit trail.

import { AlertStream, ApiError, createClient } from "./api.js";
import { lineChart, mergeSeries } from "./chart.js";
import { HTML_LANG, LOCALE, pickLang, translate } from "./i18n.js";
import { LABELS } from "./labels.js";

const TOKEN_KEY = "cityvitals.token";
const LANG_KEY = "cityvitals.lang";
const FILTER_KEY = "cityvitals.filters";
// grades and kinds as the product names them (streams/core/messages.py)
const ROMAN = Object.fromEntries(Object.entries(LABELS.grades).map(([g, l]) => [g, l.roman]));
const GRADES = Object.keys(LABELS.grades).map(Number).sort((a, b) => a - b);
const KINDS = Object.keys(LABELS.kinds);
const ACTIONS = ["acknowledge", "dispatch", "note", "resolve", "false_positive", "silence", "field_report", "reroute"];
const ACTION_KEYS = { acknowledge: "a", resolve: "r", note: "n", dispatch: "d", false_positive: "f", silence: "s" };
const SILENCE_CHOICES = [
  ["duration.30m", 1800],
  ["duration.1h", 3600],
  ["duration.2h", 7200],
  ["duration.4h", 14400],
  ["duration.8h", 28800],
  ["duration.24h", 86400],
];
const MAX_ALERTS = 500;
const DISTRICTS_REFRESH_MS = 10_000;
const FEED_RESYNC_MS = 60_000;

const $ = (id) => document.getElementById(id);

const state = {
  lang: pickLang(localStorage.getItem(LANG_KEY), navigator.language),
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  me: null,
  catalogue: null,
  names: null,
  view: null,
  filters: loadFilters(),
  alerts: new Map(),
  listFilters: null, // the filters of the list in state.alerts, as asked of the API
  feedLoaded: false,
  pending: null, // the latest list request on its way: { filters, buffered }; only its answer is applied
  fresh: new Set(),
  selectedId: null,
  detail: null,
  streamState: "closed",
  resync: false,
  vitals: null,
  performance: null,
  appealPerformance: null,
  appeals: null,
  appealsFilter: { department: "", hours: 24, day: null },
  report: null,
  audit: null,
  timers: { districts: null, ages: null, resync: null, announce: null, render: null },
  announcements: [],
};

const api = createClient(() => state.token);
const stream = new AlertStream(() => state.token, {
  onAlert: (alert) => receive(alert),
  onState: (s) => setStreamState(s),
  onClosed: () => streamClosed(),
});

// --- text ---------------------------------------------------------------------------

function t(key, vars) {
  return translate(state.lang, key, vars);
}

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function nameOf(entry, fallback) {
  if (!entry) return fallback ?? "";
  return (state.lang === "zh" ? entry.name_zh : entry.name_en) || entry.name_en || entry.name_zh || fallback;
}

const districtName = (code) => nameOf(state.names?.districts.get(code), code);
const streetName = (code) => nameOf(state.names?.streets.get(code), code);
const indicatorName = (code) => nameOf(state.names?.indicators.get(code), code);
const domainName = (code) => nameOf(state.names?.domains.get(code), code);
const departmentName = (code) => nameOf(state.names?.departments.get(code), code);
const unitOf = (code) => state.names?.indicators.get(code)?.unit ?? "";

function placeOf(alert) {
  const d = districtName(alert.district);
  const named = alert.evidence?.streets ?? [];
  if (!alert.street && named.length) {
    // a district's alert of appeals clustering in several streets names them
    const streets = named.map(streetName);
    return state.lang === "zh" ? `${d}（${streets.join("、")}）` : `${d} / ${streets.join(", ")}`;
  }
  if (!alert.street) return d;
  return state.lang === "zh" ? `${d}${streetName(alert.street)}` : `${d} / ${streetName(alert.street)}`;
}

function headlineOf(alert) {
  return (state.lang === "zh" ? alert.headline_zh : alert.headline_en) || alert.headline_en || alert.headline_zh || alert.alert_id;
}

function gradeVars(g) {
  return { roman: ROMAN[g] ?? String(g), colour: t(`grade.${g}`) };
}

function gradeBadge(g, extraClass = "") {
  const vars = gradeVars(g);
  return h(
    "span",
    { class: `grade grade-${g} ${extraClass}`.trim(), "data-grade": ROMAN[g] },
    h("span", { class: "grade-roman" }, state.lang === "zh" ? t("grade.level", vars) : vars.roman),
    " ",
    h("span", { class: "grade-word" }, state.lang === "zh" ? t("grade.word", vars) : vars.colour),
  );
}

function known(prefix, code) {
  const key = `${prefix}.${code}`;
  const text = t(key);
  return text === key ? String(code ?? "") : text;
}

const roleName = (role) => known("user.role", role);

function workflowPill(wf) {
  return h("span", { class: `wf wf-${wf}`, "data-workflow": wf }, t(`workflow.${wf}`));
}

// --- times and numbers ----------------------------------------------------------------

function timeZone() {
  return state.catalogue?.city?.timezone || undefined;
}

function fmtDateTime(iso) {
  const ms = typeof iso === "number" ? iso : Date.parse(iso);
  if (!Number.isFinite(ms)) return t("common.none");
  return new Intl.DateTimeFormat(LOCALE[state.lang], {
    timeZone: timeZone(),
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(ms);
}

function fmtClock(ms) {
  return new Intl.DateTimeFormat(LOCALE[state.lang], {
    timeZone: timeZone(),
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  }).format(ms);
}

function fmtNumber(v, digits) {
  if (v === null || v === undefined || !Number.isFinite(Number(v))) return t("common.none");
  const n = Number(v);
  const d = digits ?? (Math.abs(n) >= 100 ? 0 : Math.abs(n) >= 10 ? 1 : 2);
  return new Intl.NumberFormat(LOCALE[state.lang], { maximumFractionDigits: d }).format(n);
}

function withUnit(v, unit) {
  const text = fmtNumber(v);
  return unit && text !== t("common.none") ? `${text} ${unit}` : text;
}

function fmtSpan(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return t("common.none");
  const s = Math.round(Number(seconds));
  if (s < 60) return t("span.s", { n: s });
  if (s < 3600) return s % 60 ? t("span.ms", { m: Math.floor(s / 60), s: s % 60 }) : t("span.m", { n: s / 60 });
  const m = Math.round(s / 60);
  return m % 60 ? t("span.hm", { h: Math.floor(m / 60), m: m % 60 }) : t("span.h", { n: m / 60 });
}

function fmtAge(iso) {
  const ms = Date.now() - Date.parse(iso);
  if (!Number.isFinite(ms) || ms < 5_000) return t("age.now");
  const s = Math.floor(ms / 1000);
  if (s < 60) return t("age.s", { n: s });
  if (s < 3600) return t("age.m", { n: Math.floor(s / 60) });
  if (s < 86400) return t("age.h", { n: Math.floor(s / 3600) });
  return t("age.d", { n: Math.floor(s / 86400) });
}

function fmtPct(v) {
  if (v === null || v === undefined || !Number.isFinite(Number(v))) return t("common.none");
  return new Intl.NumberFormat(LOCALE[state.lang], { style: "percent", maximumFractionDigits: 1 }).format(Number(v));
}

// --- errors and announcements ---------------------------------------------------------

function errorText(err) {
  if (err instanceof ApiError) {
    const head =
      err.status === 0
        ? t("error.network")
        : [401, 403, 404].includes(err.status)
          ? t(`error.${err.status}`)
          : t("error.generic", { status: err.status });
    const parts = [err.error, err.detail].filter((p) => p && p !== "network");
    return parts.length ? `${head}: ${parts.join(" — ")}` : head;
  }
  return String(err?.message ?? err);
}

function showBanner(err) {
  $("banner-text").textContent = typeof err === "string" ? err : errorText(err);
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
  $("banner-text").textContent = "";
}

// 401 anywhere means the token is gone or wrong: back to the sign-in form.
function handleError(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut(errorText(err));
    return;
  }
  showBanner(err);
}

function announce(text) {
  const region = $("announcer");
  const line = h("p", {}, text);
  region.append(line);
  while (region.childElementCount > 5) region.firstElementChild.remove();
}

function queueNewAlertAnnouncement(alert) {
  state.announcements.push(alert);
  if (state.timers.announce) return;
  state.timers.announce = setTimeout(() => {
    state.timers.announce = null;
    const items = state.announcements.splice(0);
    if (!items.length) return;
    items.sort(compareAlerts);
    const top = items[0];
    const grade = t("grade.full", gradeVars(top.grade));
    announce(
      items.length === 1
        ? t("live.new", { grade, headline: headlineOf(top) })
        : t("live.many", { n: items.length, grade, headline: headlineOf(top) }),
    );
  }, 600);
}

// --- language ---------------------------------------------------------------------------

function applyStaticText() {
  document.documentElement.lang = HTML_LANG[state.lang];
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  }
  for (const b of document.querySelectorAll(".lang-switch [data-lang]")) {
    b.setAttribute("aria-pressed", String(b.dataset.lang === state.lang));
  }
  const city = state.catalogue?.city;
  $("city-name").textContent = city ? nameOf(city, "") : "";
  document.title = city ? `${nameOf(city, "")} · ${t("app.title")}` : t("app.title");
  renderUser();
}

function setLang(lang) {
  if (lang === state.lang) return;
  state.lang = lang;
  localStorage.setItem(LANG_KEY, lang);
  applyStaticText();
  if (state.me) {
    buildFilters();
    renderFeedNow(true);
    renderLiveState();
    if (state.detail) renderDetail();
    renderView();
  }
}

// --- sign-in ------------------------------------------------------------------------------

function renderUser() {
  const me = state.me;
  $("user-box").hidden = !me;
  if (!me) return;
  $("user-name").textContent = me.display_name || me.user;
  const dept = me.department ? ` · ${departmentName(me.department)}` : "";
  $("user-role").textContent = `${t(`user.role.${me.role}`)}${dept} (${me.user})`;
}

function showOnly(id) {
  for (const s of ["boot", "login-view", "feed-view", "districts-view", "appeals-view", "report-view", "performance-view", "audit-view"]) {
    $(s).hidden = s !== id;
  }
}

function showLogin(message) {
  state.view = "login";
  $("nav").hidden = true;
  showOnly("login-view");
  $("token-error").textContent = message || "";
  const input = $("token-input");
  input.setAttribute("aria-invalid", message ? "true" : "false");
  input.focus();
}

async function signIn(token) {
  state.token = token;
  const me = await api.me();
  const catalogue = await api.catalogue();
  sessionStorage.setItem(TOKEN_KEY, token);
  state.me = me;
  state.catalogue = catalogue;
  state.names = indexCatalogue(catalogue);
  if (!me.may_list_history && !["open", "wf_open", "acknowledged", "dispatched"].includes(state.filters.state)) {
    state.filters.state = "open";
  }
  applyStaticText();
  buildNav();
  buildFilters();
  hideBanner();
  if (me.may_see_alerts) {
    stream.open();
    loadFeed();
    clearInterval(state.timers.resync);
    state.timers.resync = setInterval(() => loadFeed(), FEED_RESYNC_MS);
  }
  clearInterval(state.timers.ages);
  state.timers.ages = setInterval(updateAges, 15_000);
  route();
}

function signOut(message) {
  stream.close();
  for (const k of ["districts", "ages", "resync"]) {
    clearInterval(state.timers[k]);
    state.timers[k] = null;
  }
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, {
    token: "",
    me: null,
    alerts: new Map(),
    listFilters: null,
    feedLoaded: false,
    pending: null, // a list still on its way is not applied
    selectedId: null,
    detail: null,
    vitals: null,
    performance: null,
    audit: null,
  });
  $("feed").replaceChildren();
  $("detail").replaceChildren();
  $("detail").hidden = true;
  hideBanner();
  renderUser();
  if (location.hash) history.replaceState(null, "", location.pathname);
  showLogin(message);
}

function indexCatalogue(cat) {
  const districts = new Map();
  const streets = new Map();
  for (const d of cat.districts ?? []) {
    districts.set(d.code, d);
    for (const s of d.streets ?? []) streets.set(s.code, { ...s, district: d.code });
  }
  const byCode = (list) => new Map((list ?? []).map((x) => [x.code, x]));
  return {
    districts,
    streets,
    indicators: byCode(cat.indicators),
    domains: byCode(cat.domains),
    departments: byCode(cat.departments),
  };
}

// --- navigation ---------------------------------------------------------------------------

function allowedViews() {
  const me = state.me;
  if (!me) return [];
  const views = [];
  if (me.may_see_alerts) views.push("feed");
  views.push("districts");
  if (me.role === "operator" || me.role === "department") views.push("appeals", "performance", "report");
  if (me.may_read_audit) views.push("audit");
  return views;
}

function buildNav() {
  const allowed = allowedViews();
  for (const a of document.querySelectorAll("#nav [data-view]")) {
    a.parentElement.hidden = !allowed.includes(a.dataset.view);
  }
  $("nav").hidden = allowed.length < 2;
  const actions = new Set(state.me?.actions ?? []);
  for (const row of document.querySelectorAll("#help-dialog tr[data-action]")) {
    row.hidden = !actions.has(row.dataset.action);
  }
}

function route() {
  if (!state.me) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const allowed = allowedViews();
  let view = parts[0];
  if (!allowed.includes(view)) {
    view = allowed[0];
    history.replaceState(null, "", `#/${view}`);
  }
  const changed = state.view !== null && state.view !== "login" && state.view !== view;
  state.view = view;
  for (const a of document.querySelectorAll("#nav [data-view]")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  showOnly(`${view}-view`);
  clearInterval(state.timers.districts);
  state.timers.districts = null;
  if (view === "feed") {
    const id = parts[1] ? decodeURIComponent(parts.slice(1).join("/")) : null;
    if (id && state.detail?.id !== id) openDetail(id);
    else if (!id && state.detail) closeDetail(false);
  } else if (view === "districts") {
    loadDistricts();
    state.timers.districts = setInterval(loadDistricts, DISTRICTS_REFRESH_MS);
  } else if (view === "appeals") {
    loadAppeals();
  } else if (view === "report") {
    loadReport();
  } else if (view === "performance") {
    loadPerformance();
  } else if (view === "audit") {
    loadAudit();
  }
  if (changed && view !== "feed") $(`${view}-title`).focus?.();
}

function renderView() {
  if (state.view === "districts") renderDistricts();
  else if (state.view === "performance") renderPerformance();
  else if (state.view === "appeals") renderAppeals();
  else if (state.view === "report") renderReport();
  else if (state.view === "audit") renderAudit();
}

// --- filters --------------------------------------------------------------------------

function defaultFilters() {
  return { district: "", domain: "", kind: "", department: "", state: "open", grades: [] };
}

function loadFilters() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(FILTER_KEY) || "null");
    if (saved && typeof saved === "object") return { ...defaultFilters(), ...saved };
  } catch {
    // fall through
  }
  return defaultFilters();
}

function saveFilters() {
  sessionStorage.setItem(FILTER_KEY, JSON.stringify(state.filters));
}

function stateChoices() {
  const base = ["open", "wf_open", "acknowledged", "dispatched"];
  return state.me?.may_list_history ? [...base, "resolved", "false_positive", "all"] : base;
}

function selectField(id, labelKey, value, options) {
  const select = h(
    "select",
    { id, name: id },
    options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)),
  );
  return h("div", { class: "field" }, h("label", { for: id }, t(labelKey)), select);
}

function buildFilters() {
  const form = $("filters");
  const f = state.filters;
  const any = ["", t("filters.any")];
  const cat = state.catalogue ?? {};
  const districts = [...(cat.districts ?? [])]
    .filter((d) => {
      const me = state.me;
      if (me?.role !== "area" && me?.role !== "responder") return true;
      if (!me.districts?.length && !me.streets?.length) return true;
      return me.districts?.includes(d.code) || (d.streets ?? []).some((s) => me.streets?.includes(s.code));
    })
    .map((d) => [d.code, nameOf(d, d.code)]);
  const grades = h(
    "fieldset",
    { class: "field grades" },
    h("legend", {}, t("filters.grade")),
    GRADES.map((g) =>
      h(
        "label",
        { class: `grade-check grade-check-${g}` },
        h("input", { type: "checkbox", name: "grade", value: String(g), checked: f.grades.includes(g) }),
        " ",
        gradeBadge(g),
      ),
    ),
  );
  form.replaceChildren(
    selectField("f-district", "filters.district", f.district, [any, ...districts]),
    selectField("f-domain", "filters.domain", f.domain, [
      any,
      ...(cat.domains ?? []).map((d) => [d.code, nameOf(d, d.code)]),
    ]),
    grades,
    selectField("f-kind", "filters.kind", f.kind, [any, ...KINDS.map((k) => [k, t(`kind.${k}`)])]),
    selectField(
      "f-state",
      "filters.state",
      f.state,
      stateChoices().map((s) => [s, t(`filters.state.${s}`)]),
    ),
    selectField("f-department", "filters.department", f.department, [
      any,
      ...(cat.departments ?? []).map((d) => [d.code, nameOf(d, d.code)]),
    ]),
    h("div", { class: "field field-button" }, h("button", { type: "reset", class: "quiet" }, t("filters.reset"))),
  );
}

function readFilters() {
  const form = $("filters");
  const v = (id) => form.querySelector(`#${id}`)?.value ?? "";
  state.filters = {
    district: v("f-district"),
    domain: v("f-domain"),
    kind: v("f-kind"),
    department: v("f-department"),
    state: v("f-state") || "open",
    grades: [...form.querySelectorAll("input[name=grade]:checked")].map((i) => Number(i.value)),
  };
  saveFilters();
}

function filterParams(f = state.filters) {
  const p = new URLSearchParams();
  for (const k of ["district", "domain", "kind", "department"]) if (f[k]) p.set(k, f[k]);
  for (const g of f.grades) p.append("grade", ROMAN[g]);
  switch (f.state) {
    case "open":
      p.set("open", "true");
      break;
    case "wf_open":
      p.set("workflow", "open");
      p.set("open", "true");
      break;
    case "acknowledged":
    case "dispatched":
    case "false_positive":
      p.set("workflow", f.state);
      break;
    case "resolved":
      p.set("status", "resolved");
      break;
    default:
      break;
  }
  p.set("limit", "200");
  return p;
}

function isOpen(a) {
  return a.status !== "resolved" && a.workflow !== "resolved" && a.workflow !== "false_positive";
}

// The open red (grade I) alert of the same district and domain that holds this one
// back from notification, among the alerts the console holds (the earliest first).
function inhibitorOf(a) {
  if (a.grade === 1 || !isOpen(a)) return null;
  let red = null;
  for (const o of state.alerts.values()) {
    if (o.grade !== 1 || o.fingerprint === a.fingerprint || !isOpen(o)) continue;
    if (o.district !== a.district || o.domain !== a.domain) continue;
    if (!red || o.first_seen < red.first_seen || (o.first_seen === red.first_seen && o.alert_id < red.alert_id)) red = o;
  }
  return red ? red.alert_id : null;
}

function matchesFilters(a, f = state.filters) {
  if (f.district && a.district !== f.district) return false;
  if (f.domain && a.domain !== f.domain) return false;
  if (f.kind && a.kind !== f.kind) return false;
  if (f.department && a.department !== f.department && !(a.co_departments ?? []).includes(f.department)) {
    return false;
  }
  if (f.grades.length && !f.grades.includes(a.grade)) return false;
  switch (f.state) {
    case "open":
      return isOpen(a);
    case "wf_open":
      return isOpen(a) && a.workflow === "open";
    case "acknowledged":
    case "dispatched":
    case "false_positive":
      return a.workflow === f.state;
    case "resolved":
      return a.status === "resolved";
    default:
      return true;
  }
}

// --- the feed -----------------------------------------------------------------------------

function compareAlerts(a, b) {
  return a.grade - b.grade || Date.parse(b.last_update) - Date.parse(a.last_update) || (a.alert_id < b.alert_id ? -1 : 1);
}

// Every load asks anew with the filters as they are at that moment, and only the
// answer to the latest request is applied: an older list answering late (a slow
// request under load, a filter changed twice, a resync racing a reload) cannot
// replace a newer one. Live events arriving meanwhile are kept for the list on its
// way and merged into it once it is in; the list shown takes only those that match
// its own filters, never the filters of a list not yet arrived.
async function loadFeed() {
  if (!state.me?.may_see_alerts) return;
  const filters = { ...state.filters, grades: [...state.filters.grades] };
  const pending = { filters, buffered: [] };
  state.pending = pending;
  $("feed").setAttribute("aria-busy", "true");
  const latest = () => state.pending === pending;
  try {
    const body = await api.alerts(filterParams(filters));
    if (!latest()) return;
    const next = new Map();
    for (const a of body.alerts ?? []) next.set(a.alert_id, a);
    state.alerts = next;
    state.listFilters = filters;
    state.feedLoaded = true;
    state.pending = null;
    for (const a of pending.buffered) upsert(a, false);
    renderFeedNow(false);
  } catch (err) {
    if (!latest()) return;
    state.pending = null;
    handleError(err);
  } finally {
    if (state.pending === null) $("feed").setAttribute("aria-busy", "false");
  }
}

function upsert(alert, live) {
  const prev = state.alerts.get(alert.alert_id);
  if (prev && prev.sequence > alert.sequence) return false;
  if (matchesFilters(alert, state.listFilters ?? state.filters)) {
    state.alerts.set(alert.alert_id, alert);
    if (live && !prev && alert.status !== "resolved") {
      queueNewAlertAnnouncement(alert);
      state.fresh.add(alert.alert_id);
    }
    if (state.alerts.size > MAX_ALERTS) {
      const worst = [...state.alerts.values()].sort(compareAlerts).slice(MAX_ALERTS);
      for (const a of worst) if (a.alert_id !== state.selectedId) state.alerts.delete(a.alert_id);
    }
  } else if (prev && state.detail?.id === alert.alert_id) {
    state.alerts.set(alert.alert_id, alert);
  } else if (prev) {
    state.alerts.delete(alert.alert_id);
  }
  return true;
}

function receive(alert) {
  if (state.pending) state.pending.buffered.push(alert);
  if (state.feedLoaded) upsert(alert, true);
  scheduleFeedRender();
  const d = state.detail;
  if (d && d.id === alert.alert_id) {
    const before = d.alert;
    // the stream carries whole events: the timeline grows here, without another read
    d.timeline = [...d.timeline.filter((e) => e.sequence !== alert.sequence), alert].sort(
      (x, y) => x.sequence - y.sequence,
    );
    if (!before || alert.sequence >= before.sequence) d.alert = alert;
    const mine = settlePending();
    if (!mine && before && alert.workflow !== before.workflow && alert.sequence > before.sequence) {
      announce(t("live.updated", { headline: headlineOf(alert), workflow: t(`workflow.${alert.workflow}`) }));
    }
    scheduleDetailRender();
  }
}

function scheduleDetailRender() {
  const d = state.detail;
  if (!d || d.renderTimer) return;
  d.renderTimer = setTimeout(() => {
    d.renderTimer = null;
    if (state.detail === d) renderDetail();
  }, 30);
}

function scheduleFeedRender() {
  if (state.timers.render) return;
  state.timers.render = setTimeout(() => {
    state.timers.render = null;
    renderFeedNow(false);
  }, 30);
}

function feedItem(alert) {
  const li = h("li", {
    role: "option",
    id: `alert-${alert.alert_id}`,
    "data-alert-id": alert.alert_id,
    tabindex: "-1",
    "aria-selected": "false",
  });
  fillFeedItem(li, alert);
  li.addEventListener("click", () => {
    selectAlert(alert.alert_id, true);
    openFromFeed(alert.alert_id);
  });
  return li;
}

function fillFeedItem(li, a) {
  li.className = `alert-item grade-edge-${a.grade}${isOpen(a) ? "" : " is-closed"}`;
  li.dataset.seq = String(a.sequence);
  li.dataset.workflow = a.workflow;
  li.dataset.lang = state.lang;
  const inhibited = inhibitorOf(a);
  li.dataset.inhibited = inhibited ?? "";
  const flags = [];
  if (a.silenced_by) flags.push(h("span", { class: "flag" }, t("feed.silenced")));
  if (inhibited) flags.push(h("span", { class: "flag" }, t("feed.inhibited")));
  const meta = [placeOf(a), t(`kind.${a.kind}`), a.domain ? domainName(a.domain) : null, departmentName(a.department)]
    .filter(Boolean)
    .join(" · ");
  li.replaceChildren(
    gradeBadge(a.grade, "grade-small"),
    h(
      "div",
      { class: "alert-main" },
      h("span", { class: "alert-headline" }, headlineOf(a)),
      h("span", { class: "alert-meta" }, meta, flags.length ? " " : "", flags),
    ),
    h(
      "div",
      { class: "alert-side" },
      workflowPill(a.workflow),
      h("time", { datetime: a.last_update, class: "age", title: fmtDateTime(a.last_update) }, fmtAge(a.last_update)),
    ),
  );
}

function renderFeedNow(force) {
  const list = $("feed");
  if (!state.feedLoaded) return;
  const ordered = [...state.alerts.values()].sort(compareAlerts);
  const focusedId = document.activeElement?.closest?.("#feed [data-alert-id]")?.dataset.alertId ?? null;
  const existing = new Map([...list.children].map((li) => [li.dataset.alertId, li]));
  const keep = new Set(ordered.map((a) => a.alert_id));
  for (const [id, li] of existing) if (!keep.has(id)) li.remove();
  ordered.forEach((a, i) => {
    let li = existing.get(a.alert_id);
    if (!li) {
      li = feedItem(a);
      if (state.fresh.has(a.alert_id)) {
        li.classList.add("is-new");
        setTimeout(() => li.classList.remove("is-new"), 4000);
      }
    } else if (
      force ||
      li.dataset.seq !== String(a.sequence) ||
      li.dataset.lang !== state.lang ||
      li.dataset.inhibited !== (inhibitorOf(a) ?? "")
    ) {
      const fresh = li.classList.contains("is-new");
      fillFeedItem(li, a);
      if (fresh) li.classList.add("is-new");
    }
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });
  if (state.selectedId && !keep.has(state.selectedId) && !state.detail) state.selectedId = null;
  markSelection();
  if (focusedId && document.activeElement !== $(`alert-${focusedId}`)) {
    const again = list.querySelector(`[data-alert-id="${CSS.escape(focusedId)}"]`);
    if (again) again.focus({ preventScroll: true });
    else list.querySelector('[tabindex="0"]')?.focus({ preventScroll: true });
  }
  state.fresh.clear();
  $("feed-count").textContent = t(ordered.length === 1 ? "feed.count_one" : "feed.count", { n: ordered.length });
  $("feed-empty").hidden = ordered.length > 0;
  list.hidden = ordered.length === 0;
}

function markSelection() {
  const items = [...$("feed").children];
  const selected = items.find((li) => li.dataset.alertId === state.selectedId) ?? null;
  for (const li of items) {
    li.setAttribute("aria-selected", String(li === selected));
    li.tabIndex = -1;
  }
  (selected ?? items[0])?.setAttribute("tabindex", "0");
}

function selectAlert(id, focus) {
  state.selectedId = id;
  markSelection();
  const li = $(`alert-${id}`);
  if (li && focus) {
    li.focus();
    li.scrollIntoView({ block: "nearest" });
  }
}

function moveSelection(delta, edge) {
  const items = [...$("feed").children];
  if (!items.length) return;
  const current = items.findIndex((li) => li === document.activeElement || li.dataset.alertId === state.selectedId);
  let i = edge === "first" ? 0 : edge === "last" ? items.length - 1 : current < 0 ? 0 : current + delta;
  i = Math.max(0, Math.min(items.length - 1, i));
  selectAlert(items[i].dataset.alertId, true);
}

function openFromFeed(id) {
  const target = `#/feed/${encodeURIComponent(id)}`;
  if (location.hash === target) openDetail(id);
  else location.hash = target;
}

function updateAges() {
  for (const node of document.querySelectorAll("#feed time.age")) {
    node.textContent = fmtAge(node.getAttribute("datetime"));
  }
}

// --- live stream ------------------------------------------------------------------------

function setStreamState(s) {
  const wasDown = state.streamState === "closed" || state.streamState === "reconnecting";
  state.streamState = s;
  renderLiveState();
  if (s === "connected" && state.resync && wasDown) {
    state.resync = false;
    loadFeed();
  }
}

function renderLiveState() {
  const node = $("live-state");
  node.textContent = t(`live.${state.streamState}`);
  node.dataset.state = state.streamState;
}

async function streamClosed() {
  state.resync = true;
  try {
    await api.me();
    stream.reopenLater(3000);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) handleError(err);
    else stream.reopenLater(5000);
  }
}

// --- alert detail -------------------------------------------------------------------------

async function openDetail(id) {
  state.selectedId = id;
  markSelection();
  state.detail = { id, alert: state.alerts.get(id) ?? null, timeline: [], form: null, message: null, pending: [] };
  const pane = $("detail");
  pane.hidden = false;
  $("feed-layout").classList.add("with-detail");
  buildDetailSkeleton();
  renderDetail();
  const heading = $("detail-headline");
  heading.focus();
  await fetchDetail();
}

async function fetchDetail() {
  const d = state.detail;
  if (!d) return;
  const id = d.id;
  try {
    const body = await api.alert(id);
    if (state.detail?.id !== id) return;
    // events the stream delivered while this read was under way are kept
    const bySeq = new Map((body.timeline ?? []).map((e) => [e.sequence, e]));
    for (const e of d.timeline) if (!bySeq.has(e.sequence)) bySeq.set(e.sequence, e);
    d.timeline = [...bySeq.values()].sort((x, y) => x.sequence - y.sequence);
    const newest = d.timeline[d.timeline.length - 1];
    d.alert = newest && newest.sequence > body.alert.sequence ? newest : body.alert;
    d.error = null;
    const prev = state.alerts.get(id);
    if (prev && prev.sequence <= d.alert.sequence) {
      state.alerts.set(id, d.alert);
      scheduleFeedRender();
    }
    settlePending();
  } catch (err) {
    if (state.detail?.id !== id) return;
    if (err instanceof ApiError && err.status === 401) {
      handleError(err);
      return;
    }
    d.error = err;
  }
  renderDetail();
}

function closeDetail(updateHash = true) {
  const d = state.detail;
  if (!d) return;
  clearTimeout(d.renderTimer);
  for (const timer of d.pending.map((p) => p.timers).flat()) clearTimeout(timer);
  state.detail = null;
  const shown = state.alerts.get(d.id);
  if (shown && !matchesFilters(shown)) state.alerts.delete(d.id);
  $("detail").hidden = true;
  $("detail").replaceChildren();
  $("feed-layout").classList.remove("with-detail");
  if (updateHash && location.hash.startsWith("#/feed/")) history.pushState(null, "", "#/feed");
  renderFeedNow(false);
  const li = $(`alert-${d.id}`);
  if (li) selectAlert(d.id, true);
  else ($("feed").querySelector('[tabindex="0"]') ?? $("feed-heading")).focus();
}

function buildDetailSkeleton() {
  const pane = $("detail");
  pane.replaceChildren(
    h(
      "div",
      { class: "detail-head" },
      h("div", { id: "detail-grade", class: "detail-grade" }),
      h("h2", { id: "detail-headline", tabindex: "-1" }),
      h("button", { type: "button", id: "detail-close", class: "quiet close", "aria-keyshortcuts": "Escape" }),
    ),
    h("p", { id: "detail-error", class: "form-error", role: "alert" }),
    h("dl", { id: "detail-facts", class: "facts" }),
    h("section", { class: "detail-actions", "aria-labelledby": "actions-title" },
      h("h3", { id: "actions-title" }),
      h("div", { id: "action-buttons", class: "action-buttons" }),
      h("div", { id: "action-form-area" }),
      h("p", { id: "action-status", class: "action-status", role: "status" }),
    ),
    h("section", { "aria-labelledby": "evidence-title" },
      h("h3", { id: "evidence-title" }),
      h("dl", { id: "detail-evidence", class: "facts" }),
      h("div", { id: "detail-members" }),
    ),
    h("section", { "aria-labelledby": "chart-title", class: "chart-section" },
      h("h3", { id: "chart-title" }),
      h("div", { id: "detail-chart" }),
    ),
    h("section", { "aria-labelledby": "timeline-title" },
      h("h3", { id: "timeline-title" }),
      h("ol", { id: "detail-timeline", class: "timeline" }),
    ),
  );
  $("detail-close").addEventListener("click", () => closeDetail());
  buildActionButtons();
}

function allowedActions() {
  const mine = new Set(state.me?.actions ?? []);
  return ACTIONS.filter((a) => mine.has(a));
}

function buildActionButtons() {
  const box = $("action-buttons");
  const allowed = allowedActions();
  box.replaceChildren(
    ...allowed.map((action) => {
      const key = ACTION_KEYS[action];
      const b = h(
        "button",
        {
          type: "button",
          class: action === "acknowledge" || action === "resolve" ? "primary" : "",
          "data-action": action,
          "aria-keyshortcuts": key,
        },
        h("span", { class: "label" }),
        key ? h("kbd", { "aria-hidden": "true" }, key) : null,
      );
      b.addEventListener("click", () => startAction(action));
      return b;
    }),
  );
}

function actionEnabled(action, alert) {
  if (!alert) return false;
  const open = isOpen(alert);
  switch (action) {
    case "acknowledge":
      return open && alert.workflow === "open";
    case "resolve":
    case "false_positive":
    case "dispatch":
      return open;
    case "reroute":
      return open && mayReroute(alert);
    default:
      return true;
  }
}

function renderActionButtons() {
  const d = state.detail;
  const alert = d?.alert;
  for (const b of document.querySelectorAll("#action-buttons [data-action]")) {
    const action = b.dataset.action;
    b.querySelector(".label").textContent = t(`action.${action}`);
    const key = ACTION_KEYS[action];
    b.title = key ? t("action.key", { key }) : "";
    b.setAttribute("aria-disabled", String(!actionEnabled(action, alert) || Boolean(d?.sending)));
    if (action !== "acknowledge") b.setAttribute("aria-expanded", String(d?.form === action));
  }
  $("actions-title").textContent = t("action.legend");
  if (!allowedActions().length) $("action-status").textContent = t("action.none");
}

function startAction(action) {
  const d = state.detail;
  if (!d?.alert || d.sending) return;
  if (!allowedActions().includes(action) || !actionEnabled(action, d.alert)) return;
  if (action === "acknowledge") {
    submitAction({ action });
    return;
  }
  openActionForm(action);
}

function openActionForm(action) {
  const d = state.detail;
  d.form = action;
  const area = $("action-form-area");
  const fields = [];
  if (action === "dispatch" || action === "reroute") {
    const options = (state.catalogue?.departments ?? [])
      .filter((x) => x.code !== d.alert.department)
      .map((x) => h("option", { value: x.code }, nameOf(x, x.code)));
    fields.push(
      h("div", { class: "field" },
        h("label", { for: "action-department" }, t(action === "reroute" ? "appeals.reroute_to" : "action.department_label")),
        h("select", { id: "action-department", name: "department", required: true }, options),
      ),
    );
  }
  if (action === "silence") {
    fields.push(
      h("div", { class: "field" },
        h("label", { for: "action-duration" }, t("action.duration_label")),
        h(
          "select",
          { id: "action-duration", name: "silence_s" },
          SILENCE_CHOICES.map(([key, s]) => h("option", { value: String(s), selected: s === 7200 }, t(key))),
        ),
      ),
    );
  }
  const required = action === "note" || action === "field_report" || action === "reroute";
  fields.push(
    h("div", { class: "field field-wide" },
      h("label", { for: "action-note" }, t(action === "reroute" ? "appeals.reroute_reason" : "action.note_label")),
      h("textarea", {
        id: "action-note",
        name: "note",
        rows: "3",
        maxlength: "4000",
        required,
        "aria-describedby": "action-note-hint action-form-error",
      }),
      h("span", { id: "action-note-hint", class: "hint" }, t("action.ctrl_enter")),
    ),
  );
  const form = h(
    "form",
    { id: "action-form", class: "action-form", "data-action": action, "aria-labelledby": "action-form-title", novalidate: true },
    h("h4", { id: "action-form-title" }, t(`action.${action}`)),
    fields,
    h("p", { id: "action-form-error", class: "form-error", "aria-live": "assertive" }),
    h("div", { class: "form-buttons" },
      h("button", { type: "submit", class: "primary", id: "action-submit" }, t("action.submit", { action: t(`action.${action}`) })),
      h("button", { type: "button", class: "quiet", id: "action-cancel" }, t("action.cancel")),
    ),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submitForm(form);
  });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      submitForm(form);
    }
  });
  form.querySelector("#action-cancel").addEventListener("click", () => closeActionForm(true));
  area.replaceChildren(form);
  renderActionButtons();
  form.querySelector("select, textarea")?.focus();
}

function closeActionForm(focusButton) {
  const d = state.detail;
  if (!d?.form) return false;
  const action = d.form;
  d.form = null;
  $("action-form-area").replaceChildren();
  renderActionButtons();
  if (focusButton) document.querySelector(`#action-buttons [data-action="${action}"]`)?.focus();
  return true;
}

function submitForm(form) {
  const action = form.dataset.action;
  const note = form.querySelector("#action-note")?.value.trim() ?? "";
  if ((action === "note" || action === "field_report" || action === "reroute") && !note) {
    form.querySelector("#action-form-error").textContent = t("action.note_required");
    form.querySelector("#action-note").setAttribute("aria-invalid", "true");
    form.querySelector("#action-note").focus();
    return;
  }
  const body = { action };
  if (note) body.note = note;
  if (action === "dispatch" || action === "reroute") body.department = form.querySelector("#action-department").value;
  if (action === "silence") body.silence_s = Number(form.querySelector("#action-duration").value);
  submitAction(body);
}

async function submitAction(body) {
  const d = state.detail;
  if (!d?.alert || d.sending) return;
  const id = d.id;
  d.sending = true;
  renderActionButtons();
  const label = t(`action.${body.action}`);
  $("action-status").textContent = t("action.sending");
  try {
    const res = await api.act(id, body);
    if (state.detail?.id !== id) return;
    d.sending = false;
    if (d.form) closeActionForm(false);
    $("detail-headline").focus();
    const actionId = res?.action?.action_id;
    const pending = { actionId, action: body.action, timers: [] };
    d.pending.push(pending);
    $("action-status").textContent = t("action.accepted", { action: label });
    // the stream normally brings the update; these reads catch one it did not bring
    pending.timers = [3000, 10000].map((ms) =>
      setTimeout(() => {
        if (state.detail?.id === id && state.detail.pending.includes(pending)) fetchDetail();
      }, ms),
    );
  } catch (err) {
    if (state.detail?.id !== id) return;
    d.sending = false;
    if (err instanceof ApiError && err.status === 401) {
      handleError(err);
      return;
    }
    const text = errorText(err);
    const formError = document.querySelector("#action-form-error");
    if (formError) formError.textContent = text;
    $("action-status").textContent = text;
  }
  renderActionButtons();
}

function settlePending() {
  const d = state.detail;
  if (!d?.pending.length) return false;
  const seen = new Set();
  for (const ev of [...d.timeline, d.alert]) for (const a of ev?.actions ?? []) seen.add(a.action_id);
  const done = d.pending.filter((p) => p.actionId && seen.has(p.actionId));
  if (!done.length) return false;
  d.pending = d.pending.filter((p) => !done.includes(p));
  for (const p of done) for (const timer of p.timers) clearTimeout(timer);
  const text = done.map((p) => t("action.applied", { action: t(`action.${p.action}`) })).join(" ");
  $("action-status").textContent = text;
  announce(text);
  return true;
}

function fact(dl, labelKey, value, attrs) {
  if (value === null || value === undefined || value === "") return;
  const dd = h("dd", attrs ?? {});
  if (value instanceof Node) dd.append(value);
  else dd.textContent = String(value);
  dl.append(h("dt", {}, t(labelKey)), dd);
}

function renderDetail() {
  const d = state.detail;
  if (!d) return;
  $("detail-close").textContent = "×";
  $("detail-close").setAttribute("aria-label", t("detail.close"));
  $("detail-close").title = t("detail.close");
  $("evidence-title").textContent = t("detail.evidence");
  $("chart-title").textContent = t("detail.chart");
  $("timeline-title").textContent = t("detail.timeline");
  const error = $("detail-error");
  if (d.error) {
    const forbidden = d.error instanceof ApiError && d.error.status === 403;
    error.textContent = forbidden ? `${t("detail.forbidden")} ${errorText(d.error)}` : errorText(d.error);
  } else {
    error.textContent = "";
  }
  const a = d.alert;
  const heading = $("detail-headline");
  if (!a) {
    heading.textContent = d.error ? t("detail.label") : t("detail.loading");
    renderActionButtons();
    return;
  }
  heading.textContent = headlineOf(a);
  $("detail").dataset.alertId = a.alert_id;
  $("detail").dataset.workflow = a.workflow;
  $("detail-grade").replaceChildren(
    gradeBadge(a.grade),
    " ",
    workflowPill(a.workflow),
  );
  renderFacts(a);
  renderEvidence(a);
  renderChart(a, d.timeline);
  renderTimeline(a, d.timeline);
  renderActionButtons();
}

function renderFacts(a) {
  const dl = $("detail-facts");
  dl.replaceChildren();
  fact(dl, "detail.place", placeOf(a));
  fact(dl, "detail.kind", t(`kind.${a.kind}`));
  if (a.domain) fact(dl, "detail.domain", domainName(a.domain));
  fact(dl, "detail.department", departmentName(a.department));
  if (a.co_departments?.length) fact(dl, "detail.co_departments", a.co_departments.map(departmentName).join("、"));
  fact(dl, "detail.status", t(`status.${a.status}`));
  fact(dl, "detail.workflow", t(`workflow.${a.workflow}`), { id: "detail-workflow", "data-workflow": a.workflow });
  fact(dl, "detail.first_seen", h("time", { datetime: a.first_seen }, fmtDateTime(a.first_seen)));
  fact(dl, "detail.last_update", h("time", { datetime: a.last_update }, `${fmtDateTime(a.last_update)} (${fmtAge(a.last_update)})`));
  if (a.silenced_by) fact(dl, "detail.silenced", a.silenced_by);
  const inhibited = inhibitorOf(a);
  if (inhibited) fact(dl, "detail.inhibited", inhibited);
  fact(dl, "detail.alert_id", h("code", {}, a.alert_id));
}

function renderEvidence(a) {
  const ev = a.evidence ?? {};
  const unit = a.indicators?.length === 1 ? unitOf(a.indicators[0]) : "";
  const dl = $("detail-evidence");
  dl.replaceChildren();
  fact(dl, "detail.rule", h("code", {}, ev.rule ?? ""));
  if (ev.aggregate) fact(dl, "detail.aggregate", ev.aggregate);
  if (Number.isFinite(ev.observed)) {
    let text = withUnit(ev.observed, unit);
    if (Number.isFinite(ev.threshold) && ev.threshold !== 0) {
      const rel = (ev.observed - ev.threshold) / Math.abs(ev.threshold);
      const pct = fmtPct(Math.abs(rel));
      text += ` (${rel >= 0 ? t("detail.over", { pct }) : t("detail.under", { pct })})`;
    }
    fact(dl, "detail.observed", text, { class: "observed" });
  }
  if (Number.isFinite(ev.threshold)) fact(dl, "detail.threshold", withUnit(ev.threshold, unit));
  if (Number.isFinite(ev.baseline)) fact(dl, "detail.baseline", withUnit(ev.baseline, unit));
  if (Number.isFinite(ev.score)) fact(dl, "detail.score", fmtNumber(ev.score, 3));
  if (ev.forecast) {
    fact(
      dl,
      "detail.forecast",
      t("detail.forecast_text", { value: withUnit(ev.forecast.value, unit), horizon: fmtSpan(ev.forecast.horizon_s) }),
    );
    if (ev.forecast.crossing_time) {
      fact(dl, "detail.crossing", h("time", { datetime: ev.forecast.crossing_time }, fmtDateTime(ev.forecast.crossing_time)));
    }
  }
  if (ev.window_start && ev.window_end) {
    fact(dl, "detail.window", `${fmtDateTime(ev.window_start)} – ${fmtDateTime(ev.window_end)}`);
  } else if (ev.window_end) {
    fact(dl, "detail.window", t("detail.window_end", { time: fmtDateTime(ev.window_end) }));
  }
  if (ev.detail) fact(dl, "detail.note", ev.detail);

  const box = $("detail-members");
  const appeals = ev.appeals?.length ? [appealsTable(ev.appeals)] : [];
  if (ev.members?.length) {
    box.replaceChildren(
      ...appeals,
      h(
        "table",
        { class: "data" },
        h("caption", {}, t("detail.members")),
        h(
          "thead",
          {},
          h("tr", {}, ["indicator", "street", "score", "time", "detail"].map((k) => h("th", { scope: "col" }, t(`detail.member.${k}`)))),
        ),
        h(
          "tbody",
          {},
          ev.members.map((m) =>
            h(
              "tr",
              {},
              h("td", {}, indicatorName(m.indicator)),
              h("td", {}, m.street ? streetName(m.street) : t("common.none")),
              h("td", { class: "num" }, fmtNumber(m.score, 3)),
              h("td", {}, h("time", { datetime: m.event_time }, fmtDateTime(m.event_time))),
              h("td", {}, m.detail),
            ),
          ),
        ),
      ),
    );
  } else {
    box.replaceChildren(...appeals);
  }
}

// A public-opinion warning's sample appeals: de-identified text, emotion and its words.
function appealsTable(appeals) {
  const cols = ["time", "channel", "street", "intensity", "emotion", "words", "text"];
  return h(
    "table",
    { class: "data", id: "detail-appeals" },
    h("caption", {}, t("detail.appeals")),
    h("thead", {}, h("tr", {}, cols.map((k) => h("th", { scope: "col" }, t(`detail.appeal.${k}`))))),
    h(
      "tbody",
      {},
      appeals.map((a) =>
        h(
          "tr",
          { class: a.extreme ? "extreme" : "" },
          h("td", {}, h("time", { datetime: a.time }, fmtDateTime(a.time))),
          h("td", {}, a.channel),
          h("td", {}, a.street ? streetName(a.street) : t("common.none")),
          h("td", { class: "num" }, fmtNumber(a.intensity, 2)),
          h("td", {}, a.emotion || t("common.none")),
          h("td", {}, (a.words || []).join("、")),
          h("td", {}, a.text),
        ),
      ),
    ),
  );
}

function renderChart(a, timeline) {
  const box = $("detail-chart");
  const points = mergeSeries([...timeline, a]);
  if (!points.length) {
    box.replaceChildren(h("p", { class: "empty" }, t("detail.chart.none")));
    return;
  }
  const ev = a.evidence ?? {};
  const unit = a.indicators?.length === 1 ? unitOf(a.indicators[0]) : "";
  const name = (a.indicators ?? []).map(indicatorName).join(state.lang === "zh" ? "、" : ", ") || ev.rule;
  let forecast = null;
  const fc = ev.forecast;
  const base = Date.parse(ev.window_end ?? "") || points[points.length - 1].t;
  if (fc && Number.isFinite(fc.value) && Number.isFinite(fc.horizon_s)) forecast = { t: base + fc.horizon_s * 1000, v: fc.value };
  const values = points.map((p) => p.v);
  const summary = t("detail.chart.summary", {
    indicator: name,
    n: points.length,
    from: fmtDateTime(points[0].t),
    to: fmtDateTime(points[points.length - 1].t),
    min: withUnit(Math.min(...values), unit),
    max: withUnit(Math.max(...values), unit),
    threshold: Number.isFinite(ev.threshold) ? t("detail.chart.threshold", { value: withUnit(ev.threshold, unit) }) : "",
  });
  const svg = lineChart({
    id: "detail-chart-svg",
    points,
    threshold: ev.threshold,
    baseline: ev.baseline,
    forecast,
    raisedAt: Date.parse(a.first_seen),
    fmtTime: fmtClock,
    fmtValue: (v) => fmtNumber(v),
    labels: {
      threshold: t("detail.chart.legend.threshold"),
      baseline: t("detail.chart.legend.baseline"),
      forecast: t("detail.chart.legend.forecast"),
      raised: t("detail.chart.legend.raised"),
    },
    title: `${t("detail.chart")}: ${name}${unit ? ` (${unit})` : ""}`,
    summary,
  });
  const legend = h(
    "ul",
    { class: "chart-legend", "aria-hidden": "true" },
    h("li", {}, h("span", { class: "swatch swatch-line" }), t("detail.chart.legend.value")),
    Number.isFinite(ev.threshold) ? h("li", {}, h("span", { class: "swatch swatch-threshold" }), t("detail.chart.legend.threshold")) : null,
    Number.isFinite(ev.baseline) ? h("li", {}, h("span", { class: "swatch swatch-baseline" }), t("detail.chart.legend.baseline")) : null,
    forecast ? h("li", {}, h("span", { class: "swatch swatch-forecast" }), t("detail.chart.legend.forecast")) : null,
    h("li", {}, h("span", { class: "swatch swatch-raised" }), t("detail.chart.legend.raised")),
  );
  const table = h(
    "details",
    { class: "chart-data" },
    h("summary", {}, t("detail.chart.table")),
    h(
      "table",
      { class: "data" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("detail.chart.time")), h("th", { scope: "col" }, `${t("detail.chart.value")}${unit ? ` (${unit})` : ""}`))),
      h("tbody", {}, points.map((p) => h("tr", {}, h("td", {}, fmtDateTime(p.t)), h("td", { class: "num" }, fmtNumber(p.v))))),
    ),
  );
  const wasOpen = box.querySelector("details")?.open;
  if (wasOpen) table.open = true;
  box.replaceChildren(svg, legend, table);
}

function timelineEntries(a, timeline) {
  const events = [...timeline].sort((x, y) => x.sequence - y.sequence);
  if (!events.length || events[events.length - 1].sequence < a.sequence) events.push(a);
  const entries = [];
  const seen = new Set();
  let prev = null;
  const pushAction = (rec) => {
    if (seen.has(rec.action_id)) return;
    seen.add(rec.action_id);
    entries.push({ type: "action", at: rec.at, rec });
  };
  for (const ev of events) {
    const fresh = (ev.actions ?? []).filter((r) => !seen.has(r.action_id));
    fresh.forEach(pushAction);
    if (!fresh.length) {
      let kind = "updated";
      if (!prev || ev.status === "firing") kind = "firing";
      else if (ev.status === "resolved" && prev.status !== "resolved") kind = "resolved";
      else if (ev.grade !== prev.grade) kind = "grade";
      else if (ev.silenced_by !== prev.silenced_by && ev.silenced_by) kind = "silenced";
      const last = entries[entries.length - 1];
      if (kind === "updated" && last?.type === "event" && last.kind === "updated") {
        last.count += 1;
        last.until = ev.last_update;
      } else {
        entries.push({ type: "event", kind, at: ev.last_update, ev, prev, count: 1 });
      }
    }
    prev = ev;
  }
  for (const rec of a.actions ?? []) pushAction(rec);
  return entries
    .map((e, i) => ({ ...e, i }))
    .sort((x, y) => Date.parse(x.at) - Date.parse(y.at) || x.i - y.i);
}

function renderTimeline(a, timeline) {
  const ol = $("detail-timeline");
  const items = timelineEntries(a, timeline).map((e) => {
    const when = h("time", { datetime: e.at, class: "tl-time" }, fmtDateTime(e.at));
    if (e.type === "action") {
      const r = e.rec;
      const extra = [];
      if (r.department) extra.push(t("action.to", { department: departmentName(r.department) }));
      return h(
        "li",
        { class: `tl-item tl-action tl-${r.action}`, "data-action": r.action, "data-actor": r.actor },
        when,
        h(
          "span",
          { class: "tl-text" },
          h("strong", {}, t(`action.${r.action}`)),
          " · ",
          h("span", { class: "tl-actor" }, `${r.actor} (${roleName(r.role)})`),
          extra.length ? ` · ${extra.join(" · ")}` : "",
        ),
        r.note ? h("blockquote", { class: "tl-note" }, r.note) : null,
      );
    }
    const ev = e.ev;
    let text;
    if (e.kind === "firing") text = t("timeline.firing", { grade: t("grade.full", gradeVars(ev.grade)) });
    else if (e.kind === "grade") {
      text = t("timeline.grade", { from: t("grade.full", gradeVars(e.prev.grade)), to: t("grade.full", gradeVars(ev.grade)) });
    } else if (e.kind === "resolved") text = t("timeline.resolved");
    else if (e.kind === "silenced") text = t("timeline.silenced");
    else text = e.count > 1 ? `${t("timeline.updated")} ×${e.count}` : t("timeline.updated");
    const observed = Number.isFinite(ev.evidence?.observed)
      ? ` · ${t("detail.observed")} ${withUnit(ev.evidence.observed, a.indicators?.length === 1 ? unitOf(a.indicators[0]) : "")}`
      : "";
    return h(
      "li",
      { class: `tl-item tl-event tl-${e.kind}`, "data-event": e.kind },
      when,
      h("span", { class: "tl-text" }, gradeBadge(ev.grade, "grade-small"), " ", text, observed),
    );
  });
  ol.replaceChildren(...items);
}

// --- district overview ----------------------------------------------------------------------

function healthBand(v) {
  if (v === null || v === undefined || !Number.isFinite(Number(v))) return "none";
  if (v >= 80) return "good";
  if (v >= 60) return "fair";
  if (v >= 40) return "poor";
  return "critical";
}

function healthBar(v) {
  const width = Number.isFinite(Number(v)) ? Math.max(0, Math.min(100, Number(v))) : 0;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 100 8");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "bar");
  svg.setAttribute("aria-hidden", "true");
  const bg = document.createElementNS(svg.namespaceURI, "rect");
  for (const [k, val] of Object.entries({ x: 0, y: 0, width: 100, height: 8, class: "bar-bg" })) bg.setAttribute(k, String(val));
  const fg = document.createElementNS(svg.namespaceURI, "rect");
  for (const [k, val] of Object.entries({ x: 0, y: 0, width, height: 8, class: `bar-fg health-${healthBand(v)}` })) {
    fg.setAttribute(k, String(val));
  }
  svg.append(bg, fg);
  return svg;
}

async function loadDistricts() {
  try {
    const body = await api.districts();
    state.vitals = body.districts ?? [];
    if (state.view === "districts") renderDistricts();
  } catch (err) {
    handleError(err);
  }
}

function renderDistricts() {
  const box = $("district-cards");
  if (!state.vitals) {
    box.replaceChildren(h("p", { class: "boot" }, t("app.loading")));
    return;
  }
  const order = new Map((state.catalogue?.districts ?? []).map((d, i) => [d.code, i]));
  const rows = [...state.vitals].sort((x, y) => (order.get(x.code) ?? 999) - (order.get(y.code) ?? 999));
  box.replaceChildren(
    ...rows.map((row) => {
      const v = row.vitals;
      const composite = v?.composite;
      const band = healthBand(composite);
      const titleId = `district-${row.code}-title`;
      const domains = Object.entries(v?.domains ?? {});
      const domainOrder = new Map((state.catalogue?.domains ?? []).map((d, i) => [d.code, i]));
      domains.sort((x, y) => (domainOrder.get(x[0]) ?? 99) - (domainOrder.get(y[0]) ?? 99));
      const showLink = state.me?.may_see_alerts;
      return h(
        "article",
        { class: `district-card health-edge-${band}`, "aria-labelledby": titleId, "data-district": row.code },
        h("h2", { id: titleId }, districtName(row.code), " ", h("span", { class: "code" }, row.code)),
        !v
          ? h("p", { class: "empty" }, t("districts.nodata"))
          : h(
              "div",
              { class: "composite" },
              h("span", { class: "composite-label" }, t("districts.composite")),
              h(
                "span",
                { class: `composite-value health-text-${"composite" in v ? band : "none"}` },
                "composite" in v ? fmtNumber(composite, 0) : t("districts.hidden"),
              ),
              "composite" in v ? h("span", { class: `health-word health-${band}` }, t(`health.${band}`)) : null,
            ),
        v && "composite" in v ? healthBar(composite) : null,
        h(
          "ul",
          { class: "domains" },
          domains.map(([code, value]) =>
            h(
              "li",
              { class: "domain", "data-domain": code },
              h("span", { class: "domain-name" }, domainName(code)),
              h("span", { class: "domain-value" }, value === null ? t("common.none") : fmtNumber(value, 0)),
              h("span", { class: `health-word health-${healthBand(value)}` }, t(`health.${healthBand(value)}`)),
              healthBar(value),
            ),
          ),
        ),
        v?.window_end ? h("p", { class: "asof" }, t("districts.asof", { time: fmtDateTime(v.window_end) })) : null,
        showLink
          ? h(
              "button",
              {
                type: "button",
                class: "quiet link",
                onclick: () => {
                  state.filters = { ...defaultFilters(), state: state.filters.state, district: row.code };
                  saveFilters();
                  buildFilters();
                  location.hash = "#/feed";
                  loadFeed();
                },
              },
              t("districts.alerts_link", { district: districtName(row.code) }),
            )
          : null,
      );
    }),
  );
}

// --- performance and audit ------------------------------------------------------------------

async function loadPerformance() {
  try {
    const doc = await api.performance();
    state.performance = doc.rows ?? [];
    state.appealPerformance = doc.appeals ?? [];
  } catch (err) {
    state.performance = null;
    handleError(err);
  }
  if (state.view === "performance") renderPerformance();
}

function renderPerformance() {
  const box = $("performance-table");
  const rows = state.performance;
  if (!rows) {
    box.replaceChildren(h("p", { class: "boot" }, t("app.loading")));
    return;
  }
  const appeals = state.appealPerformance ?? [];
  if (!rows.length && !appeals.length) {
    box.replaceChildren(h("p", { class: "empty" }, t("perf.empty")));
    return;
  }
  const cols = [
    ["perf.department", (r) => departmentName(r.department)],
    ["perf.grade", (r) => (r.grade ? gradeBadge(typeof r.grade === "number" ? r.grade : gradeNumber(r.grade), "grade-small") : t("filters.any"))],
    ["perf.alerts", (r) => fmtNumber(r.alerts, 0), "num"],
    ["perf.acknowledged", (r) => fmtNumber(r.acknowledged, 0), "num"],
    ["perf.resolved", (r) => fmtNumber(r.resolved, 0), "num"],
    ["perf.false_positives", (r) => fmtNumber(r.false_positives, 0), "num"],
    ["perf.median_ack", (r) => fmtSpan(r.median_ack_s), "num"],
    ["perf.median_resolve", (r) => fmtSpan(r.median_resolve_s), "num"],
    ["perf.closure_rate", (r) => fmtPct(r.closure_rate), "num"],
    ["perf.false_positive_rate", (r) => fmtPct(r.false_positive_rate), "num"],
  ];
  const appealCols = [
    ["perf.department", (r) => departmentName(r.department)],
    ["appeals.perf.clusters", (r) => fmtNumber(r.clusters, 0), "num"],
    ["appeals.perf.handled", (r) => fmtNumber(r.handled, 0), "num"],
    ["appeals.perf.rerouted_away", (r) => fmtNumber(r.rerouted_away, 0), "num"],
    ["appeals.perf.appeals_handled", (r) => fmtNumber(r.appeals_handled, 0), "num"],
    ["appeals.perf.median_handle", (r) => (r.median_handle_s === null ? t("common.none") : fmtSpan(r.median_handle_s)), "num"],
    ["appeals.perf.repeat_after", (r) => fmtPct(r.repeat_share_after_handling), "num"],
  ];
  box.replaceChildren(
    rows.length ? dataTable("perf.caption", cols, rows) : h("p", { class: "empty" }, t("perf.empty")),
    ...(appeals.length ? [dataTable("appeals.perf.caption", appealCols, appeals)] : []),
  );
}

function gradeNumber(g) {
  const n = Number(g);
  if (Number.isFinite(n)) return n;
  return { I: 1, II: 2, III: 3, IV: 4 }[g] ?? 4;
}

function dataTable(captionKey, cols, rows) {
  return h(
    "table",
    { class: "data" },
    h("caption", {}, t(captionKey)),
    h("thead", {}, h("tr", {}, cols.map(([key, , cls]) => h("th", { scope: "col", class: cls }, t(key))))),
    h(
      "tbody",
      {},
      rows.map((r) =>
        h(
          "tr",
          {},
          cols.map(([, get, cls], i) => {
            const value = get(r);
            return i === 0 ? h("th", { scope: "row", class: cls }, value) : h("td", { class: cls }, value);
          }),
        ),
      ),
    ),
  );
}

// --- citizens' appeals fed back by category (the department's desk) ---------------------

const APPEAL_SPANS = [24, 72];

function appealParams(extra = {}) {
  const p = new URLSearchParams();
  const f = state.appealsFilter;
  if (state.me?.role === "operator" && f.department) p.set("department", f.department);
  for (const [k, v] of Object.entries(extra)) if (v) p.set(k, v);
  return p;
}

function appealControls(box, withSpan, onChange) {
  const f = state.appealsFilter;
  const fields = [];
  if (state.me?.role === "operator") {
    const id = `${box.id}-department`;
    const options = [
      h("option", { value: "" }, t("appeals.whole_city")),
      ...(state.catalogue?.departments ?? []).map((x) => h("option", { value: x.code, selected: x.code === f.department }, nameOf(x, x.code))),
    ];
    fields.push(h("label", { for: id }, t("appeals.department")), h("select", { id, name: "department" }, options));
  }
  if (withSpan) {
    fields.push(
      h("label", { for: "appeals-span" }, t("appeals.span")),
      h("select", { id: "appeals-span", name: "hours" }, APPEAL_SPANS.map((n) => h("option", { value: String(n), selected: n === f.hours }, t("appeals.hours", { n })))),
    );
  } else {
    fields.push(
      h("label", { for: "report-day" }, t("report.day")),
      h("input", { id: "report-day", name: "day", type: "date", value: f.day ?? "" }),
    );
  }
  box.replaceChildren(...fields);
  box.onchange = () => {
    const dep = box.querySelector("[name=department]");
    if (dep) f.department = dep.value;
    const span = box.querySelector("[name=hours]");
    if (span) f.hours = Number(span.value);
    const day = box.querySelector("[name=day]");
    if (day) f.day = day.value || null;
    onChange();
  };
  box.onsubmit = (e) => e.preventDefault();
}

async function loadAppeals() {
  appealControls($("appeals-controls"), true, loadAppeals);
  try {
    state.appeals = await api.feedback(appealParams({ hours: String(state.appealsFilter.hours) }));
  } catch (err) {
    state.appeals = null;
    handleError(err);
  }
  if (state.view === "appeals") renderAppeals();
}

function categoryName(row) {
  return state.lang === "zh" ? row.name_zh : row.name_en;
}

function trendText(change) {
  if (change === null || change === undefined) return t("common.none");
  const pct = Math.round(change * 100);
  return pct > 0 ? `▲ ${pct}%` : pct < 0 ? `▼ ${-pct}%` : "＝";
}

function shareTrend(change) {
  if (change === null || change === undefined) return t("common.none");
  const pts = Math.round(change * 100);
  return pts > 0 ? `▲ ${pts} pt` : pts < 0 ? `▼ ${-pts} pt` : "＝";
}

// Appeals per hour as a small line: an inline SVG (no script, no outside image).
function sparkline(counts, label) {
  const ns = "http://www.w3.org/2000/svg";
  const w = 96;
  const ht = 20;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${ht}`);
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(ht));
  svg.setAttribute("role", "img");
  svg.setAttribute("class", "sparkline");
  const title = document.createElementNS(ns, "title");
  title.textContent = label;
  svg.append(title);
  const top = Math.max(1, ...counts);
  const step = counts.length > 1 ? w / (counts.length - 1) : w;
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", counts.map((c, i) => `${(i * step).toFixed(1)},${(ht - 1 - (c / top) * (ht - 2)).toFixed(1)}`).join(" "));
  svg.append(line);
  return svg;
}

function categoryColumns(withTrend) {
  const cols = [
    ["appeals.rank", (r) => String(r.rank), "num"],
    ["appeals.category", (r) => h("span", { "data-category": r.category }, categoryName(r))],
    ["appeals.appeals", (r) => fmtNumber(r.appeals, 0), "num"],
    ["appeals.extreme_share", (r) => fmtPct(r.extreme_share), "num"],
    ["appeals.extreme", (r) => fmtNumber(r.extreme, 0), "num"],
    ["appeals.bad_rate", (r) => fmtPct(r.bad_rate), "num"],
    ["appeals.repeat_share", (r) => fmtPct(r.repeat_share), "num"],
  ];
  if (withTrend) {
    cols.push(
      ["appeals.volume_trend", (r) => trendText(r.trend.appeals_change), "num"],
      ["appeals.share_trend", (r) => shareTrend(r.trend.extreme_share_change), "num"],
      ["appeals.hourly", (r) => sparkline(r.hourly, t("appeals.hourly_label", { n: r.hourly.reduce((a, b) => a + b, 0) }))],
      ["appeals.open_clusters", (r) => fmtNumber(r.open_clusters, 0), "num"],
    );
  } else {
    cols.push(["appeals.previous", (r) => fmtNumber(r.previous.appeals, 0), "num"], ["appeals.volume_trend", (r) => trendText(r.trend.appeals_change), "num"]);
  }
  if (state.me?.role === "operator") cols.splice(2, 0, ["appeals.owner", (r) => departmentName(r.department)]);
  return cols;
}

function categoryTable(doc, withTrend, id) {
  const rows = doc.categories ?? [];
  if (!rows.length) return h("p", { class: "empty" }, t("appeals.no_categories"));
  const table = dataTable("appeals.categories_caption", categoryColumns(withTrend), rows);
  table.id = id;
  return table;
}

function clusterRow(c, withActions) {
  const cells = [
    h("th", { scope: "row" }, gradeBadge(gradeNumber(c.grade), "grade-small")),
    h("td", {}, h("a", { href: `#/feed/${encodeURIComponent(c.alert_id)}` }, state.lang === "zh" ? c.headline_zh : c.headline_en)),
    h("td", { class: "num" }, fmtNumber(c.appeals, 0)),
    h("td", {}, workflowPill(c.workflow)),
    h("td", {}, h("time", { datetime: c.first_seen }, fmtDateTime(c.first_seen))),
  ];
  if (withActions) cells.push(h("td", { class: "cluster-actions" }, clusterButtons(c)));
  else cells.push(h("td", { class: "num" }, c.handle_s === null ? t("common.none") : fmtSpan(c.handle_s)));
  return h("tr", { "data-cluster": c.alert_id }, cells);
}

function clusterTable(clusters, withActions, id) {
  if (!clusters.length) return h("p", { class: "empty", id }, t("appeals.no_clusters"));
  const heads = ["grade", "cluster", "appeals", "workflow", "first_seen", withActions ? "actions" : "handle"];
  return h(
    "table",
    { class: "data", id },
    h("caption", {}, t(withActions ? "appeals.clusters_caption" : "report.clusters_caption")),
    h("thead", {}, h("tr", {}, heads.map((k) => h("th", { scope: "col" }, t(`appeals.col.${k}`))))),
    h("tbody", {}, clusters.map((c) => clusterRow(c, withActions))),
  );
}

function mayReroute(c) {
  const me = state.me;
  return (me?.actions ?? []).includes("reroute") && (me.role === "operator" || c.department === me.department);
}

function clusterButtons(c) {
  const buttons = [];
  const mine = new Set(state.me?.actions ?? []);
  if (mine.has("acknowledge") && c.workflow === "open") {
    buttons.push(clusterButton(c, "acknowledge", "appeals.handling", () => clusterAct(c, { action: "acknowledge" })));
  }
  if (mine.has("resolve")) buttons.push(clusterButton(c, "resolve", "appeals.handled", () => clusterAct(c, { action: "resolve" })));
  if (mayReroute(c)) buttons.push(clusterButton(c, "reroute", "appeals.not_ours", () => rerouteForm(c)));
  return buttons;
}

function clusterButton(c, action, key, onClick) {
  const b = h("button", { type: "button", class: action === "reroute" ? "quiet" : "", "data-action": action }, t(key));
  b.addEventListener("click", onClick);
  return b;
}

function rerouteForm(c) {
  const row = document.querySelector(`#appeals-clusters tr[data-cluster="${CSS.escape(c.alert_id)}"]`);
  if (!row) return;
  document.querySelector("#reroute-form")?.closest("tr")?.remove();
  const options = (state.catalogue?.departments ?? [])
    .filter((x) => x.code !== c.department)
    .map((x) => h("option", { value: x.code }, nameOf(x, x.code)));
  const form = h(
    "form",
    { id: "reroute-form", class: "action-form", novalidate: true, "aria-labelledby": "reroute-title" },
    h("h4", { id: "reroute-title" }, t("appeals.reroute_title")),
    h("div", { class: "field" }, h("label", { for: "reroute-department" }, t("appeals.reroute_to")), h("select", { id: "reroute-department", name: "department" }, options)),
    h(
      "div",
      { class: "field field-wide" },
      h("label", { for: "reroute-reason" }, t("appeals.reroute_reason")),
      h("textarea", { id: "reroute-reason", name: "note", rows: "2", maxlength: "4000", required: true, "aria-describedby": "reroute-error" }),
    ),
    h("p", { id: "reroute-error", class: "form-error", "aria-live": "assertive" }),
    h(
      "div",
      { class: "form-buttons" },
      h("button", { type: "submit", class: "primary", id: "reroute-submit" }, t("appeals.reroute_submit")),
      h("button", { type: "button", class: "quiet", id: "reroute-cancel" }, t("action.cancel")),
    ),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const note = form.querySelector("#reroute-reason").value.trim();
    if (!note) {
      form.querySelector("#reroute-error").textContent = t("appeals.reason_required");
      form.querySelector("#reroute-reason").setAttribute("aria-invalid", "true");
      form.querySelector("#reroute-reason").focus();
      return;
    }
    const done = await clusterAct(c, { action: "reroute", department: form.querySelector("#reroute-department").value, note }, form.querySelector("#reroute-error"));
    if (done) form.closest("tr")?.remove();
  });
  form.querySelector("#reroute-cancel").addEventListener("click", () => form.closest("tr")?.remove());
  const cell = h("td", { colspan: String(row.children.length) }, form);
  row.after(h("tr", { class: "form-row" }, cell));
  form.querySelector("select")?.focus();
}

async function clusterAct(c, body, errorBox) {
  const status = $("appeals-status");
  try {
    await api.act(c.alert_id, body);
    status.textContent = t("appeals.accepted", { action: t(`action.${body.action}`), cluster: state.lang === "zh" ? c.headline_zh : c.headline_en });
    // the action is durable; the lifecycle applies it within moments
    setTimeout(loadAppeals, 1500);
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      handleError(err);
      return false;
    }
    const text = errorText(err);
    if (errorBox) errorBox.textContent = text;
    status.textContent = text;
    return false;
  }
}

function performanceList(p) {
  const dl = h("dl", { class: "facts appeal-performance", id: "appeals-performance" });
  const items = [
    ["appeals.perf.clusters", fmtNumber(p.clusters, 0)],
    ["appeals.perf.handled", fmtNumber(p.handled, 0)],
    ["appeals.perf.rerouted_away", fmtNumber(p.rerouted_away, 0)],
    ["appeals.perf.appeals_handled", fmtNumber(p.appeals_handled, 0)],
    ["appeals.perf.median_handle", p.median_handle_s === null ? t("common.none") : fmtSpan(p.median_handle_s)],
    ["appeals.perf.repeat_after", p.repeat_share_after_handling === null ? t("common.none") : t("appeals.perf.repeat_after_value", { share: fmtPct(p.repeat_share_after_handling), repeats: p.repeats_after_handling, appeals: p.appeals_after_handling })],
  ];
  for (const [key, value] of items) dl.append(h("dt", {}, t(key)), h("dd", {}, value));
  return dl;
}

function feedbackHeading(doc) {
  return doc.department ? departmentName(doc.department) : t("appeals.whole_city");
}

function renderAppeals() {
  const box = $("appeals-body");
  const doc = state.appeals;
  if (!doc) {
    box.replaceChildren(h("p", { class: "boot" }, t("app.loading")));
    return;
  }
  box.replaceChildren(
    h("h2", { id: "appeals-department" }, feedbackHeading(doc)),
    h("p", { class: "hint" }, t("appeals.span_text", { start: fmtDateTime(doc.span.start), end: fmtDateTime(doc.span.end) })),
    h("p", { id: "appeals-status", class: "hint", role: "status" }),
    h("div", { class: "table-wrap" }, categoryTable(doc, true, "appeals-categories")),
    h("h3", {}, t("appeals.clusters_title")),
    h("div", { class: "table-wrap" }, clusterTable(doc.clusters ?? [], true, "appeals-clusters")),
    h("h3", {}, t("appeals.perf.title")),
    performanceList(doc.performance),
  );
}

function reroutedTable(rows) {
  const cols = [
    ["appeals.col.cluster", (r) => (state.lang === "zh" ? r.headline_zh : r.headline_en)],
    ["report.rerouted_to", (r) => departmentName(r.to)],
    ["report.rerouted_at", (r) => h("time", { datetime: r.at }, fmtDateTime(r.at))],
    ["report.rerouted_by", (r) => r.by],
    ["report.rerouted_reason", (r) => r.reason ?? t("common.none")],
  ];
  const table = dataTable("report.rerouted_caption", cols, rows);
  table.id = "report-rerouted";
  return table;
}

async function loadReport() {
  appealControls($("report-controls"), false, loadReport);
  try {
    state.report = await api.report(appealParams({ day: state.appealsFilter.day }));
    if (!state.appealsFilter.day) {
      state.appealsFilter.day = state.report.day;
      const input = $("report-day");
      if (input) input.value = state.report.day;
    }
  } catch (err) {
    state.report = null;
    handleError(err);
  }
  if (state.view === "report") renderReport();
}

function renderReport() {
  const box = $("report-body");
  const doc = state.report;
  if (!doc) {
    box.replaceChildren(h("p", { class: "boot" }, t("app.loading")));
    return;
  }
  box.replaceChildren(
    h("h2", { id: "report-department" }, t("report.heading", { department: feedbackHeading(doc), day: doc.day })),
    h("p", { class: "hint" }, t("report.generated", { at: fmtDateTime(doc.generated_at), zone: doc.timezone })),
    h("h3", {}, t("report.categories_title")),
    h("div", { class: "table-wrap" }, categoryTable(doc, false, "report-categories")),
    h("h3", {}, t("report.clusters_title")),
    h("div", { class: "table-wrap" }, clusterTable(doc.clusters ?? [], false, "report-clusters")),
    ...(doc.rerouted?.length ? [h("h3", {}, t("report.rerouted_title")), h("div", { class: "table-wrap" }, reroutedTable(doc.rerouted))] : []),
    h("h3", {}, t("appeals.perf.title")),
    performanceList(doc.performance),
  );
}

async function loadAudit() {
  try {
    state.audit = (await api.audit(200)).records ?? [];
  } catch (err) {
    state.audit = null;
    handleError(err);
  }
  if (state.view === "audit") renderAudit();
}

function renderAudit() {
  const box = $("audit-table");
  const rows = state.audit;
  if (!rows) {
    box.replaceChildren(h("p", { class: "boot" }, t("app.loading")));
    return;
  }
  if (!rows.length) {
    box.replaceChildren(h("p", { class: "empty" }, t("audit.empty")));
    return;
  }
  const detailText = (d) => (d === null || d === undefined ? "" : typeof d === "string" ? d : JSON.stringify(d));
  const cols = [
    ["audit.at", (r) => h("time", { datetime: r.at }, fmtDateTime(r.at))],
    ["audit.user", (r) => r.user],
    ["audit.role", (r) => roleName(r.role)],
    ["audit.action", (r) => (ACTIONS.includes(r.action) ? t(`action.${r.action}`) : known("audit.kind", r.action))],
    [
      "audit.target",
      (r) =>
        r.target && (ACTIONS.includes(r.action) || r.action === "read_alert")
          ? h("a", { href: `#/feed/${encodeURIComponent(r.target)}` }, h("code", {}, r.target))
          : h("code", {}, r.target ?? ""),
    ],
    ["audit.source_ip", (r) => r.source_ip ?? ""],
    ["audit.detail", (r) => detailText(r.detail)],
  ];
  box.replaceChildren(dataTable("audit.caption", cols, rows));
}

// --- keyboard ---------------------------------------------------------------------------------

function typingIn(target) {
  if (!(target instanceof Element)) return false;
  return Boolean(target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']"));
}

function onFeedKey(e) {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  const li = e.target.closest?.("[data-alert-id]");
  switch (e.key) {
    case "ArrowDown":
    case "j":
      moveSelection(1);
      break;
    case "ArrowUp":
    case "k":
      moveSelection(-1);
      break;
    case "Home":
      moveSelection(0, "first");
      break;
    case "End":
      moveSelection(0, "last");
      break;
    case "Enter":
    case " ":
      if (!li) return;
      selectAlert(li.dataset.alertId, false);
      openFromFeed(li.dataset.alertId);
      break;
    default:
      return;
  }
  e.preventDefault();
  e.stopPropagation();
}

function onGlobalKey(e) {
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
  const help = $("help-dialog");
  if (help.open) return;
  if (e.key === "Escape") {
    if (state.detail) {
      if (!closeActionForm(true)) closeDetail();
      e.preventDefault();
    }
    return;
  }
  if (typingIn(e.target)) return;
  if (e.key === "?") {
    help.showModal();
    e.preventDefault();
    return;
  }
  if (!state.me) return;
  if (e.key === "/" && state.view === "feed") {
    $("filters").querySelector("select, input")?.focus();
    e.preventDefault();
    return;
  }
  if (state.view !== "feed" || !state.detail) return;
  const action = Object.entries(ACTION_KEYS).find(([, key]) => key === e.key)?.[0];
  if (action && allowedActions().includes(action)) {
    startAction(action);
    e.preventDefault();
  }
}

// --- start ----------------------------------------------------------------------------------

function bind() {
  for (const b of document.querySelectorAll(".lang-switch [data-lang]")) {
    b.addEventListener("click", () => setLang(b.dataset.lang));
  }
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) {
      showLogin(t("login.empty"));
      return;
    }
    const button = $("login-submit");
    button.disabled = true;
    button.textContent = t("login.busy");
    try {
      await signIn(token);
      $("token-input").value = "";
      $("main").focus();
    } catch (err) {
      state.token = "";
      state.me = null;
      showLogin(errorText(err));
    } finally {
      button.disabled = false;
      button.textContent = t("login.submit");
    }
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("banner-close").addEventListener("click", hideBanner);
  $("help-button").addEventListener("click", () => $("help-dialog").showModal());
  $("feed").addEventListener("keydown", onFeedKey);
  $("feed").addEventListener("focusin", (e) => {
    const li = e.target.closest?.("[data-alert-id]");
    if (li && !state.detail) {
      state.selectedId = li.dataset.alertId;
      markSelection();
    }
  });
  $("feed-refresh").addEventListener("click", () => loadFeed());
  $("filters").addEventListener("change", () => {
    readFilters();
    loadFeed();
  });
  $("filters").addEventListener("reset", (e) => {
    e.preventDefault();
    state.filters = { ...defaultFilters(), state: "open" };
    saveFilters();
    buildFilters();
    loadFeed();
    $("f-district").focus();
  });
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("performance-refresh").addEventListener("click", loadPerformance);
  $("appeals-refresh").addEventListener("click", loadAppeals);
  $("report-print").addEventListener("click", () => window.print());
  $("audit-refresh").addEventListener("click", loadAudit);
  document.addEventListener("keydown", onGlobalKey);
  window.addEventListener("hashchange", route);
}

async function start() {
  bind();
  applyStaticText();
  renderLiveState();
  if (!state.token) {
    showLogin("");
    return;
  }
  try {
    await signIn(state.token);
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    showLogin(errorText(err));
  }
}

start();
