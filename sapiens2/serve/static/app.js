// The sapiens2 page: pick a photo, pick tasks, POST each task to /v1/{task}, draw what comes back.
// Everything it shows comes from this server; it loads nothing from the network.
"use strict";

const $ = (id) => document.getElementById(id);
let photo = null;  // {blob, name}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function showPhoto(blob, name) {
  photo = { blob, name };
  $("photo").src = URL.createObjectURL(blob);
  $("photo").hidden = false;
  $("drop-text").hidden = true;
  $("photo-name").textContent = name;
  updateRun();
}

function chosenTasks() {
  return [...document.querySelectorAll("#tasks input:checked")].map((el) => el.value);
}

function updateRun() {
  $("run").disabled = !photo || chosenTasks().length === 0;
}

async function loadModels() {
  const box = $("tasks");
  try {
    const r = await fetch("/v1/models");
    const info = await r.json();
    box.innerHTML = "<legend>Tasks</legend>";
    for (const t of info.tasks) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = t.task;
      input.id = `task-${t.task}`;
      input.checked = t.ready && (t.task === "pose" || t.task === "seg");
      input.disabled = !t.ready;
      input.addEventListener("change", updateRun);
      label.append(input, ` ${t.task} `);
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = `— ${t.summary} (${t.model})`;
      label.append(note);
      box.append(label);
      if (!t.ready) {
        const missing = document.createElement("div");
        missing.className = "missing";
        missing.id = `missing-${t.task}`;
        missing.textContent = t.missing;
        box.append(missing);
      }
    }
  } catch (e) {
    box.innerHTML = `<legend>Tasks</legend><span class="error">could not reach the server: ${e}</span>`;
  }
  updateRun();
}

function card(task) {
  const c = document.createElement("div");
  c.className = "card";
  c.id = `result-${task}`;
  c.innerHTML = `<h2>${task}</h2><p class="meta">running…</p>`;
  return c;
}

function download(name, media, b64) {
  const a = document.createElement("a");
  a.href = `data:${media};base64,${b64}`;
  a.download = name;
  a.textContent = name;
  return a;
}

async function runTask(task, c) {
  const form = new FormData();
  form.append("image", photo.blob, photo.name);
  const params = new URLSearchParams({ vis: "true" });
  const all = { pose: "json,npz", seg: "npz,png", normal: "npz", pointmap: "npz,ply", albedo: "npz,png",
                matting: "npz,png", depth: "npz" };
  if (all[task]) params.set("save", `${all[task]},vis`);
  if (task === "pose" && $("format").value) params.set("format", $("format").value);
  const started = performance.now();
  const r = await fetch(`/v1/${task}?${params}`, { method: "POST", body: form });
  const body = await r.json();
  c.querySelector(".meta").remove();
  if (!r.ok) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = `${r.status}: ${body.error ? body.error.message : JSON.stringify(body)}`;
    c.append(p);
    return false;
  }
  const stem = photo.name.replace(/\..*$/, "") || "photo";
  const files = Object.entries(body.files);
  const picture = files.find(([s]) => s.endsWith(".jpg"));
  if (picture) {
    const img = document.createElement("img");
    img.alt = `${task} result`;
    img.className = "vis";
    img.src = `data:${picture[1].media_type};base64,${picture[1].base64}`;
    c.append(img);
  }
  const links = document.createElement("p");
  links.className = "files";
  for (const [suffix, f] of files) links.append(download(`${stem}${suffix}`, f.media_type, f.base64));
  if (body.result) {
    const json = btoa(unescape(encodeURIComponent(JSON.stringify(body.result))));
    links.append(download(`${stem}_${task}.json`, "application/json", json));
  }
  c.append(links);
  const meta = document.createElement("p");
  meta.className = "meta";
  const n = body.result && body.result.instances ? body.result.instances.length : null;
  const people = n === null ? "" : `${n} ${n === 1 ? "person" : "people"} · `;
  meta.textContent = `${people}${body.image_size[1]}×${body.image_size[0]} · ` +
    `${Math.round(performance.now() - started)} ms`;
  c.append(meta);
  return true;
}

async function run() {
  const tasks = chosenTasks();
  if (!photo || !tasks.length) return;
  $("run").disabled = true;
  setStatus(`running ${tasks.join(", ")}…`);
  const results = $("results");
  results.innerHTML = "";
  const cards = tasks.map((t) => { const c = card(t); results.append(c); return c; });
  const outcomes = await Promise.all(tasks.map((t, i) => runTask(t, cards[i]).catch((e) => {
    cards[i].append(Object.assign(document.createElement("p"), { className: "error", textContent: String(e) }));
    return false;
  })));
  const failed = outcomes.filter((ok) => !ok).length;
  setStatus(failed ? `${failed} of ${tasks.length} failed` : "done", failed > 0);
  updateRun();
}

$("file").addEventListener("change", (e) => {
  const f = e.target.files[0];
  if (f) showPhoto(f, f.name);
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const f = e.dataTransfer.files[0];
  if (f) showPhoto(f, f.name);
});
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
$("demo").addEventListener("click", async () => {
  const r = await fetch("/demo.jpg");
  showPhoto(await r.blob(), "astronaut.jpg");
});
$("run").addEventListener("click", run);
loadModels();
