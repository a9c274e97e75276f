// The Nimbus page: every action goes through the JSON API under /api/, with
// the session cookie (HttpOnly, set at sign-in) and the CSRF token in
// X-CSRF-Token on every change. The current folder lives in the URL hash.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { csrf: null, me: null, path: "/", entries: [], sort: { key: "name", dir: 1 }, view: "files" };

// A store path as an API URL: each name encoded on its own.
function apiUrl(prefix, path) {
  const names = path.split("/").filter((n) => n.length > 0);
  return prefix + (names.length ? "/" + names.map(encodeURIComponent).join("/") : "");
}

function join(dir, name) {
  return (dir.endsWith("/") ? dir : dir + "/") + name;
}

// Sizes as `nimbus whoami` prints them (one decimal, binary units), so the
// page and the command line show the same numbers.
function human(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(1) + " " + units[i];
}

function say(text, isError) {
  const m = $("message");
  m.textContent = text || "";
  m.className = isError ? "error" : "";
}

// fetch with the CSRF token on changes; a JSON error body becomes an Error
// carrying the status.
async function api(method, url, body, extraHeaders) {
  const headers = Object.assign({}, extraHeaders || {});
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  let payload = body;
  if (body !== undefined && !(body instanceof Blob) && typeof body !== "string") {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  if (r.status === 401 && url !== "/api/login") {
    showSignIn();
    throw Object.assign(new Error("signed out"), { status: 401 });
  }
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(msg), { status: r.status });
  }
  return r;
}

function showSignIn() {
  state.csrf = null;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-user").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  $("signin-error").textContent = "";
  try {
    const r = await api("POST", "/api/login", { user: $("signin-user").value, password: $("signin-password").value });
    state.csrf = (await r.json()).csrf;
    $("signin-password").value = "";
    await start();
  } catch (e) {
    $("signin-error").textContent = e.status === 401 ? "Wrong user name or password." : e.message;
  }
}

async function signOut() {
  try { await api("POST", "/api/logout"); } catch (_) { /* signed out anyway */ }
  location.hash = "";
  showSignIn();
}

// Who is signed in and their quota: shown on every page, refreshed after
// every change.
async function refreshMe() {
  const me = await (await api("GET", "/api/me")).json();
  state.me = me;
  state.csrf = me.csrf;
  $("whoami").textContent = me.user;
  const q = me.quota;
  const fill = $("quota-fill");
  const limit = (q, f) => (q ? f(q) : "none");
  const text = human(q.bytes_used) + " used of " + limit(q.bytes_limit, human) +
    " · files: " + q.files_used + " used of " + limit(q.files_limit, String);
  $("quota-text").textContent = text;
  const frac = q.bytes_limit ? Math.min(1, q.bytes_used / q.bytes_limit) : 0;
  const ffrac = q.files_limit ? Math.min(1, q.files_used / q.files_limit) : 0;
  const worst = Math.max(frac, ffrac);
  fill.style.width = (worst * 100).toFixed(1) + "%";
  fill.className = worst >= 0.95 ? "full" : "";
}

function currentPath() {
  const h = decodeURIComponent(location.hash.replace(/^#/, ""));
  return h.startsWith("/") ? h : null;
}

async function start() {
  await refreshMe();
  $("signin").hidden = true;
  $("app").hidden = false;
  if (!currentPath()) location.hash = "#" + (state.me.home || "/");
  await route();
}

async function route() {
  if (location.hash === "#shared") return showShares();
  state.view = "files";
  state.path = currentPath() || (state.me && state.me.home) || "/";
  await load();
}

function breadcrumbs() {
  const bc = $("breadcrumbs");
  bc.textContent = "";
  const names = state.path.split("/").filter((n) => n);
  const add = (label, path) => {
    const a = document.createElement("a");
    a.textContent = label;
    a.href = "#" + path;
    bc.appendChild(a);
  };
  add("/", "/");
  let p = "";
  for (const n of names) {
    p += "/" + n;
    bc.appendChild(document.createTextNode(" › "));
    add(n, p);
  }
}

async function load() {
  $("shares-view").hidden = true;
  $("files").hidden = false;
  breadcrumbs();
  try {
    const list = await (await api("GET", apiUrl("/api/list", state.path))).json();
    state.entries = list.entries;
    say("");
  } catch (e) {
    state.entries = [];
    say(state.path + ": " + e.message, true);
  }
  render();
}

function sorted() {
  const { key, dir } = state.sort;
  return state.entries.slice().sort((a, b) => {
    // Folders first, whatever the column.
    if ((a.kind === "dir") !== (b.kind === "dir")) return a.kind === "dir" ? -1 : 1;
    const x = a[key], y = b[key];
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return c * dir;
  });
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  // "download", "rename", "share", "delete": a stable handle for tests.
  b.dataset.action = label.toLowerCase().split("/")[0];
  b.addEventListener("click", onClick);
  return b;
}

function render() {
  document.querySelectorAll("th.sortable").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === state.sort.key && state.sort.dir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === state.sort.key && state.sort.dir === -1);
  });
  const rows = $("rows");
  rows.textContent = "";
  for (const e of sorted()) {
    const tr = document.createElement("tr");
    tr.dataset.name = e.name;
    const path = join(state.path, e.name);
    const name = document.createElement("td");
    const a = document.createElement("a");
    a.textContent = e.kind === "dir" ? e.name + "/" : e.name;
    a.className = "entry-name";
    if (e.kind === "dir") a.href = "#" + path;
    else a.addEventListener("click", () => preview(path, e.name));
    name.appendChild(a);
    const size = document.createElement("td");
    size.className = "num size";
    size.textContent = e.kind === "dir" ? "" : human(e.size);
    size.title = e.size + " bytes";
    const mtime = document.createElement("td");
    mtime.textContent = e.mtime ? new Date(e.mtime).toLocaleString() : "";
    const acts = document.createElement("td");
    acts.className = "row-actions";
    if (e.kind !== "dir") {
      acts.appendChild(button("Download", () => { location.href = apiUrl("/api/file", path) + "?download=true"; }));
    } else {
      // A folder comes as a zip, made as it downloads.
      acts.appendChild(button("Download", () => { location.href = apiUrl("/api/zip", path); }));
    }
    acts.appendChild(button("Rename/move", () => renameEntry(path)));
    acts.appendChild(button("Share", () => openShare(path)));
    acts.appendChild(button("Delete", () => deleteEntry(path, e.kind === "dir")));
    tr.append(name, size, mtime, acts);
    rows.appendChild(tr);
  }
}

async function change(what, fn) {
  try {
    await fn();
    say(what);
  } catch (e) {
    say(e.message, true);
  }
  await load();
  refreshMe().catch(() => {});
}

function makeFolder() {
  const name = prompt("New folder name");
  if (!name) return;
  change("Created " + name, () => api("POST", apiUrl("/api/mkdir", join(state.path, name))));
}

function renameEntry(path) {
  const to = prompt("New name, or a path to move it to", path);
  if (!to || to === path) return;
  const target = to.startsWith("/") ? to : join(state.path, to);
  change("Moved to " + target, () => api("POST", "/api/rename", { from: path, to: target }));
}

function deleteEntry(path, isDir) {
  if (!confirm("Delete " + path + (isDir ? " and everything in it" : "") + "?")) return;
  change("Deleted " + path, () => api("DELETE", apiUrl("/api/file", path) + (isDir ? "?recursive=true" : "")));
}

// ---- uploads: one XHR per file (for upload progress), a few at a time ----

const queue = [];
let running = 0;
const PARALLEL = 2;

function enqueue(file, dir) {
  const li = document.createElement("li");
  const label = document.createElement("span");
  label.textContent = join(dir, file.relativeName || file.name);
  const bar = document.createElement("progress");
  bar.max = file.size || 1;
  bar.value = 0;
  const note = document.createElement("span");
  li.append(label, bar, note);
  $("uploads").appendChild(li);
  // Said before anything is sent: the quota cannot take it.
  const q = state.me && state.me.quota;
  if (q && q.bytes_limit && q.bytes_used + file.size > q.bytes_limit) {
    note.textContent = "Over your quota: " + human(file.size) + " needed, " +
      human(Math.max(0, q.bytes_limit - q.bytes_used)) + " free";
    note.className = "failed";
    return;
  }
  queue.push({ file, dir, bar, note });
  pump();
}

function pump() {
  while (running < PARALLEL && queue.length) {
    running++;
    send(queue.shift()).finally(() => {
      running--;
      pump();
      if (!running && !queue.length) { load(); refreshMe().catch(() => {}); }
    });
  }
}

async function ensureFolders(dir, rel) {
  // "a/b/c.txt" under dir: make a and a/b first (existing ones are fine).
  const parts = rel.split("/").slice(0, -1);
  let p = dir;
  for (const part of parts) {
    p = join(p, part);
    try { await api("POST", apiUrl("/api/mkdir", p)); } catch (e) { if (e.status !== 409) throw e; }
  }
  return p;
}

async function send(job) {
  const { file, bar, note } = job;
  let dir = job.dir;
  try {
    if (file.relativeName && file.relativeName.includes("/")) dir = await ensureFolders(dir, file.relativeName);
  } catch (e) {
    note.textContent = e.message;
    note.className = "failed";
    return;
  }
  const url = apiUrl("/api/file", join(dir, file.name)) + "?overwrite=" + (job.overwrite ? "true" : "false");
  await new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.setRequestHeader("X-CSRF-Token", state.csrf);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (ev) => { bar.value = ev.loaded; });
    xhr.addEventListener("load", () => {
      if (xhr.status === 201) {
        bar.value = bar.max;
        note.textContent = "done";
      } else if (xhr.status === 409 && !job.overwrite && confirm(file.name + " exists. Replace it?")) {
        job.overwrite = true;
        send(job).then(resolve);
        return;
      } else {
        let msg = xhr.statusText;
        try { msg = JSON.parse(xhr.responseText).error || msg; } catch (_) { /* not JSON */ }
        note.textContent = msg;
        note.className = "failed";
      }
      resolve();
    });
    xhr.addEventListener("error", () => { note.textContent = "connection lost"; note.className = "failed"; resolve(); });
    xhr.send(file);
  });
}

function uploadFiles(files) {
  for (const f of files) {
    if (f.webkitRelativePath) f.relativeName = f.webkitRelativePath;
    enqueue(f, state.path);
  }
}

// Dropped folders are walked with the entries API (files keep their
// relative path, folders are created on the way).
async function walkEntry(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    file.relativeName = prefix + file.name;
    out.push(file);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const child of batch) await walkEntry(child, prefix + entry.name + "/", out);
    }
  }
}

async function onDrop(ev) {
  ev.preventDefault();
  $("drop").classList.remove("dragging");
  const items = ev.dataTransfer.items;
  if (items && items.length && items[0].webkitGetAsEntry) {
    const files = [];
    const entries = Array.from(items).map((i) => i.webkitGetAsEntry()).filter((e) => e);
    for (const e of entries) await walkEntry(e, "", files);
    for (const f of files) enqueue(f, state.path);
  } else {
    uploadFiles(ev.dataTransfer.files);
  }
}

// ---- preview ----

const KINDS = {
  image: ["png", "jpg", "jpeg", "gif", "webp", "bmp", "ico"],
  video: ["mp4", "m4v", "webm", "ogv", "mov"],
  audio: ["mp3", "ogg", "oga", "wav", "flac", "m4a"],
  pdf: ["pdf"],
};

async function preview(path, name) {
  const ext = (name.split(".").pop() || "").toLowerCase();
  const url = apiUrl("/api/file", path);
  const body = $("preview-body");
  body.textContent = "";
  $("preview-name").textContent = name;
  $("preview-download").href = url + "?download=true";
  let el;
  if (KINDS.image.includes(ext)) { el = document.createElement("img"); el.src = url; el.alt = name; }
  else if (KINDS.video.includes(ext)) { el = document.createElement("video"); el.src = url; el.controls = true; }
  else if (KINDS.audio.includes(ext)) { el = document.createElement("audio"); el.src = url; el.controls = true; }
  else if (KINDS.pdf.includes(ext)) { el = document.createElement("iframe"); el.src = url; }
  else {
    // Text: the first 256 KiB, as text whatever it is.
    el = document.createElement("pre");
    try {
      const r = await api("GET", url, undefined, { Range: "bytes=0-262143" });
      el.textContent = await r.text();
    } catch (e) {
      el.textContent = e.status === 416 ? "(empty file)" : e.message;
    }
  }
  body.appendChild(el);
  $("preview").showModal();
}

function closePreview() {
  $("preview-body").textContent = "";
  $("preview").close();
}

// ---- shares ----

let sharePath = null;

async function listSharesOf(path) {
  const list = $("share-list");
  list.textContent = "";
  const all = (await (await api("GET", "/api/shares")).json()).shares;
  for (const s of all.filter((s) => s.path === path && s.mine)) {
    const li = document.createElement("li");
    li.textContent = s.grantee + " (" + (s.rw ? "read-write" : "read-only") + ") ";
    li.appendChild(button("Revoke", async () => {
      try { await api("POST", "/api/shares/revoke", { path, grantee: s.grantee }); } catch (e) { $("share-error").textContent = e.message; }
      listSharesOf(path);
    }));
    list.appendChild(li);
  }
}

function openShare(path) {
  sharePath = path;
  $("share-path").textContent = path;
  $("share-error").textContent = "";
  $("share-grantee").value = "";
  $("share-rw").checked = false;
  $("share-dialog").showModal();
  listSharesOf(path).catch((e) => { $("share-error").textContent = e.message; });
}

async function submitShare(ev) {
  ev.preventDefault();
  try {
    await api("POST", "/api/shares", { path: sharePath, grantee: $("share-grantee").value, rw: $("share-rw").checked });
    $("share-grantee").value = "";
    $("share-error").textContent = "";
    await listSharesOf(sharePath);
  } catch (e) {
    $("share-error").textContent = e.message;
  }
}

async function showShares() {
  state.view = "shares";
  $("files").hidden = true;
  $("shares-view").hidden = false;
  $("breadcrumbs").textContent = "Shares";
  const all = (await (await api("GET", "/api/shares")).json()).shares;
  const fill = (ul, rows, text) => {
    ul.textContent = "";
    for (const s of rows) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "#" + s.path;
      a.textContent = s.path;
      li.append(a, document.createTextNode(" " + text(s) + (s.rw ? " (read-write)" : " (read-only)")));
      ul.appendChild(li);
    }
  };
  fill($("shared-with-me"), all.filter((s) => !s.mine), (s) => "from " + s.owner);
  fill($("shared-by-me"), all.filter((s) => s.mine), (s) => "with " + s.grantee);
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("mkdir-button").addEventListener("click", makeFolder);
  $("home-button").addEventListener("click", () => { location.hash = "#" + state.me.home; });
  $("shared-button").addEventListener("click", () => { location.hash = "#shared"; });
  $("upload-input").addEventListener("change", (ev) => { uploadFiles(ev.target.files); ev.target.value = ""; });
  $("upload-folder").addEventListener("change", (ev) => { uploadFiles(ev.target.files); ev.target.value = ""; });
  $("preview-close").addEventListener("click", closePreview);
  $("share-form").addEventListener("submit", submitShare);
  $("share-cancel").addEventListener("click", () => $("share-dialog").close());
  document.querySelectorAll("th.sortable").forEach((th) => th.addEventListener("click", () => {
    const key = th.dataset.key;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
    render();
  }));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("dragging"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", onDrop);
  window.addEventListener("hashchange", () => { if (state.csrf) route(); });
  setUpSignUp();
  // Signed in already (a reload)? Else the form.
  start().catch(showSignIn);
});

// Sign-up and "forgot your password" on the sign-in page. The sign-up link
// shows only when the cluster's policy lets people sign up.
function setUpSignUp() {
  const post = async (url, body, out) => {
    try {
      const r = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
      const answer = await r.json().catch(() => ({}));
      $(out).textContent = r.ok ? answer.message : (answer.error || r.statusText);
    } catch (e) {
      $(out).textContent = e.message;
    }
  };
  fetch("/api/signup/policy").then((r) => r.json()).then((p) => {
    if (p.mode && p.mode !== "closed") $("show-signup").hidden = false;
  }).catch(() => { /* no sign-up */ });
  $("show-signup").addEventListener("click", (ev) => { ev.preventDefault(); $("signup-form").hidden = false; });
  $("show-forgot").addEventListener("click", (ev) => { ev.preventDefault(); $("forgot-form").hidden = false; });
  $("signup-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    post("/api/signup", {
      name: $("signup-name").value, email: $("signup-email").value, password: $("signup-password").value,
    }, "signup-message");
  });
  $("forgot-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    post("/api/reset/request", { email: $("forgot-email").value }, "forgot-message");
  });
}
