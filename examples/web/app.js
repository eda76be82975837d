// A small local-first app on masq.js: masqd when it runs here, otherwise the
// page is a Masq device of its own (peer mode: IndexedDB + WebCrypto), and
// pairs with a computer by scanning the QR code of `masq pair --web <this page>`.
// Serve bindings/js/ beside it (no build step, nothing fetched from elsewhere).
import { connect } from "../../bindings/js/masq.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
window.events = [];
window.masqReady = false;

function showError(e) {
  const box = $("error");
  box.style.display = "block";
  box.textContent = `${e.code ? e.code + ": " : ""}${e.message || e}`;
  window.lastError = { code: e.code || "error", message: String(e.message || e) };
}

function text(s) {
  return document.createTextNode(s);
}

async function render(app) {
  $("likes").textContent = String(await app.counter("likes"));
  const notes = await app.list("note/");
  $("notes").replaceChildren(...notes.entries.map((e) => {
    const li = document.createElement("li");
    li.append(text(String(e.value)));
    return li;
  }));
  if (app.mode === "peer") {
    const s = await app.status();
    $("devices").replaceChildren(...s.devices.map((d) => {
      const li = document.createElement("li");
      li.append(text(`${d.name} ${d.present ? "(here)" : "(away)"} `));
      return li;
    }));
    $("sync").textContent = s.connected ? `relay connected; ${s.pending} change(s) not yet on the other devices` : "not connected to a relay";
  }
}

let app;
try {
  app = await connect({
    name: "Masq notes",
    mode: params.get("mode") || "auto",
    timeout: 800,
    database: params.get("db") || "masq",
    onStateChange: (s) => { $("state").textContent = s; $("state").className = s; window.events.push({ type: "state", s }); },
    onEvent: (e) => { window.events.push(e); if (e.type === "progress" || e.type === "state") render(app).catch(() => {}); },
  });
} catch (e) {
  showError(e);
  throw e;
}
window.app = app;
$("mode").textContent = ` · ${app.mode} mode`;
$("state").textContent = app.state;
if (app.mode === "peer") {
  const me = await app.device();
  $("me-name").textContent = me.name;
  $("me-fp").textContent = me.fingerprint;
  $("me-emoji").textContent = me.fingerprintEmoji;
  window.me = me;
} else {
  $("pairing").style.display = "none";
}

async function pair(link) {
  $("pair-result").textContent = "pairing…";
  try {
    const { device } = await app.pair(link);
    $("pair-result").replaceChildren(text(`Paired with ${device.name}. Its fingerprint — compare it with the other screen:`),
      document.createElement("br"), Object.assign(document.createElement("span"), { className: "fp", textContent: device.fingerprint }),
      document.createElement("br"), Object.assign(document.createElement("span"), { className: "emoji", textContent: device.fingerprintEmoji }));
    window.paired = device;
  } catch (e) {
    $("pair-result").textContent = "";
    showError(e);
  }
  await render(app);
}

$("pair").onclick = () => pair($("link").value);
$("like").onclick = async () => { try { await app.counterAdd("likes", 1); } catch (e) { showError(e); } };
$("add").onclick = async () => {
  const v = $("note").value.trim();
  if (!v) return;
  try {
    await app.put(`note/${Date.now().toString(36)}`, v);
    $("note").value = "";
  } catch (e) { showError(e); }
};
await app.watch(() => render(app).catch(() => {}));
await render(app);
window.masqReady = true;

// Opened from a pairing QR code: join, then drop the secret from the address bar.
if (location.hash.startsWith("#masq-pair=") && app.mode === "peer") {
  const link = location.href;
  history.replaceState(null, "", location.pathname + location.search);
  await pair(link);
}
