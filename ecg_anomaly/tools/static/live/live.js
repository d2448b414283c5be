// The live page: polls /api/stats and /api/beats and draws them. Plain DOM and SVG, no library.
"use strict";

const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 420;
const WAVE = { top: 12, height: 106 };
const ERROR = { top: 136, height: 44 };
const SEVERITIES = ["low", "medium", "high", "critical"];
let paused = false;

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "\u2013" : value.toFixed(digits);
}

function count(value) {
  return value === null || value === undefined ? "\u2013" : Math.round(value).toLocaleString("en");
}

function x(sample, samples) {
  return (sample / (samples - 1)) * WIDTH;
}

// Points of a series scaled into a panel, as "x,y" strings.
function points(values, panel, low, high) {
  const span = high - low || 1;
  return values.map((v, i) => `${x(i, values.length).toFixed(1)},${(panel.top + panel.height * (1 - (v - low) / span)).toFixed(1)}`);
}

function label(atX, atY, text) {
  const node = svg("text", { x: atX, y: atY });
  node.textContent = text;
  return node;
}

function drawBeat(beat) {
  const figure = element("figure", undefined, `flagged ${beat.severity}`);
  figure.dataset.eventId = beat.event_id;
  const drawing = svg("svg", { viewBox: `0 0 ${WIDTH} ${ERROR.top + ERROR.height + 4}`, role: "img" });
  const where = beat.error_location;
  const samples = beat.values ? beat.values.length : 140;
  drawing.append(svg("rect", {
    class: "window", x: x(where.window_start, samples), y: 0,
    width: x(where.window_end - 1, samples) - x(where.window_start, samples), height: ERROR.top + ERROR.height,
  }));
  if (beat.values) {
    const low = Math.min(...beat.values), high = Math.max(...beat.values);
    const line = points(beat.values, WAVE, low - 0.05 * (high - low), high + 0.05 * (high - low));
    drawing.append(svg("path", { class: "wave", d: "M" + line.join("L"), "data-points": line.length }));
    const [px, py] = line[where.peak_sample].split(",");
    drawing.append(svg("circle", { class: "peak", cx: px, cy: py, r: 3.5 }));
  }
  drawing.append(label(2, WAVE.top, "beat (raw values)"));
  if (beat.sample_error) {
    // One scale for the error and the threshold: the score (the error's mean) is above the dashed line.
    const peak = Math.max(...beat.sample_error);
    const high = Math.max(peak, beat.threshold);
    const line = points(beat.sample_error, ERROR, 0, high);
    const base = ERROR.top + ERROR.height;
    drawing.append(svg("path", {
      class: "error", d: `M0,${base}L${line.join("L")}L${WIDTH},${base}Z`, "data-points": line.length,
    }));
    const y = base - (ERROR.height * beat.threshold) / high;
    drawing.append(svg("line", { class: "threshold", x1: 0, x2: WIDTH, y1: y, y2: y }));
    drawing.append(label(2, ERROR.top - 2, `per-sample error (max ${peak.toFixed(3)}); dashed: the threshold`));
  }
  drawing.append(svg("line", { class: "axis", x1: 0, x2: WIDTH, y1: ERROR.top + ERROR.height, y2: ERROR.top + ERROR.height }));
  figure.append(drawing);

  const caption = element("figcaption");
  const title = element("div", undefined, "title");
  title.append(element("strong", beat.source_id), element("span", ` ${beat.severity}`, `severity ${beat.severity}`));
  caption.append(title);
  caption.append(element("div", `${beat.beat_time}${beat.label ? ` \u00b7 labelled ${beat.label}` : ""}`));
  caption.append(element("div", `score ${fixed(beat.score, 4)} > threshold ${fixed(beat.threshold, 4)} (x${fixed(beat.ratio, 2)})`));
  caption.append(element("div", `error window samples ${where.window_start}\u2013${where.window_end - 1} (${Math.round(100 * where.window_share)}%), peak at ${where.peak_sample}`));
  const input = beat.input || {};
  caption.append(element("div", `read from ${input.topic} ${input.partition}@${input.offset}`, "coordinates"));
  if (beat.rescored !== null && beat.rescored !== undefined) {
    caption.append(element("div", `rescored by this page: ${fixed(beat.rescored, 4)} (model ${beat.model_version})`, "rescored"));
  }
  if (beat.note) caption.append(element("div", beat.note, "note"));
  figure.append(caption);
  return figure;
}

function showStats(stats) {
  document.getElementById("where").textContent =
    `following ${stats.topic} at ${stats.cluster}: ${count(stats.events)} anomaly events since the page started` +
    (stats.unreadable_events ? ` (${count(stats.unreadable_events)} unreadable)` : "");
  const failure = document.getElementById("failure");
  failure.hidden = !stats.failure;
  failure.textContent = stats.failure || "";

  const metrics = stats.metrics;
  const n = metrics.numbers || {};
  document.getElementById("beats-per-second").textContent = count(n.beats_per_second);
  document.getElementById("anomaly-rate").textContent =
    n.anomaly_rate === null || n.anomaly_rate === undefined ? "\u2013" : `${(100 * n.anomaly_rate).toFixed(1)}%`;
  document.getElementById("p99").textContent =
    n.p99_seconds === null || n.p99_seconds === undefined ? "\u2013" : `${Math.round(1000 * n.p99_seconds)} ms`;
  for (const [id, key] of [["scored", "scored"], ["anomalies", "anomalies"], ["dead-letters", "dead_letters"], ["lag", "lag"]]) {
    document.getElementById(id).textContent = count(n[key]);
  }
  document.getElementById("precision-recall").textContent = `${fixed(n.precision, 3)} / ${fixed(n.recall, 3)}`;
  document.getElementById("episodes-tile").hidden = !stats.episodes;
  document.getElementById("episodes-open").textContent = count(n.episodes_open);
  document.getElementById("episodes-label").textContent = n.episodes_opened === undefined
    ? "open alert episodes"
    : `open alert episodes (${count(n.episodes_opened)} opened, ${count(n.episodes_closed)} closed)`;
  const note = document.getElementById("metrics-note");
  if (!metrics.url) note.textContent = "No worker metrics: give watch --web a --metrics-url.";
  else if (metrics.error) note.textContent = metrics.error;
  else if (n.window_seconds > 0) note.textContent = `From ${metrics.url}, over the last ${n.window_seconds.toFixed(0)} s.`;
  else note.textContent = `From ${metrics.url}; the rates need a second scrape.`;

  const errorNote = document.getElementById("error-note");
  errorNote.textContent = stats.model
    ? "Each drawn beat is read back from the input topic at its event's topic, partition and offset and " +
      `scored again with ${stats.model.path} (model ${stats.model.version}) through onnxruntime, as the worker ` +
      "scores it: the filled curve under each beat is that model's per-sample error (its sample_error output). " +
      "The event itself carries only where the error concentrates (the shaded window, the dot at its peak); " +
      "the rescored score is printed beside the event's."
    : "Each drawn beat is read back from the input topic at its event's topic, partition and offset. No model " +
      "was given (--model), so no per-sample error is drawn: the shaded window and the dot are where the event " +
      "says the error concentrates.";

  document.getElementById("sources-shown").textContent = stats.source_count > stats.sources.length
    ? `(the ${stats.sources.length} most flagged of ${count(stats.source_count)} sources)` : "";
  const body = document.querySelector("#sources tbody");
  body.replaceChildren(...stats.sources.map((row) => {
    const tr = element("tr");
    tr.append(element("td", row.source_id), element("td", count(row.flagged)));
    for (const severity of SEVERITIES) tr.append(element("td", count(row.severities[severity])));
    tr.append(element("td", row.labelled ? `${count(row.labelled_abnormal)} of ${count(row.labelled)}` : "\u2013"));
    tr.append(element("td", row.last_beat_time));
    return tr;
  }));
}

async function poll(path, show) {
  try {
    const response = await fetch(path, { cache: "no-store" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    show(await response.json());
  } catch (error) {
    const failure = document.getElementById("failure");
    failure.hidden = false;
    failure.textContent = `the page's server does not answer (${error.message}): the command has probably stopped`;
  }
}

function showBeats(answer) {
  if (answer.beats.length) document.getElementById("beats").replaceChildren(...answer.beats.map(drawBeat));
}

async function refresh() {
  await poll("api/stats", showStats);
  if (!paused) await poll("api/beats", showBeats);
}

document.getElementById("pause").addEventListener("click", (event) => {
  paused = !paused;
  event.target.textContent = paused ? "resume" : "pause";
});
refresh();
setInterval(refresh, POLL_MS);
