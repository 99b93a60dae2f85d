// latentatlas explore: the page. Plain JavaScript, no framework, nothing fetched from outside this server.
//
// The state (start, slider positions, held attributes, W+ layers, psi, compare mode) is one object; every change
// asks for a render. Renders coalesce: at most one request is in flight, and while it is, only the newest state
// waits (a fast drag never queues stale renders). Scores of the shown image are asked for the same way, on their
// own line, so the server computes the next image and the last image's scores at once.
"use strict";

const SLIDER_RANGE = 5;          // the sliders' visual range (a permalink may go further, up to the server's limit)
const VIEW_SIDE = 320;           // the image's side on the page (CSS pixels)
const TILE_SIDE = 160;           // compare mode's tiles (smaller when there are many)
const POLL_MS = 300;             // photo job progress
const SCORES_EVERY_MS = 200;     // scores while a drag goes on (see scoresFor)

const $ = (id) => document.getElementById(id);

const state = {
  start: { kind: "seed", key: "0" },
  edits: new Map(),            // slider id -> alpha, in the order they were moved
  keep: new Set(),
  layers: null,                // [start, stop] or null for all
  psi: 1,
  mode: "sliders",
  compare: null,
  calpha: 0,
};
let catalog = null;
let activeSlider = null;
const sliderInputs = new Map(); // slider id -> <input type=range>

// Measured by the benchmark and the tests: input event -> image painted, per painted frame (ms); the server's own
// time per image (its Server-Timing header).
const stats = { latencies: [], server: [], renders: 0, inputs: 0, scores: 0 };
window.exploreStats = stats;

function fmt(value) {
  return String(Math.round(value * 1000) / 1000);
}

function queryOf(s) {
  const params = new URLSearchParams();
  params.append("start", `${s.start.kind}:${s.start.key}`);
  for (const [id, alpha] of s.edits) if (alpha !== 0) params.append("e", `${id}:${fmt(alpha)}`);
  for (const name of s.keep) params.append("keep", name);
  if (s.layers) params.set("layers", `${s.layers[0]},${s.layers[1]}`);
  if (s.psi !== 1) params.set("psi", fmt(s.psi));
  if (s.mode !== "sliders") params.set("mode", s.mode);
  if (s.compare) params.set("cmp", s.compare);
  if (s.calpha !== 0) params.set("calpha", fmt(s.calpha));
  return params.toString();
}

function readQuery(search) {
  const params = new URLSearchParams(search);
  const start = params.get("start");
  if (start && start.includes(":")) {
    const at = start.indexOf(":");
    state.start = { kind: start.slice(0, at), key: start.slice(at + 1) };
  }
  for (const text of params.getAll("e")) {
    const at = text.lastIndexOf(":");
    const alpha = Number(text.slice(at + 1));
    if (at > 0 && Number.isFinite(alpha)) state.edits.set(text.slice(0, at), alpha);
  }
  for (const name of params.getAll("keep")) state.keep.add(name);
  const layers = params.get("layers");
  if (layers && layers.includes(",")) state.layers = layers.split(",").map(Number);
  if (params.has("psi")) state.psi = Number(params.get("psi"));
  if (params.get("mode") === "compare") state.mode = "compare";
  if (params.has("cmp")) state.compare = params.get("cmp");
  if (params.has("calpha")) state.calpha = Number(params.get("calpha"));
}

// ------------------------------------------------------------------------------------------------ errors

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error || `${response.status} ${response.statusText}`;
  } catch (ignored) {
    return `${response.status} ${response.statusText}`;
  }
}

// ------------------------------------------------------------------------------------------------ coalescing

// One line of requests: `send(job)` runs for the newest job only; jobs that arrive while one runs replace each other.
function coalescer(send) {
  let running = false;
  let pending = null;
  async function pump() {
    running = true;
    while (pending) {
      const job = pending;
      pending = null;
      try {
        await send(job);
      } catch (error) {
        showError(String(error));
      }
    }
    running = false;
  }
  return (job) => {
    pending = job;
    if (!running) pump();
  };
}

function afterPaint() {
  // requestAnimationFrame runs just before the frame is painted; a message posted from it arrives after.
  return new Promise((resolve) => requestAnimationFrame(() => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve(performance.now());
    channel.port2.postMessage(null);
  }));
}

let lastInput = performance.now();

let received = 0;                // images received, in request order
let shown = 0;                   // the newest of them on screen
let latest = "";                 // the query of the newest state

// The next request goes out as soon as an image has arrived; drawing it (decode, paint) overlaps the next render.
const render = coalescer(async (job) => {
  const endpoint = job.mode === "compare" ? "/api/compare" : "/api/render";
  const response = await fetch(`${endpoint}?${job.query}`);
  if (!response.ok) {
    $("busy").hidden = true;
    showError(await errorOf(response));
    return;
  }
  const timing = /dur=([0-9.]+)/.exec(response.headers.get("Server-Timing") || "");
  if (timing) stats.server.push(Number(timing[1]));
  job.tiles = response.headers.get("X-Compare-Tiles");
  job.order = ++received;
  paint(job, await response.blob()).catch((error) => showError(String(error)));
});

async function paint(job, blob) {
  const bitmap = await createImageBitmap(blob);
  if (job.order < shown) {
    bitmap.close();              // a newer image is already on screen
    return;
  }
  shown = job.order;
  if (job.mode === "compare") drawCompare(bitmap, JSON.parse(job.tiles));
  else drawView(bitmap);
  const canvas = job.mode === "compare" ? $("compare-canvas") : $("view");
  canvas.dataset.key = job.query;
  const painted = await afterPaint();
  stats.latencies.push(painted - job.t0);
  stats.renders += 1;
  if (job.query === latest) $("busy").hidden = true;
  scoresFor(job);
}

// Scores of the shown image: at once when it is the newest state; during a drag (newer renders coming) at most
// every SCORES_EVERY_MS, so scoring leaves the second core to the browser and the next render.
let scoresAsked = -Infinity;
let scoresTimer = null;
function scoresFor(job) {
  clearTimeout(scoresTimer);
  const wait = job.query === latest ? 0 : Math.max(0, SCORES_EVERY_MS - (performance.now() - scoresAsked));
  scoresTimer = setTimeout(() => {
    scoresAsked = performance.now();
    askScores({ query: job.query, mode: job.mode });
  }, wait);
}

const askScores = coalescer(async (job) => {
  const endpoint = job.mode === "compare" ? "/api/compare/scores" : "/api/scores";
  const response = await fetch(`${endpoint}?${job.query}`);
  if (!response.ok) {
    showError(await errorOf(response));
    return;
  }
  const body = await response.json();
  if (job.mode === "compare") showCompareScores(body.tiles, job.query);
  else showScores(body.scores, job.query);
  stats.scores += 1;
});

let urlTimer = null;
function changed(t0) {
  const query = queryOf(state);
  latest = query;
  $("busy").hidden = false;
  render({ query, mode: state.mode, t0: t0 === undefined ? performance.now() : t0 });
  updateExports();
  clearTimeout(urlTimer);
  urlTimer = setTimeout(() => {
    history.replaceState(null, "", `?${query}`);
    $("permalink").value = location.href;
  }, 250);
}

// ------------------------------------------------------------------------------------------------ drawing

function drawView(bitmap) {
  const canvas = $("view");
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = bitmap.width > VIEW_SIDE;
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  $("view-caption").textContent = describeState();
}

function tileSide(count) {
  return count > 6 ? 112 : TILE_SIDE;
}

function drawCompare(bitmap, tiles) {
  const canvas = $("compare-canvas");
  const side = tileSide(tiles.length);
  const width = side * tiles.length;
  if (canvas.width !== width) canvas.width = width;
  canvas.height = side;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = bitmap.height > side;
  context.drawImage(bitmap, 0, 0, width, side);
  bitmap.close();
  const row = $("compare-tiles");
  const key = tiles.map((tile) => tile.label).join("|");
  if (row.dataset.key !== key) {
    row.replaceChildren(...tiles.map((tile) => {
      const cell = document.createElement("div");
      cell.className = "tile";
      cell.style.width = `${side}px`;
      cell.dataset.slider = tile.slider || "start";
      const title = document.createElement("div");
      title.className = "tile-title";
      title.textContent = tile.label;
      title.title = tile.slider || "the start image";
      const score = document.createElement("div");
      score.className = "tile-score";
      cell.append(title, score);
      return cell;
    }));
    row.dataset.key = key;
  }
}

function describeState() {
  const moved = [...state.edits].filter(([, alpha]) => alpha !== 0);
  const start = `${state.start.kind} ${state.start.kind === "photo" ? "" : state.start.key}`.trim();
  return moved.length ? `${start}, ${moved.length} slider${moved.length > 1 ? "s" : ""} moved` : start;
}

function showScores(scores, query) {
  const body = $("scores").tBodies[0];
  const previous = Object.fromEntries([...body.rows].map((row) => [row.dataset.score, Number(row.dataset.value)]));
  body.replaceChildren(...Object.entries(scores).map(([name, value]) => {
    const row = document.createElement("tr");
    row.dataset.score = name;
    row.dataset.value = String(value);
    const delta = name in previous ? value - previous[name] : 0;
    const bar = Math.max(0, Math.min(1, Math.abs(value) <= 1 ? Math.abs(value) : value / 100));
    row.innerHTML = `<th scope="row"></th><td class="bar"><span></span></td><td class="value"></td>`
      + `<td class="delta"></td>`;
    row.cells[0].textContent = name;
    row.cells[1].firstChild.style.width = `${Math.round(bar * 100)}%`;
    row.cells[2].textContent = value.toFixed(3);
    row.cells[3].textContent = Math.abs(delta) >= 0.0005 ? (delta > 0 ? "▲" : "▼") : "";
    row.cells[3].className = `delta ${delta > 0 ? "up" : "down"}`;
    if (state.edits.size && [...state.edits.keys()].some((id) => catalogSlider(id)?.attribute === name)) {
      row.classList.add("edited");
    }
    if (state.keep.has(name)) row.classList.add("held");
    return row;
  }));
  $("scores").dataset.key = query;
}

function showCompareScores(tiles, query) {
  const cells = $("compare-tiles").children;
  tiles.forEach((tile, index) => {
    if (!cells[index]) return;
    const value = tile.scores[state.compare];
    cells[index].querySelector(".tile-score").textContent =
      value === undefined ? "" : `${state.compare} ${value.toFixed(3)}`;
    cells[index].dataset.value = value === undefined ? "" : String(value);
  });
  $("compare-tiles").dataset.scoresKey = query;
}

// ------------------------------------------------------------------------------------------------ controls

function catalogSlider(id) {
  for (const group of catalog.groups) for (const slider of group.sliders) if (slider.id === id) return slider;
  return null;
}

function buildGroups() {
  const container = $("groups");
  container.replaceChildren();
  for (const group of catalog.groups) {
    const card = document.createElement("section");
    card.className = "group";
    card.dataset.group = group.attribute;
    const header = document.createElement("header");
    const title = document.createElement("h3");
    title.textContent = group.attribute;
    header.append(title);
    if (group.sliders.some((slider) => slider.attribute !== null)) {
      const hold = document.createElement("label");
      hold.className = "hold";
      hold.innerHTML = `<input type="checkbox"> hold`;
      const box = hold.firstChild;
      box.dataset.hold = group.attribute;
      box.checked = state.keep.has(group.attribute);
      box.addEventListener("change", (event) => {
        if (box.checked) state.keep.add(group.attribute);
        else state.keep.delete(group.attribute);
        card.classList.toggle("held", box.checked);
        changed(event.timeStamp);
      });
      card.classList.toggle("held", box.checked);
      header.append(hold);
    }
    card.append(header);
    for (const slider of group.sliders) card.append(sliderRow(slider));
    container.append(card);
  }
}

function sliderRow(slider) {
  const row = document.createElement("div");
  row.className = "slider";
  const label = document.createElement("label");
  const id = `slider-${sliderInputs.size}`;
  label.htmlFor = id;
  label.textContent = slider.label;
  label.title = `${slider.id} (${slider.space}${slider.kind === "gradient_path" ? ", nonlinear: gradient path" : ""})`;
  const input = document.createElement("input");
  input.type = "range";
  input.id = id;
  input.dataset.slider = slider.id;
  const alpha = state.edits.get(slider.id) || 0;
  const range = Math.max(SLIDER_RANGE, Math.abs(alpha));
  input.min = String(-range);
  input.max = String(range);
  input.step = "0.1";
  input.value = String(alpha);
  const output = document.createElement("output");
  output.textContent = alpha.toFixed(1);
  const reset = document.createElement("button");
  reset.type = "button";
  reset.className = "zero";
  reset.textContent = "0";
  reset.title = "back to 0";
  input.addEventListener("input", (event) => {
    stats.inputs += 1;
    const value = Number(input.value);
    if (value === 0) state.edits.delete(slider.id);
    else state.edits.set(slider.id, value);
    output.textContent = value.toFixed(1);
    setActive(slider.id);
    changed(event.timeStamp);
  });
  reset.addEventListener("click", (event) => {
    input.value = "0";
    input.dispatchEvent(new Event("input"));
  });
  if (slider.space === "z" && state.start.kind === "photo" && catalog.photo.space === "w+") input.disabled = true;
  sliderInputs.set(slider.id, input);
  row.append(label, input, output, reset);
  return row;
}

function setActive(id) {
  activeSlider = id;
  for (const [other, input] of sliderInputs) input.closest(".slider").classList.toggle("active", other === id);
  $("active-slider").textContent = id;
  $("export-strip").disabled = false;
  $("export-anim").disabled = false;
}

function setMode(mode) {
  state.mode = mode;
  $("mode-sliders").setAttribute("aria-pressed", String(mode === "sliders"));
  $("mode-compare").setAttribute("aria-pressed", String(mode === "compare"));
  $("sliders-view").hidden = mode !== "sliders";
  $("compare-view").hidden = mode !== "compare";
  $("single-view").classList.toggle("dimmed", mode === "compare");
  $("scores-panel").classList.toggle("dimmed", mode === "compare");
  if (mode === "compare" && !state.compare) state.compare = catalog.compare_attributes[0] || null;
  $("compare-attribute").value = state.compare || "";
}

function setStart(kind, key, t0) {
  state.start = { kind, key: String(key) };
  for (const [id, input] of sliderInputs) {
    const slider = catalogSlider(id);
    input.disabled = kind === "photo" && catalog.photo.space === "w+" && slider.space === "z";
  }
  changed(t0);
}

function buildWControls() {
  if (!catalog.generator.has_w) return;
  $("w-panel").hidden = false;
  const count = catalog.generator.num_ws;
  for (let layer = 0; layer < count; layer += 1) $("layer-start").add(new Option(String(layer), String(layer)));
  for (let layer = 1; layer <= count; layer += 1) $("layer-stop").add(new Option(String(layer), String(layer)));
  const [first, last] = state.layers || [0, count];
  $("layer-start").value = String(first);
  $("layer-stop").value = String(last);
  $("layers-all").checked = !state.layers;
  $("psi").value = String(state.psi);
  $("psi-value").textContent = state.psi.toFixed(2);
  const layersChanged = (event) => {
    const first = Number($("layer-start").value);
    const last = Number($("layer-stop").value);
    state.layers = $("layers-all").checked ? null : [first, Math.max(first + 1, last)];
    if (state.layers) $("layer-stop").value = String(state.layers[1]);
    changed(event.timeStamp);
  };
  for (const id of ["layer-start", "layer-stop", "layers-all"]) $(id).addEventListener("change", layersChanged);
  $("psi").addEventListener("input", (event) => {
    state.psi = Number($("psi").value);
    $("psi-value").textContent = state.psi.toFixed(2);
    changed(event.timeStamp);
  });
}

// ------------------------------------------------------------------------------------------------ photos

async function uploadPhoto(file) {
  const limits = catalog.photo.limits;
  if (file.size > limits.max_bytes) {
    showError(`the photo is ${(file.size / 2 ** 20).toFixed(1)} MiB; at most ${limits.max_bytes / 2 ** 20} MiB`);
    return;
  }
  $("photo-progress").hidden = false;
  $("photo-status").textContent = "uploading…";
  $("photo-bar").value = 0;
  const response = await fetch("/api/photos", { method: "POST", body: file,
    headers: { "Content-Type": file.type || "application/octet-stream" } });
  if (!response.ok) {
    $("photo-progress").hidden = true;
    showError(await errorOf(response));
    return;
  }
  pollJob((await response.json()).job);
}

let polledJob = null;
async function pollJob(job) {
  polledJob = job.id;
  $("drop").dataset.job = job.id;
  $("drop").dataset.jobState = job.state;
  $("photo-bar").max = Math.max(1, job.steps);
  $("photo-bar").value = job.step;
  $("photo-status").textContent = job.state === "inverting" ? `inverting: step ${job.step} of ${job.steps}`
    : job.state === "aligning" ? "finding and aligning the face…" : job.message || job.state;
  if (job.state === "done") {
    $("photo-progress").hidden = true;
    $("photo-result").hidden = false;
    $("photo-aligned").src = `/api/photos/${job.photo}/aligned.png`;
    $("photo-summary").textContent = job.message;
    setStart("photo", job.photo);
    return;
  }
  if (job.state === "failed" || job.state === "cancelled") {
    $("photo-progress").hidden = job.state === "failed";
    if (job.state === "failed") showError(`photo: ${job.message}`);
    return;
  }
  setTimeout(async () => {
    if (polledJob !== job.id) return;
    const response = await fetch(`/api/jobs/${job.id}`);
    if (!response.ok) showError(await errorOf(response));
    else pollJob((await response.json()).job);
  }, POLL_MS);
}

async function cancelPhoto() {
  if (!polledJob) return;
  const response = await fetch(`/api/jobs/${polledJob}/cancel`, { method: "POST" });
  if (!response.ok) showError(await errorOf(response));
}

// ------------------------------------------------------------------------------------------------ exports

function exportQuery(extra) {
  const params = new URLSearchParams(queryOf(state));
  for (const [key, value] of Object.entries(extra)) params.set(key, String(value));
  return params.toString();
}

function updateExports() {
  $("permalink").value = `${location.origin}${location.pathname}?${queryOf(state)}`;
}

async function download(path) {
  const response = await fetch(path);
  if (!response.ok) {
    showError(await errorOf(response));
    return;
  }
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = disposition.match(/filename="([^"]+)"/);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = match ? match[1] : "latentatlas-export";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  $("export-panel").dataset.last = link.download;
}

function bindExports() {
  for (const format of catalog.formats) $("export-format").add(new Option(format.toUpperCase(), format));
  const span = () => Number($("span").value) || 3;
  $("export-image").addEventListener("click", () => download(`/api/export/image.png?${exportQuery({ scale: 4 })}`));
  $("export-latent").addEventListener("click", () => download(`/api/export/latent.npy?${exportQuery({})}`));
  $("export-strip").addEventListener("click", () => download(
    `/api/export/strip.png?${exportQuery({ slider: activeSlider, steps: 7, span: span() })}`));
  $("export-anim").addEventListener("click", () => download(
    `/api/export/traversal.${$("export-format").value}?${exportQuery({ slider: activeSlider, span: span() })}`));
  $("copy-link").addEventListener("click", async () => {
    const link = `${location.origin}${location.pathname}?${queryOf(state)}`;
    $("permalink").value = link;
    $("permalink").select();
    try {
      await navigator.clipboard.writeText(link);
      $("copy-link").textContent = "copied";
    } catch (ignored) {
      $("copy-link").textContent = "select the link below";
    }
    setTimeout(() => { $("copy-link").textContent = "copy link"; }, 1500);
  });
}

// ------------------------------------------------------------------------------------------------ start up

function showNotes() {
  const notes = [];
  for (const [name, why] of Object.entries(catalog.skipped)) notes.push(`${name} left out: ${why}`);
  for (const [name, lines] of Object.entries(catalog.notes)) for (const line of lines) notes.push(line);
  if (catalog.samples_note) notes.push(catalog.samples_note);
  if (notes.length) {
    $("notes").hidden = false;
    $("notes-list").replaceChildren(...notes.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }));
  }
  const photo = catalog.photo;
  $("photo-note").textContent = photo.encoder_note
    ? `This run has no usable encoder: ${photo.encoder_note}. Photos are inverted in ${photo.steps} steps.`
    : `Photos are aligned, then inverted in ${photo.space} from the run's encoder (${photo.steps} steps).`;
}

async function main() {
  const response = await fetch("/api/catalog");
  if (!response.ok) {
    showError(await errorOf(response));
    return;
  }
  catalog = await response.json();
  readQuery(location.search);
  const sets = Object.keys(catalog.sets);
  $("run-summary").textContent = `${catalog.generator.name} (${catalog.generator.resolution}²) · ${sets.length} `
    + `direction set${sets.length === 1 ? "" : "s"}: ${sets.join(", ")} · scores: ${catalog.scores.length} attributes`;
  $("sample").max = String(Math.max(0, catalog.samples - 1));
  $("sample-row").hidden = catalog.samples === 0;
  if (state.start.kind === "seed") $("seed").value = state.start.key;
  if (state.start.kind === "sample") $("sample").value = state.start.key;
  buildGroups();
  buildWControls();
  for (const attribute of catalog.compare_attributes) $("compare-attribute").add(new Option(attribute, attribute));
  $("compare-alpha").value = String(state.calpha);
  $("compare-alpha-value").textContent = state.calpha.toFixed(1);
  bindExports();
  showNotes();
  const moved = [...state.edits.keys()];
  if (moved.length) setActive(moved[moved.length - 1]);

  $("error-close").addEventListener("click", () => { $("error").hidden = true; });
  $("mode-sliders").addEventListener("click", (event) => { setMode("sliders"); changed(event.timeStamp); });
  $("mode-compare").addEventListener("click", (event) => { setMode("compare"); changed(event.timeStamp); });
  $("compare-attribute").addEventListener("change", (event) => {
    state.compare = $("compare-attribute").value;
    changed(event.timeStamp);
  });
  $("compare-alpha").addEventListener("input", (event) => {
    stats.inputs += 1;
    state.calpha = Number($("compare-alpha").value);
    $("compare-alpha-value").textContent = state.calpha.toFixed(1);
    changed(event.timeStamp);
  });
  $("seed").addEventListener("change", (event) => setStart("seed", Math.max(0, Math.floor(Number($("seed").value)))
    || 0, event.timeStamp));
  $("seed-random").addEventListener("click", (event) => {
    const seed = Math.floor(Math.random() * 2 ** 31);
    $("seed").value = String(seed);
    setStart("seed", seed, event.timeStamp);
  });
  $("sample-go").addEventListener("click", (event) => setStart("sample", Math.max(0, Math.floor(
    Number($("sample").value))) || 0, event.timeStamp));
  $("sample").addEventListener("change", (event) => setStart("sample", Math.max(0, Math.floor(
    Number($("sample").value))) || 0, event.timeStamp));
  $("reset").addEventListener("click", (event) => {
    state.edits.clear();
    for (const [, input] of sliderInputs) {
      input.value = "0";
      input.nextSibling.textContent = "0.0";
    }
    changed(event.timeStamp);
  });
  $("photo-file").addEventListener("change", () => {
    if ($("photo-file").files.length) uploadPhoto($("photo-file").files[0]);
  });
  $("photo-cancel").addEventListener("click", cancelPhoto);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) uploadPhoto(event.dataTransfer.files[0]);
  });

  setMode(state.mode);
  if (state.start.kind === "photo") {
    $("photo-result").hidden = false;
    $("photo-aligned").src = `/api/photos/${state.start.key}/aligned.png`;
    setStart("photo", state.start.key);
  } else {
    changed();
  }
  document.body.dataset.ready = "yes";
}

main().catch((error) => showError(String(error)));
