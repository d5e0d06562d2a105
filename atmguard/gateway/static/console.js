// Dispatcher console: live case list over SSE, case detail, actions. No framework, no build step.
"use strict";
(function () {
  const cfg = window.ATMGUARD;
  const tbody = document.querySelector("#cases tbody");
  const fDistrict = document.getElementById("f-district");
  const fState = document.getElementById("f-state");
  const live = document.getElementById("live");
  const alertBox = document.getElementById("alert");
  let cases = new Map();
  let selected = null;
  let soundOn = false;
  let audio = null;

  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const when = (iso) => iso ? new Date(iso).toLocaleString() : "";

  function matches(c) {
    const st = fState.value, d = fDistrict.value;
    if (d && c.district !== d) return false;
    if (st === "active") return c.state !== "closed";
    return !st || c.state === st;
  }

  function render() {
    const rows = [...cases.values()].filter(matches);
    const order = {critical: 3, high: 2, medium: 1, low: 0};
    rows.sort((a, b) => (a.state === "closed") - (b.state === "closed") || order[b.severity] - order[a.severity] || (b.opened_at || "").localeCompare(a.opened_at || ""));
    tbody.innerHTML = rows.map((c) => `<tr data-id="${esc(c.id)}" class="sev-${esc(c.severity)} state-${esc(c.state)}${c._new ? " new" : ""}${c.id === selected ? " sel" : ""}">
      <td>${esc(c.severity)}</td><td>${esc(c.address || c.atm_id)}<br><small>${esc(c.district || "")} ${esc(c.atm_id)}</small></td>
      <td>${esc(c.rule)} v${esc(c.rule_version)}</td><td>${esc(when(c.opened_at))}</td><td class="state">${esc(c.state)}</td><td>${esc(c.assigned_to || "")}</td></tr>`).join("");
  }

  async function load() {
    const r = await fetch("/console/api/cases?state=&district=", {credentials: "same-origin"});
    if (r.status === 401) { location.href = "/console/login"; return; }
    cases = new Map((await r.json()).map((c) => [c.id, c]));
    render();
  }

  function beep() {
    if (!soundOn) return;
    try {
      audio = audio || new AudioContext();
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = 880; o.connect(g); g.connect(audio.destination);
      g.gain.setValueAtTime(0.3, audio.currentTime); o.start(); o.stop(audio.currentTime + 0.6);
    } catch (e) { /* no audio device */ }
  }

  function alertCritical(c) {
    alertBox.hidden = false;
    alertBox.textContent = `CRITICAL: ${c.address || c.atm_id} — ${c.message}`;
    document.title = "(!) atmguard console";
    beep();
    setTimeout(() => { alertBox.hidden = true; document.title = "atmguard console"; }, 15000);
  }

  function connect() {
    const es = new EventSource("/console/events");
    let opened = false;
    es.onopen = () => {
      live.textContent = "live"; live.classList.add("on");
      if (opened) load();  // a reconnect: catch up on what happened meanwhile
      opened = true;
    };
    es.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
    es.addEventListener("case", (ev) => {
      const c = JSON.parse(ev.data);
      const isNew = !cases.has(c.id);
      c._new = isNew;
      cases.set(c.id, c);
      render();
      if (isNew && c.severity === "critical" && c.state === "open") alertCritical(c);
      if (c.id === selected) show(c.id);
    });
  }

  async function show(id) {
    selected = id;
    const r = await fetch(`/console/api/cases/${encodeURIComponent(id)}`, {credentials: "same-origin"});
    if (!r.ok) return;
    const c = await r.json();
    document.getElementById("detail").hidden = false;
    document.getElementById("d-title").textContent = `${c.severity.toUpperCase()} — ${c.rule} v${c.rule_version} — ${c.state}`;
    document.getElementById("d-address").textContent = `${c.address || "unknown address"}${c.place ? " (" + c.place + ")" : ""} · ${c.district || ""} · ${c.atm_id}`;
    document.getElementById("d-message").textContent = c.message;
    document.getElementById("d-meta").textContent = `opened ${when(c.opened_at)}` + (c.acknowledged_by ? ` · acknowledged by ${c.acknowledged_by}` : "") + (c.assigned_to ? ` · assigned to ${c.assigned_to}` : "") + (c.outcome ? ` · outcome ${c.outcome}` : "") + (c.hold ? " · bank advised to HOLD" : "");
    document.getElementById("d-snapshots").innerHTML = (c.snapshots || []).map((s) => {
      const src = /^https?:\/\//.test(s) ? s : "/console/snapshot?ref=" + encodeURIComponent(s);
      return `<img alt="snapshot" src="${esc(src)}">`;
    }).join("");
    document.getElementById("d-timeline").innerHTML = c.timeline.map((t) => `<li class="${t.matched ? "matched" : ""}"><span class="k">${esc(t.kind)}</span> <time>${esc(when(t.ts))}</time> ${esc(t.text)}</li>`).join("");
    const acts = document.getElementById("d-actions");
    if (acts) acts.hidden = c.state === "closed";
    render();
  }

  async function act(action, body) {
    const err = document.getElementById("a-error");
    const r = await fetch(`/console/api/cases/${encodeURIComponent(selected)}/${action}`, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": cfg.csrf}, body: JSON.stringify(body || {})});
    const data = await r.json();
    if (!r.ok) { err.hidden = false; err.textContent = data.error; return; }
    err.hidden = true;
    cases.set(data.id, data);
    show(data.id);
  }

  tbody.addEventListener("click", (ev) => { const tr = ev.target.closest("tr"); if (tr) show(tr.dataset.id); });
  fDistrict.addEventListener("change", render);
  fState.addEventListener("change", render);
  document.getElementById("sound").addEventListener("click", (ev) => { soundOn = true; audio = audio || new AudioContext(); ev.target.textContent = "Sound on"; });
  if (cfg.canAct) {
    document.getElementById("a-ack").addEventListener("click", () => act("ack"));
    document.getElementById("a-assign").addEventListener("click", () => act("assign", {assignee: document.getElementById("a-assignee").value}));
    document.getElementById("a-note-btn").addEventListener("click", () => act("note", {text: document.getElementById("a-note").value}));
    document.getElementById("a-close").addEventListener("click", () => act("close", {outcome: document.getElementById("a-outcome").value, note: document.getElementById("a-close-note").value}));
  }
  load().then(connect);
})();
