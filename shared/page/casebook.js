// What every case page shares (inlined into each page by shared.serving.page_html): calling the
// app's own API, reading its answers' fields (a missing field is an error on the page, never a
// blank), and the "Served model" panel from GET /version and GET /status.
"use strict";
const cb = (() => {
  // The app may sit under a route prefix (/cm/ in tests, / for `casebook serve`): every route is
  // relative to the page's own path.
  const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";

  async function api(route, body) {
    const opts = body === undefined ? {} : {
      method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body),
    };
    let res;
    try {
      res = await fetch(base + route, opts);
    } catch (e) {
      throw new Error(`${route}: the app did not answer (${e.message})`);
    }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const why = data && data.error ? data.error : res.statusText;
      throw new Error(`${route} answered ${res.status}: ${why}`);
    }
    if (data === null) throw new Error(`${route}: the answer is not JSON`);
    return data;
  }

  // A field of an answer, or an error naming it: the page reads the API's field names, so a
  // renamed field shows up on the page (and fails the browser tests) instead of a blank.
  function field(obj, name, where) {
    if (obj === null || typeof obj !== "object" || !(name in obj)) {
      throw new Error(`the answer${where ? " of " + where : ""} has no field "${name}"`);
    }
    return obj[name];
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function fmt(x, digits = 3) {
    if (x === null || x === undefined) return "n/a";
    if (typeof x !== "number") return String(x);
    if (!Number.isFinite(x)) return String(x);
    if (Number.isInteger(x)) return x.toLocaleString("en-US");
    return x.toFixed(digits);
  }

  function showError(box, err) {
    box.replaceChildren(el("div", {class: "cb-error", role: "alert"}, String(err && err.message || err)));
  }

  const KNOWN = new Set(["serving", "alias", "artifact_sha256", "golden", "last_error", "pid", "monitor"]);

  function monitorPart(mon) {
    if (!mon) return [el("p", {class: "muted"}, "no monitor on this app")];
    if (!mon.enabled) return [el("p", {class: "muted", id: "cb-monitor-off"}, `monitor off: ${mon.why || "n/a"}`)];
    const alarms = Object.entries(mon.alarms || {});
    const parts = [
      el("dl", {},
        el("dt", {}, "requests seen"), el("dd", {id: "cb-observed"}, fmt(mon.observed ?? 0)),
        el("dt", {}, "window"), el("dd", {}, `${fmt(mon.n ?? 0)} ${mon.ready ? "(checked)" : "(filling)"}`)),
      alarms.length
        ? el("ul", {id: "cb-alarms"}, alarms.map(([k, line]) => el("li", {class: "alarm"}, `${k}: ${line}`)))
        : el("p", {id: "cb-alarms", class: "muted"}, "no alarms"),
    ];
    const feats = Object.entries(mon.features || {});
    if (mon.scores && "psi" in mon.scores) feats.push(["score", mon.scores]);
    if (feats.length) {
      parts.push(el("table", {id: "cb-drift"},
        el("tr", {}, el("th", {}, "drift"), el("th", {class: "num"}, "PSI"), el("th", {class: "num"}, "KS")),
        feats.map(([name, f]) => el("tr", {}, el("td", {}, name),
          el("td", {class: "num"}, fmt(f.psi, 2)), el("td", {class: "num"}, fmt(f.ks, 2))))));
    } else {
      parts.push(el("p", {class: "muted"}, "drift figures after the window's first check"));
    }
    return parts;
  }

  // The "Served model" panel: /version (what serves) and /status (the live monitor, counters).
  async function refreshServed() {
    const box = document.getElementById("cb-served");
    if (!box) return;
    try {
      const [v, s] = await Promise.all([api("version"), api("status")]);
      const others = Object.entries(s).filter(([k, val]) => !KNOWN.has(k) && val !== null && typeof val !== "object");
      const parts = [
        el("h2", {}, "Served model"),
        el("dl", {},
          el("dt", {}, "version"), el("dd", {id: "cb-version"}, field(v, "serving", "/version")),
          el("dt", {}, "alias"), el("dd", {}, field(v, "alias", "/version")),
          el("dt", {}, "sha256"), el("dd", {class: "mono", title: v.artifact_sha256 || ""},
            String(field(v, "artifact_sha256", "/version") || "n/a").slice(0, 16)),
          el("dt", {}, "golden"), el("dd", {}, s.golden || "n/a"),
          el("dt", {}, "last reload"), el("dd", {}, s.last_error ? `refused: ${s.last_error}` : "ok"),
          el("dt", {}, "replica pid"), el("dd", {}, fmt(s.pid))),
        el("h2", {style: "margin-top:14px"}, "Live monitor"),
        ...monitorPart(s.monitor),
        others.length ? el("h2", {style: "margin-top:14px"}, "Counters") : null,
        others.length ? el("dl", {id: "cb-counters"}, others.map(([k, val]) => [el("dt", {}, k), el("dd", {}, fmt(val))])) : null,
      ];
      box.replaceChildren(...parts.filter((p) => p));
    } catch (e) {
      showError(box, e);
    }
  }

  // After a request: refresh the panel once things settle (not once per keystroke).
  let timer = null;
  function refreshSoon(ms = 400) {
    clearTimeout(timer);
    timer = setTimeout(refreshServed, ms);
  }

  return {base, api, field, el, fmt, showError, refreshServed, refreshSoon};
})();

document.addEventListener("DOMContentLoaded", () => {
  cb.refreshServed();
  setInterval(cb.refreshServed, 5000);
});
