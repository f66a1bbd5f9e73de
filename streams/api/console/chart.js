// A small inline-SVG line chart: one series, a threshold and a baseline as
// horizontal lines, an optional forecast segment and a "raised" marker.

const SVG = "http://www.w3.org/2000/svg";
const W = 640;
const H = 240;
const M = { top: 14, right: 18, bottom: 30, left: 56 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

export function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi === lo) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toFixed(10)));
  }
  return out;
}

// Merge every event's evidence values by time; a later event's value wins.
export function mergeSeries(events) {
  const byTime = new Map();
  for (const ev of events) {
    for (const p of ev?.evidence?.values ?? []) {
      const t = Date.parse(p.time);
      if (Number.isFinite(t) && Number.isFinite(p.value)) byTime.set(t, p.value);
    }
  }
  return [...byTime.entries()].sort((a, b) => a[0] - b[0]).map(([t, v]) => ({ t, v }));
}

/**
 * opts: {points:[{t,v}], threshold, baseline, forecast:{t,v}|null, raisedAt (ms),
 *        fmtTime(ms) -> str, fmtValue(v) -> str, labels:{threshold, baseline, forecast, raised},
 *        title, summary}
 */
export function lineChart(opts) {
  const { points, threshold, baseline, forecast, raisedAt, fmtTime, fmtValue, labels } = opts;
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-labelledby": `${opts.id}-title ${opts.id}-desc`,
    preserveAspectRatio: "xMidYMid meet",
  });
  svg.append(el("title", { id: `${opts.id}-title` }, opts.title));
  svg.append(el("desc", { id: `${opts.id}-desc` }, opts.summary));

  const times = points.map((p) => p.t);
  const values = points.map((p) => p.v);
  if (forecast) {
    times.push(forecast.t);
    values.push(forecast.v);
  }
  if (Number.isFinite(raisedAt)) times.push(raisedAt);
  for (const v of [threshold, baseline]) if (Number.isFinite(v)) values.push(v);

  let t0 = Math.min(...times);
  let t1 = Math.max(...times);
  if (t1 === t0) {
    t0 -= 60_000;
    t1 += 60_000;
  }
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
  lo -= pad;
  hi += pad;
  if (lo < 0 && Math.min(...values) >= 0) lo = 0;
  const yTicks = niceTicks(lo, hi, 5);
  lo = Math.min(lo, yTicks[0] ?? lo);
  hi = Math.max(hi, yTicks[yTicks.length - 1] ?? hi);

  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);
  const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * (H - M.top - M.bottom);

  const grid = el("g", { class: "chart-grid", "aria-hidden": "true" });
  for (const v of yTicks) {
    grid.append(el("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    grid.append(
      el("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end", class: "chart-tick" }, fmtValue(v)),
    );
  }
  const xCount = 5;
  for (let i = 0; i <= xCount; i += 1) {
    const t = t0 + ((t1 - t0) * i) / xCount;
    grid.append(
      el(
        "text",
        {
          x: x(t),
          y: H - 10,
          "text-anchor": i === 0 ? "start" : i === xCount ? "end" : "middle",
          class: "chart-tick",
        },
        fmtTime(t),
      ),
    );
  }
  grid.append(el("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom, class: "chart-axis" }));
  grid.append(
    el("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "chart-axis" }),
  );
  svg.append(grid);

  const marks = el("g", { "aria-hidden": "true" });
  if (Number.isFinite(raisedAt)) {
    marks.append(el("line", { x1: x(raisedAt), x2: x(raisedAt), y1: M.top, y2: H - M.bottom, class: "chart-raised" }));
    const nearRight = x(raisedAt) > W - M.right - 60;
    marks.append(
      el(
        "text",
        {
          x: x(raisedAt) + (nearRight ? -4 : 4),
          y: M.top + 10,
          "text-anchor": nearRight ? "end" : "start",
          class: "chart-label",
        },
        labels.raised,
      ),
    );
  }
  if (Number.isFinite(baseline)) {
    marks.append(el("line", { x1: M.left, x2: W - M.right, y1: y(baseline), y2: y(baseline), class: "chart-baseline" }));
    marks.append(
      el(
        "text",
        { x: W - M.right - 4, y: y(baseline) + 14, "text-anchor": "end", class: "chart-label" },
        `${labels.baseline} ${fmtValue(baseline)}`,
      ),
    );
  }
  if (Number.isFinite(threshold)) {
    marks.append(el("line", { x1: M.left, x2: W - M.right, y1: y(threshold), y2: y(threshold), class: "chart-threshold" }));
    marks.append(
      el(
        "text",
        { x: W - M.right - 4, y: y(threshold) - 5, "text-anchor": "end", class: "chart-label chart-threshold-label" },
        `${labels.threshold} ${fmtValue(threshold)}`,
      ),
    );
  }
  svg.append(marks);

  if (points.length) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
    svg.append(el("path", { d, class: "chart-line", "aria-hidden": "true" }));
    if (points.length <= 90) {
      const dots = el("g", { class: "chart-dots", "aria-hidden": "true" });
      for (const p of points) dots.append(el("circle", { cx: x(p.t), cy: y(p.v), r: 2.5 }));
      svg.append(dots);
    }
    if (forecast) {
      const last = points[points.length - 1];
      svg.append(
        el("line", {
          x1: x(last.t),
          y1: y(last.v),
          x2: x(forecast.t),
          y2: y(forecast.v),
          class: "chart-forecast",
          "aria-hidden": "true",
        }),
      );
      svg.append(el("circle", { cx: x(forecast.t), cy: y(forecast.v), r: 4, class: "chart-forecast-dot", "aria-hidden": "true" }));
    }
  }
  return svg;
}
