// The page a responder opens from a notification: the link's token is the credential.
import { LABELS } from "./labels.js";

const token = decodeURIComponent(location.pathname.split("/respond/")[1] || "");
const api = `/api/v1/respond/${encodeURIComponent(token)}`;
const $ = (id) => document.getElementById(id);
// "<roman>级 · <colour> / Grade <roman> <colour>", in the words of the product's one table
const GRADES = Object.fromEntries(
  Object.entries(LABELS.grades).map(([g, l]) => [g, `${l.roman}级 · ${l.zh} / Grade ${l.roman} ${l.en}`]),
);
const WORKFLOW = {
  open: "待处置 / open",
  acknowledged: "已确认 / acknowledged",
  dispatched: "已派单 / dispatched",
  resolved: "已办结 / resolved",
  false_positive: "误报 / false positive",
};

function when(iso) {
  return new Date(iso).toLocaleString("zh-CN", { hour12: false });
}

function show(message, error = false) {
  const box = $("result");
  box.textContent = message;
  box.hidden = false;
  box.toggleAttribute("data-error", error);
}

async function refresh() {
  const res = await fetch(api, { cache: "no-store" });
  if (res.ok) $("state").textContent = WORKFLOW[(await res.json()).alert.workflow] || "";
}

async function load() {
  const res = await fetch(api, { cache: "no-store" });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    $("status").textContent = `链接无效 / This link does not work: ${body.detail || res.status}`;
    return;
  }
  const a = body.alert;
  $("status").hidden = true;
  $("alert").hidden = false;
  const grade = $("grade");
  const resolved = a.status === "resolved";
  grade.textContent = resolved ? "已解除 / resolved" : GRADES[a.grade];
  grade.dataset.grade = a.grade;
  grade.toggleAttribute("data-resolved", resolved);
  $("headline-zh").textContent = a.headline_zh;
  $("headline-en").textContent = a.headline_en;
  $("place").textContent = `${body.place_zh} / ${body.place_en}`;
  $("state").textContent = WORKFLOW[a.workflow] || a.workflow;
  $("first-seen").textContent = when(a.first_seen);
  $("expires").textContent = when(body.expires_at);
  if (body.actions.length) {
    $("respond").hidden = false;
  } else {
    show("该告警已关闭，无需处置。/ This alert is closed; nothing to do.");
  }
}

async function act(action) {
  const payload = { action };
  const responder = $("responder").value.trim();
  if (responder) payload.responder = responder;
  if (action === "field_report") {
    payload.note = $("note").value.trim();
    if (!payload.note) {
      show("请填写现场反馈。/ Write the field report first.", true);
      $("note").focus();
      return;
    }
  }
  const res = await fetch(api, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  const body = await res.json().catch(() => ({}));
  if (res.status === 202) {
    show(action === "acknowledge" ? "已确认接警。/ Acknowledged." : "现场反馈已提交。/ Field report sent.");
    if (action === "field_report") $("note").value = "";
    setTimeout(refresh, 2000); // the alert's state once the action is applied
  } else {
    show(`未能提交 / Not sent: ${body.detail || res.status}`, true);
  }
}

$("ack").addEventListener("click", () => act("acknowledge"));
$("respond").addEventListener("submit", (e) => {
  e.preventDefault();
  act("field_report");
});
load();
