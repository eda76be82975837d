// The store manager: profiles, apps and grants, shares with other people,
// devices and pairing, a data browser and sync status, over masqd's admin API (docs/APP-PROTOCOL.md).
// The admin secret arrives in the URL fragment (never sent to a server),
// is kept in sessionStorage for reloads, and is removed from the address bar.
// Everything an app claims about itself is shown with textContent only.

const $ = (id) => document.getElementById(id);
const secret = readSecret();
let ws = null;
let nextId = 1;
const pending = new Map();
let state = { active: null, profiles: [], apps: [], grants: [] };

function readSecret() {
  const match = /(?:^#|&)admin=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem("masq.admin", match[1]);
    history.replaceState(null, "", location.pathname);
    return match[1];
  }
  return sessionStorage.getItem("masq.admin");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function say(text, error = false) {
  const box = $("message");
  box.textContent = text;
  box.className = error ? "message error" : "message";
  box.hidden = !text;
}

function call(op, params = {}) {
  return new Promise((resolve, reject) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return reject(new Error("not connected to masqd"));
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ id, op, ...params }));
  });
}

async function act(op, params, done) {
  try {
    const result = await call(op, params);
    say("");
    if (done) await done(result);
    return result;
  } catch (e) {
    say(e.message, true);
    return null;
  }
}

function connect() {
  if (!secret) {
    say("Open the manager with the link masqd printed (it carries this run's admin secret).", true);
    return;
  }
  ws = new WebSocket(`ws://${location.host}/`);
  ws.onopen = async () => {
    try {
      await call("admin", { secret });
      $("connection").textContent = "connected";
      $("connection").className = "badge ok";
      await refresh();
    } catch (e) {
      say(`masqd refused the manager: ${e.message}`, true);
    }
  };
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.event) return onEvent(msg);
    const waiting = pending.get(msg.id);
    if (!waiting) return;
    pending.delete(msg.id);
    if (msg.ok) waiting.resolve(msg.result);
    else waiting.reject(new Error(`${msg.error.message} (${msg.error.code})`));
  };
  ws.onclose = () => {
    $("connection").textContent = "disconnected";
    $("connection").className = "badge bad";
    for (const w of pending.values()) w.reject(new Error("connection closed"));
    pending.clear();
    setTimeout(connect, 1500);
  };
}

function onEvent(msg) {
  switch (msg.event) {
    case "apps": refreshApps(); break;
    case "shares": refreshShares(); break;
    case "profile": refresh(); break;
    case "paired":
      say(`Paired with ${msg.name} — fingerprint ${msg.fingerprint}`);
      $("pairing").hidden = true;
      refreshDevices();
      refreshSync();
      break;
    case "pairing_failed": say(`Pairing failed: ${msg.message}`, true); break;
    default: break;
  }
}

async function refresh() {
  const status = await call("profiles.list");
  state.active = status.active;
  state.profiles = status.profiles;
  const select = $("profile-select");
  select.replaceChildren(...status.profiles.map((p) => el("option", { value: p.name, selected: p.active }, p.name)));
  const active = status.profiles.find((p) => p.active);
  $("profile-state").textContent = active.locked ? "locked" : active.protected ? "encrypted" : "not encrypted";
  $("profile-list").replaceChildren(...status.profiles.map((p) =>
    el("li", {}, `${p.name}${p.active ? " (active)" : ""} — ${p.locked ? "locked" : "open"}${p.protected ? ", encrypted" : ""}`)));
  $("lock-button").hidden = !active.protected || active.locked;
  $("locked-panel").hidden = !active.locked;
  $("panels").hidden = active.locked;
  if (active.locked) return;
  await Promise.all([refreshApps(), refreshShares(), refreshDevices(), refreshNamespaces(), refreshSync()]);
}

async function refreshApps() {
  const r = await call("apps.list").catch((e) => { say(e.message, true); return null; });
  if (!r) return;
  state.apps = r.apps;
  state.grants = r.grants;
  const icon = (app) => (app.icon && app.icon.startsWith("data:image/")
    ? el("img", { class: "icon", src: app.icon, alt: "" }) : el("span", { class: "icon" }));

  // One card per request: approving one gives a token to that connection only.
  const waiting = r.apps.flatMap((app) => (app.requests || []).map((q) => ({ app, q })));
  $("pending-section").hidden = waiting.length === 0;
  $("pending-list").replaceChildren(...waiting.map(({ app, q }) => el("li", { class: "card", "data-app": app.id, "data-request": q.request },
    icon(app),
    el("div", { class: "who" }, el("strong", {}, app.name), el("div", {}, app.description),
      el("div", { class: "origin" }, app.kind === "web" ? `web page from ${app.id.slice(4)}` : `program calling itself ${app.id.slice(7)} (a claim: any program can say so)`),
      app.state === "approved" ? el("div", { class: "hint" }, `another instance of an approved app (${app.instances} approved already)`) : "",
      app.requests.length > 1 ? el("div", { class: "warning" }, `${app.requests.length} connections ask as this app: approve only the one you just started`) : "",
      el("div", { class: "hint" }, `request ${q.request.slice(0, 8)}${q.remote ? ` from ${q.remote}` : ""}`)),
    el("button", { type: "button", "data-action": "approve", "data-app": app.id, "data-request": q.request,
      onclick: () => act("apps.approve", { app: app.id, request: q.request }, refreshApps) }, "Approve"),
    el("button", { type: "button", class: "danger", "data-action": "deny", "data-app": app.id, "data-request": q.request,
      onclick: () => act("apps.deny", { app: app.id, request: q.request }, refreshApps) }, "Deny"))));

  $("apps-table").tBodies[0].replaceChildren(...r.apps.map((app) => el("tr", { "data-app": app.id },
    el("td", {}, icon(app)),
    el("td", {}, el("strong", {}, app.name), el("div", { class: "hint" }, app.description)),
    el("td", { class: "origin" }, app.id),
    el("td", {}, app.state),
    el("td", {}, String(app.connections)),
    el("td", {}, app.state === "approved"
      ? el("button", { type: "button", class: "danger", "data-action": "revoke", "data-app": app.id, onclick: () => act("apps.revoke", { app: app.id }, refreshApps) }, "Revoke")
      : el("button", { type: "button", class: "secondary", "data-action": "remove", "data-app": app.id, onclick: () => act("apps.remove", { app: app.id }, refreshApps) }, "Forget")))));

  const approved = r.apps.filter((a) => a.state === "approved");
  const options = () => approved.map((a) => el("option", { value: a.id }, `${a.name} (${a.id})`));
  $("grant-app").replaceChildren(...options());
  $("grant-target").replaceChildren(...r.apps.map((a) => el("option", { value: a.id }, `${a.name} (${a.id})`)));
  $("grant-list").replaceChildren(...r.grants.map((g) => el("li", {},
    `${g.app} may ${g.access === "write" ? "read and write" : "read"} ${g.target}'s data `,
    el("button", { type: "button", class: "secondary", onclick: () => act("apps.ungrant", { app: g.app, target: g.target }, refreshApps) }, "Remove"))));
}

// Share requests (one card each: approving one answers that app's connection
// only) and the shares of this profile, with the fingerprint to compare.
async function refreshShares() {
  const r = await call("shares.list").catch(() => null);
  if (!r) return;
  const host = (url) => { try { return new URL(url).host; } catch (_) { return url; } };
  $("share-requests-section").hidden = r.requests.length === 0;
  $("share-requests").replaceChildren(...r.requests.map((q) => el("li", { class: "card", "data-request": q.request, "data-kind": q.kind },
    el("div", { class: "who" },
      q.kind === "create"
        ? el("strong", {}, `${q.app_name} asks to share its data with ${q.nickname}`)
        : el("strong", {}, `${q.app_name} asks to take in what ${q.nickname} shares`),
      q.kind === "create"
        ? el("div", {}, `${q.nickname} ${q.access === "read-only" ? "may read it, not change it" : "may read and change it"}; you get a link to send them.`)
        : el("div", {}, `Through ${q.services.map(host).join(", ")}. Their data comes into this profile; your changes go back to them unless they share it read-only.`),
      el("div", { class: "origin" }, q.app),
      el("div", { class: "hint" }, `request ${q.request.slice(0, 8)}${q.remote ? ` from ${q.remote}` : ""}`)),
    el("button", { type: "button", "data-action": "approve-share", "data-request": q.request,
      onclick: () => act("shares.approve", { request: q.request }, refreshShares) }, "Approve"),
    el("button", { type: "button", class: "danger", "data-action": "deny-share", "data-request": q.request,
      onclick: () => act("shares.deny", { request: q.request }, refreshShares) }, "Deny"))));

  $("shares-empty").hidden = r.shares.length > 0;
  const states = { offered: "link sent, not accepted yet", claimed: "waiting for the owner", active: "active",
    intercepted: "someone else used the link first" };
  $("shares-table").tBodies[0].replaceChildren(...r.shares.map((s) => el("tr", { "data-share": s.id },
    el("td", {}, el("strong", {}, s.nickname || "(no name)")),
    el("td", {}, s.app_name || s.app || "—"),
    el("td", { class: "origin" }, s.namespace || "(not yet)"),
    el("td", {}, `${s.role === "owner" ? "shared by you" : "shared with you"}, ${s.access}`),
    el("td", {}, states[s.status] || s.status, ...s.warnings.map((w) => el("div", { class: "warning" }, w))),
    el("td", { class: "fingerprint" }, s.fingerprint ? `${s.fingerprint} ${s.fingerprint_emoji}` : "—"),
    el("td", {}, el("button", { type: "button", class: "danger", "data-action": "unshare", "data-share": s.id,
      onclick: () => act("shares.remove", { share: s.id }, refreshShares) }, "End")))));
}

async function refreshDevices() {
  const r = await call("devices.list").catch(() => null);
  if (!r) return;
  $("this-device").textContent = `This device: ${r.this.name} — fingerprint ${r.this.fingerprint} ${r.this.emoji}`;
  $("device-list").replaceChildren(...r.paired.map((d) => el("li", {},
    `${d.name} (${d.device_id}) — ${d.fingerprint} ${d.emoji} `,
    el("button", { type: "button", class: "danger", onclick: () => act("devices.remove", { device: d.device_id }, refreshDevices) }, "Remove"))));
}

async function refreshNamespaces() {
  const r = await call("data.namespaces").catch(() => null);
  if (!r) return;
  const select = $("data-ns");
  const current = select.value;
  select.replaceChildren(...r.namespaces.map((ns) => el("option", { value: ns, selected: ns === current }, ns)));
  await refreshData();
}

async function refreshData() {
  const ns = $("data-ns").value;
  const body = $("data-table").tBodies[0];
  if (!ns) return body.replaceChildren();
  const r = await call("data.list", { ns, limit: 200 }).catch(() => null);
  if (!r) return;
  body.replaceChildren(...r.entries.map((e) => el("tr", {},
    el("td", { class: "value" }, e.key ?? `(base64) ${e.key_b64}`),
    el("td", { class: "value" }, e.value ?? `(base64) ${e.value_b64}`))));
  if (r.more) body.append(el("tr", {}, el("td", { colSpan: 2, class: "hint" }, "… more entries")));
}

async function refreshSync() {
  const r = await call("sync.status").catch(() => null);
  if (!r) return;
  if (!r.running) {
    $("sync-status").textContent = r.relay ? `Not syncing (relay ${r.relay}).` : "Not syncing: pair a device through a relay first.";
    return;
  }
  const devices = r.devices.map((d) => `${d.name}: ${d.present ? "online" : "away"}, ${d.they_lack} change(s) to send`).join("; ");
  $("sync-status").textContent = `${r.connected ? "Connected to the relay" : "Relay unreachable"}. ${devices || "No paired devices."}`;
}

// ---- forms ------------------------------------------------------------------

$("profile-select").onchange = (e) => act("profiles.switch", { profile: e.target.value }, refresh);
$("data-ns").onchange = refreshData;
$("unlock-form").onsubmit = (e) => {
  e.preventDefault();
  act("profiles.unlock", { profile: state.active, passphrase: $("unlock-passphrase").value }, () => { $("unlock-passphrase").value = ""; return refresh(); });
};
$("lock-button").onclick = () => act("profiles.lock", { profile: state.active }, refresh);
$("create-profile-form").onsubmit = (e) => {
  e.preventDefault();
  const passphrase = $("new-profile-passphrase").value;
  act("profiles.create", { profile: $("new-profile-name").value, ...(passphrase ? { passphrase } : {}) }, () => {
    $("new-profile-name").value = "";
    $("new-profile-passphrase").value = "";
    return refresh();
  });
};
$("grant-form").onsubmit = (e) => {
  e.preventDefault();
  act("apps.grant", { app: $("grant-app").value, target: $("grant-target").value, access: $("grant-access").value }, refreshApps);
};
$("pair-form").onsubmit = (e) => {
  e.preventDefault();
  const relay = $("pair-relay").value;
  say("Waiting for the other device…");
  act("devices.pair", relay ? { relay } : {}, (r) => {
    if (!r.link) return refreshDevices();   // joined at once
    $("pair-link").textContent = r.link;
    $("pair-qr").src = `data:image/svg+xml;base64,${btoa(r.qr_svg)}`;
    $("pairing").hidden = false;
    say("Pairing link ready: it works once, for 10 minutes.");
  });
};
$("join-form").onsubmit = (e) => {
  e.preventDefault();
  say("Joining…");
  act("devices.join", { link: $("join-link").value }, (r) => { say(`Paired with ${r.name}`); return refreshDevices(); });
};

// Backups (BackupOperations.swift): masqd writes the file, the page fetches
// it in pieces and saves it; a restore uploads a file in pieces, then masqd
// restores it as a new profile.
const toBase64 = (bytes) => {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
};
$("backup-form").onsubmit = async (e) => {
  e.preventDefault();
  const recovery = $("backup-recovery").checked;
  say("Writing the backup…");
  const r = await act("backup.create", recovery ? { recovery: true } : { passphrase: $("backup-passphrase").value });
  if (!r) return;
  $("backup-passphrase").value = "";
  const parts = [];
  for (let offset = 0; offset < r.size;) {
    const piece = await act("backup.read", { file: r.file, offset });
    if (!piece) return;
    const bytes = Uint8Array.from(atob(piece.data), (c) => c.charCodeAt(0));
    parts.push(bytes);
    offset += bytes.length;
    say(`Downloading the backup… ${Math.round((100 * offset) / r.size)}%`);
  }
  const link = el("a", { href: URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" })), download: r.file });
  document.body.append(link);
  link.click();
  link.remove();
  say(`Backup saved: ${r.file} (${r.entries} entries, ${r.size} bytes)`);
  $("backup-key").hidden = !r.recovery_key;
  $("backup-key-text").textContent = r.recovery_key || "";
};
$("restore-form").onsubmit = async (e) => {
  e.preventDefault();
  const file = $("restore-file").files[0];
  const limits = await act("backup.list", {});
  if (!file || !limits) return;
  let name = null;
  for (let offset = 0; offset < file.size; offset += limits.piece) {
    const bytes = new Uint8Array(await file.slice(offset, offset + limits.piece).arrayBuffer());
    const r = await act("backup.upload", { file: name, offset, data: toBase64(bytes) });
    if (!r) return;
    name = r.file;
    say(`Uploading the backup… ${Math.round((100 * r.size) / file.size)}%`);
  }
  say("Restoring…");
  const r = await act("backup.restore", { file: name, profile: $("restore-profile").value, passphrase: $("restore-secret").value });
  $("restore-secret").value = "";
  if (!r) return;
  say(`Restored as profile ${r.profile} (${r.entries} entries)${r.locked ? ": unlock it with the passphrase it had" : ""}`);
  await refresh();
};

setInterval(() => { if (ws && ws.readyState === WebSocket.OPEN && state.active) { refreshSync(); refreshApps(); refreshShares(); } }, 5000);
connect();
