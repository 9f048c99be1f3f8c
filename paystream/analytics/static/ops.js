// The ops page: sign in (OIDC authorization code + PKCE S256), then ask /v1/analytics/* every
// few seconds and draw it. Tokens live in this page's memory only; the PKCE verifier and the
// state wait in sessionStorage while the browser is at the login. No framework, no build.
"use strict";

(() => {
  const LOGIN_KEY = "paystream.ops.login";
  const RENEW_AT_FRACTION = 0.75; // renew the access token at 3/4 of its life
  const RENEW_BEFORE_MIN_S = 5;
  const ERROR_TEXT_MAX = 300;
  const DEFAULT_SPAN_S = 3600;
  const SERIES_POINTS_MAX = 500; // as the server's queries.SERIES_POINTS_MAX
  const page = {
    config: null,
    auth: { access: null, refresh: null, idToken: null, renewAt: 0, expiresAt: 0, renewing: null },
    range: { spanS: DEFAULT_SPAN_S }, // or { since: Date, until: Date }
    timer: null,
    running: false,
    again: false,
    renders: 0,
  };
  const $ = (id) => document.getElementById(id);

  // --- small pure helpers -------------------------------------------------------------------

  function base64url(bytes) {
    let text = "";
    for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomText(bytes) {
    return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
  }

  async function s256(text) {
    return base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  }

  function claims(jwt) {
    try {
      const part = atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"));
      return JSON.parse(new TextDecoder().decode(Uint8Array.from(part, (c) => c.charCodeAt(0))));
    } catch (_) {
      return {};
    }
  }

  // An integer's decimal string in minor units -> major units, exactly (never a float).
  function formatMinor(text, exponent) {
    if (!/^-?[0-9]+$/.test(text)) return text;
    const negative = text.startsWith("-");
    let digits = (negative ? text.slice(1) : text).replace(/^0+(?=[0-9])/, "");
    if (exponent > 0) digits = digits.padStart(exponent + 1, "0");
    const whole = exponent > 0 ? digits.slice(0, -exponent) : digits;
    const fraction = exponent > 0 ? "." + digits.slice(-exponent) : "";
    const sign = negative && /[1-9]/.test(digits) ? "-" : "";
    return sign + whole.replace(/\B(?=([0-9]{3})+(?![0-9]))/g, ",") + fraction;
  }

  function approxMajor(text, exponent) {
    return Number(text) / 10 ** exponent; // bar heights only; every number shown is exact
  }

  function exponentOf(currency) {
    const found = page.config.currency_exponents[currency];
    return found === undefined ? 0 : found;
  }

  const integer = (value) => (value === null || value === undefined ? "–" : value.toLocaleString("en-US"));
  const percent = (rate) => (rate === null || rate === undefined ? "–" : (100 * rate).toFixed(2) + " %");
  const utc = (ms) => new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "");
  const clock = (ms) => new Date(ms).toISOString().slice(11, 19);

  function seconds(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms < 10000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms / 1000).toLocaleString("en-US") + " s";
  }

  function parseMoment(text) {
    const trimmed = text.trim();
    if (!/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?/.test(trimmed)) return null;
    const zoned = /([zZ]|[+-]\d{2}:?\d{2})$/.test(trimmed) || trimmed.length <= 10 ? trimmed : trimmed + "Z";
    const moment = new Date(zoned.replace(" ", "T"));
    return Number.isNaN(moment.getTime()) ? null : moment;
  }

  // --- sign-in ------------------------------------------------------------------------------

  function redirectUri() {
    return location.origin + location.pathname;
  }

  async function goToLogin() {
    const verifier = randomText(48);
    const state = randomText(16);
    sessionStorage.setItem(LOGIN_KEY, JSON.stringify({ verifier, state, range: savedRange() }));
    const query = new URLSearchParams({
      client_id: page.config.client_id,
      response_type: "code",
      response_mode: "fragment",
      redirect_uri: redirectUri(),
      scope: page.config.scope,
      state,
      code_challenge: await s256(verifier),
      code_challenge_method: "S256",
    });
    location.assign(page.config.authorization_endpoint + "?" + query.toString());
    return new Promise(() => {}); // the page is leaving
  }

  function savedRange() {
    const r = page.range;
    return r.spanS ? { spanS: r.spanS } : { since: r.since.getTime(), until: r.until.getTime() };
  }

  function restoreRange(saved) {
    if (!saved) return;
    page.range = saved.spanS ? { spanS: saved.spanS } : { since: new Date(saved.since), until: new Date(saved.until) };
  }

  async function redeem(answer) {
    const pending = JSON.parse(sessionStorage.getItem(LOGIN_KEY) || "null");
    sessionStorage.removeItem(LOGIN_KEY);
    if (!pending || answer.get("state") !== pending.state) throw new SignInError("the sign-in answer does not match this page's request");
    if (answer.has("error")) throw new SignInError(`${answer.get("error")}: ${answer.get("error_description") || ""}`);
    if (answer.has("iss") && answer.get("iss") !== page.config.issuer) throw new SignInError("the sign-in answer comes from another issuer");
    restoreRange(pending.range);
    const response = await tokenRequest({
      grant_type: "authorization_code",
      code: answer.get("code"),
      code_verifier: pending.verifier,
      redirect_uri: redirectUri(),
    });
    if (!response.ok) throw new SignInError(`the code was refused: ${await describe(response)}`);
    keep(await response.json());
  }

  class SignInError extends Error {}

  function tokenRequest(body) {
    return fetch("/ops/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
    });
  }

  function keep(tokens) {
    const now = Date.now();
    const lifeS = Number(tokens.expires_in) || 60;
    const a = page.auth;
    a.access = tokens.access_token;
    a.refresh = tokens.refresh_token || a.refresh;
    a.idToken = tokens.id_token || a.idToken;
    a.expiresAt = now + lifeS * 1000;
    a.renewAt = now + Math.min(lifeS * RENEW_AT_FRACTION, Math.max(lifeS - RENEW_BEFORE_MIN_S, 1)) * 1000;
    showSession();
  }

  // One renewal at a time; a refused refresh token sends the person to the login.
  function renew() {
    const a = page.auth;
    if (!a.renewing) {
      a.renewing = (async () => {
        try {
          if (!a.refresh) return goToLogin();
          const response = await tokenRequest({ grant_type: "refresh_token", refresh_token: a.refresh });
          if (response.status === 400 || response.status === 401) return goToLogin();
          if (!response.ok) throw new Error(`renewing the token: ${await describe(response)}`);
          keep(await response.json());
        } finally {
          a.renewing = null;
        }
      })();
    }
    return a.renewing;
  }

  async function accessToken() {
    if (Date.now() >= page.auth.renewAt) await renew();
    return page.auth.access;
  }

  function signOut() {
    const query = new URLSearchParams({ client_id: page.config.client_id, post_logout_redirect_uri: redirectUri() });
    if (page.auth.idToken) query.set("id_token_hint", page.auth.idToken);
    page.auth.access = page.auth.refresh = null;
    if (page.config.end_session_endpoint) location.assign(page.config.end_session_endpoint + "?" + query.toString());
    else location.reload();
  }

  function showSession() {
    const who = claims(page.auth.idToken || "").preferred_username || claims(page.auth.access).sub || "";
    $("who").textContent = who ? `signed in as ${who}` : "signed in";
    $("token-until").textContent = `token until ${clock(page.auth.expiresAt)} UTC`;
    $("token-until").dataset.expiresAt = String(page.auth.expiresAt);
    $("session").hidden = false;
  }

  // --- the data -----------------------------------------------------------------------------

  async function describe(response) {
    try {
      const body = await response.json();
      return `${response.status} ${body.detail || body.error_description || body.error || body.title || ""}`.slice(0, ERROR_TEXT_MAX);
    } catch (_) {
      return String(response.status);
    }
  }

  async function api(path, params) {
    const url = path + (params ? "?" + new URLSearchParams(params).toString() : "");
    let response = await fetch(url, { headers: { Authorization: "Bearer " + (await accessToken()) }, cache: "no-store" });
    if (response.status === 401) {
      await renew();
      response = await fetch(url, { headers: { Authorization: "Bearer " + page.auth.access }, cache: "no-store" });
      if (response.status === 401) return goToLogin();
    }
    if (!response.ok) throw new Error(`${path}: ${await describe(response)}`);
    return response.json();
  }

  function currentWindow() {
    const r = page.range;
    if (r.spanS) {
      const until = new Date();
      return { since: new Date(until.getTime() - r.spanS * 1000), until };
    }
    return { since: r.since, until: r.until };
  }

  async function fetchAll() {
    const w = currentWindow();
    const span = { since: w.since.toISOString(), until: w.until.toISOString() };
    const [funnel, latency, dead, consistency, lag] = await Promise.all([
      api("/v1/analytics/funnel", span),
      api("/v1/analytics/latency", span),
      api("/v1/analytics/dead-letters", span),
      api("/v1/analytics/consistency"),
      api("/v1/analytics/lag"),
    ]);
    return { window: w, funnel, latency, dead, consistency, lag };
  }

  // Ask, draw, and come back in refresh_s; never two cycles at once (an Apply during a
  // cycle asks again right after it).
  async function cycle() {
    if (page.running) {
      page.again = true;
      return;
    }
    clearTimeout(page.timer);
    page.running = true;
    try {
      const data = await fetchAll();
      draw(data);
      $("banner-error").hidden = true;
    } catch (error) {
      showError(error instanceof TypeError ? "the analytics process does not answer; retrying" : error.message);
    } finally {
      page.running = false;
      const soon = page.again;
      page.again = false;
      page.timer = setTimeout(cycle, soon ? 0 : page.config.refresh_s * 1000);
    }
  }

  function showError(text) {
    $("banner-error").textContent = text;
    $("banner-error").hidden = false;
  }

  // --- drawing ------------------------------------------------------------------------------

  // No mode bar: plotly.js 4 shows it over the data at all times; drag zooms, a double
  // click zooms back out.
  const PLOT_CONFIG = { displaylogo: false, displayModeBar: false, responsive: true };
  const COLORS = {
    requested: "#2458b3", debited: "#7a8ca6", completed: "#2a9d5b", reversed: "#d9822b",
    rejected: "#c0392b", duplicates: "#8e5bb5", p50: "#2a9d5b", p95: "#d9822b", p99: "#c0392b",
  };

  function layout(extra) {
    return Object.assign({
      margin: { l: 56, r: 16, t: 8, b: 36 },
      font: { family: "DejaVu Sans, Arial, sans-serif", size: 11, color: "#1d2430" },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      legend: { orientation: "h", y: -0.2 },
      hovermode: "x unified",
    }, extra);
  }

  function timeAxis(w) {
    return { type: "date", range: [w.since.getTime(), w.until.getTime()], gridcolor: "#eef1f4" };
  }

  // An empty chart still draws its axes, and says why it is empty.
  function plot(id, traces, extra) {
    const points = traces.points ?? traces.reduce((n, t) => n + (t.x || []).length, 0);
    const note = points ? [] : [{
      text: "no data in this range", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
      font: { color: "#5f6b7a", size: 12 },
    }];
    Plotly.react($(id), traces, layout(Object.assign({ annotations: note }, extra)), PLOT_CONFIG);
    $(id).dataset.points = String(points);
  }

  function draw(data) {
    drawFunnel(data.funnel, data.window);
    drawLatency(data.latency, data.window);
    drawConsistency(data.consistency);
    drawDeadLetters(data.dead, data.window);
    drawLag(data.lag);
    page.renders += 1;
    const w = data.window;
    const main = $("dashboard");
    main.dataset.since = w.since.toISOString();
    main.dataset.until = w.until.toISOString();
    document.body.dataset.renders = String(page.renders);
    $("status").textContent = `${utc(w.since.getTime())} → ${utc(w.until.getTime())} UTC · intervals of `
      + `${data.funnel.step_s} s · updated ${clock(Date.now())} UTC · every ${page.config.refresh_s} s`;
    showRangeInputs(w);
  }

  function drawFunnel(funnel, w) {
    const total = funnel.total;
    for (const name of ["requested", "debited", "completed", "reversed", "rejected", "duplicates"]) {
      $("kpi-" + name).textContent = integer(total[name]);
    }
    $("kpi-success-rate").textContent = percent(total.success_rate);
    $("kpi-compensation-rate").textContent = percent(total.compensation_rate);
    $("kpi-dedupe-rate").textContent = percent(total.dedupe_rate);
    const series = everyInterval(funnel.series, w, funnel.step_s, (start_ms) => ({ start_ms }));
    const x = series.map((p) => p.start_ms);
    const lines = ["requested", "completed", "reversed", "rejected", "duplicates"].map((name) => ({
      type: "scatter", mode: x.length > 40 ? "lines" : "lines+markers", name, x,
      y: series.map((p) => p[name] || 0), line: { color: COLORS[name], width: 1.5 },
    }));
    lines.points = funnel.series.length;
    plot("chart-funnel-series", lines, { xaxis: timeAxis(w), yaxis: { title: { text: "payments" }, rangemode: "tozero" } });
    // Not a strict funnel: deposits and withdrawals complete without a debit step.
    const stages = ["requested", "debited", "completed", "reversed", "rejected", "duplicates"];
    const most = Math.max(1, ...stages.map((s) => total[s]));
    plot("chart-funnel-totals", [{
      type: "bar", orientation: "h", y: stages, x: stages.map((s) => total[s]),
      text: stages.map((s) => integer(total[s])), textposition: "outside", cliponaxis: false,
      marker: { color: stages.map((s) => COLORS[s]) }, hovertemplate: "%{y}: %{text}<extra></extra>",
    }], { margin: { l: 80, r: 40, t: 8, b: 28 }, hovermode: "closest", showlegend: false,
          yaxis: { autorange: "reversed" }, xaxis: { range: [0, most * 1.15] } });
  }

  // Every interval of the range, in order: the server sends only those with data. Counts
  // are 0 in the others; a percentile is null there (the line breaks, nothing is invented).
  function everyInterval(points, w, stepS, empty) {
    const stepMs = stepS * 1000;
    const first = Math.floor(w.since.getTime() / stepMs) * stepMs;
    const found = new Map(points.map((p) => [p.start_ms, p]));
    const all = [];
    const most = SERIES_POINTS_MAX + 1; // the range's first interval may start before it
    for (let at = first; at < w.until.getTime() && all.length <= most; at += stepMs) {
      all.push(found.get(at) || empty(at));
    }
    return all.length > most ? points : all;
  }

  function percentileTraces(points, w, stepS) {
    const all = everyInterval(points, w, stepS, (start_ms) => ({ start_ms, p50_ms: null, p95_ms: null, p99_ms: null }));
    const x = all.map((p) => p.start_ms);
    const traces = ["p50", "p95", "p99"].map((q) => ({
      type: "scatter", mode: points.length > 40 ? "lines" : "lines+markers", name: q.toUpperCase(), x,
      y: all.map((p) => p[q + "_ms"]), line: { color: COLORS[q], width: 1.5 },
    }));
    traces.points = points.length;
    return traces;
  }

  function drawLatency(latency, w) {
    const yaxis = { title: { text: "ms" }, rangemode: "tozero" };
    const endToEnd = percentileTraces(latency.end_to_end, w, latency.step_s);
    plot("chart-latency", endToEnd, { xaxis: timeAxis(w), yaxis });
    const settled = percentileTraces(latency.time_to_consistency, w, latency.step_s);
    plot("chart-consistency-time", settled, { xaxis: timeAxis(w), yaxis });
  }

  function drawConsistency(consistency) {
    const rows = consistency.currencies;
    const currencies = rows.map((c) => c.currency);
    const exact = (c, field) => `${formatMinor(c[field], exponentOf(c.currency))} ${c.currency}`;
    const bar = (field, name, color) => ({
      type: "bar", name, x: currencies, marker: { color },
      y: rows.map((c) => approxMajor(c[field], exponentOf(c.currency))),
      text: rows.map((c) => exact(c, field)), textposition: "outside", hovertemplate: "%{text}<extra>" + name + "</extra>",
    });
    plot("chart-consistency", [
      bar("difference_minor", "Σ debits − Σ credits", "#c0392b"),
      bar("transit_minor", "in transit", "#d9822b"),
    ], { barmode: "group", hovermode: "closest", yaxis: { title: { text: "major units" }, zeroline: true } });
    const body = $("table-consistency").tBodies[0];
    body.replaceChildren(...rows.map((c) => tableRow([
      c.currency, exact(c, "debits_minor"), exact(c, "credits_minor"), exact(c, "difference_minor"), exact(c, "transit_minor"),
      integer(c.accounts), exact(c, "projection_difference_minor"),
    ], (cell, i) => {
      if (i > 0) cell.className = "money";
      if ((i === 3 && c.difference_minor !== "0") || (i === 6 && c.projection_difference_minor !== "0")) cell.className = "money bad";
    })));
    if (!rows.length) body.replaceChildren(emptyRow(7, "no ledger lines stored yet"));
  }

  function drawDeadLetters(dead, w) {
    const x = dead.depth.map((d) => d.start_ms);
    plot("chart-dlq-depth", [
      { type: "scatter", mode: "lines", name: "depth", x, y: dead.depth.map((d) => d.depth), line: { color: "#c0392b", shape: "hv" } },
      { type: "bar", name: "arrived", x, y: dead.depth.map((d) => d.arrived), marker: { color: "#f0b3ab" } },
    ], { xaxis: timeAxis(w), yaxis: { title: { text: "records" }, rangemode: "tozero" } });
    const body = $("table-dead-letters").tBodies[0];
    body.replaceChildren(...dead.newest.map((d) => tableRow([
      utc(d.logged_at_ms), String(d.partition), String(d.offset), d.reason, d.detail || "", d.origin_topic || "",
    ], (cell, i) => { if (i === 4) cell.className = "detail"; })));
    if (!dead.newest.length) body.replaceChildren(emptyRow(6, "no dead letters in this range"));
  }

  function drawLag(lag) {
    const logs = lag.logs;
    plot("chart-lag-logs", [{
      type: "bar", x: logs.map((l) => l.source), y: logs.map((l) => (l.age_ms === null ? 0 : l.age_ms / 1000)),
      text: logs.map((l) => (l.age_ms === null ? "empty" : seconds(l.age_ms))), textposition: "outside",
      marker: { color: "#2458b3" }, hovertemplate: "%{x}: %{text}<extra></extra>",
    }], { hovermode: "closest", yaxis: { title: { text: "seconds" }, rangemode: "tozero" } });
    const groups = lag.groups;
    plot("chart-lag-groups", [{
      type: "bar", x: groups.map((g) => g.group), y: groups.map((g) => g.records_behind || 0),
      text: groups.map((g) => (g.records_behind === null ? "unknown" : integer(g.records_behind))), textposition: "outside",
      marker: { color: "#7a8ca6" }, hovertemplate: "%{x}: %{text}<extra></extra>",
    }], { hovermode: "closest", yaxis: { title: { text: "records" }, rangemode: "tozero" } });
    const banner = $("banner-stale");
    banner.hidden = !lag.stale;
    if (lag.stale) banner.textContent = staleText(lag);
  }

  function staleText(lag) {
    const events = lag.logs.find((l) => l.source === "events");
    const age = events && events.age_ms !== null ? `the newest stored event is ${seconds(events.age_ms)} old` : "no event is stored";
    const sink = lag.groups.find((g) => g.group === page.config.sink_group);
    const waiting = !sink || sink.records_behind === null ? "Kafka does not answer: the records waiting are unknown"
      : `${integer(sink.records_behind)} records are waiting to be stored`;
    return `Stale data: ${age} and ${waiting} (stale after ${lag.stale_after_s} s).`;
  }

  function tableRow(values, decorate) {
    const row = document.createElement("tr");
    values.forEach((value, i) => {
      const cell = document.createElement("td");
      cell.textContent = value; // never HTML: reasons and details come from hostile input
      decorate(cell, i);
      row.appendChild(cell);
    });
    return row;
  }

  function emptyRow(columns, text) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = columns;
    cell.className = "empty";
    cell.textContent = text;
    row.appendChild(cell);
    return row;
  }

  // --- the range ----------------------------------------------------------------------------

  function showRangeInputs(w) {
    for (const [id, moment] of [["since", w.since], ["until", w.until]]) {
      const input = $(id);
      if (document.activeElement !== input) input.value = moment.toISOString().replace(/\.\d+Z$/, "Z");
    }
    for (const button of document.querySelectorAll(".presets button")) {
      button.classList.toggle("active", Number(button.dataset.spanS) === page.range.spanS);
    }
  }

  function applyRange(event) {
    event.preventDefault();
    const since = parseMoment($("since").value);
    const until = parseMoment($("until").value);
    const problem = !since || !until ? "write both moments as ISO 8601, e.g. 2026-01-31T09:00:00Z"
      : since >= until ? "from must be before to" : null;
    $("range-error").textContent = problem || "";
    $("range-error").hidden = !problem;
    if (problem) return;
    page.range = { since, until };
    document.activeElement.blur();
    cycle();
  }

  function choosePreset(event) {
    page.range = { spanS: Number(event.currentTarget.dataset.spanS) };
    $("range-error").hidden = true;
    cycle();
  }

  // --- start --------------------------------------------------------------------------------

  async function start() {
    if (!window.isSecureContext || !crypto.subtle) throw new SignInError("the page needs https (or 127.0.0.1 / localhost) to sign in");
    const response = await fetch("/ops/config.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`the page's settings: ${await describe(response)}`);
    page.config = await response.json();
    const answer = new URLSearchParams(location.hash.slice(1));
    history.replaceState(null, "", location.pathname); // the code never stays in the address
    if (!answer.has("state")) return goToLogin();
    await redeem(answer);
    $("signing-in").hidden = true;
    $("dashboard").hidden = false;
    $("range").addEventListener("submit", applyRange);
    for (const button of document.querySelectorAll(".presets button")) button.addEventListener("click", choosePreset);
    $("sign-out").addEventListener("click", signOut);
    cycle();
  }

  function failed(error) {
    $("signing-in").hidden = true;
    $("sign-in-reason").textContent = (error instanceof SignInError ? "Sign-in failed: " : "The page could not start: ") + error.message;
    $("sign-in-failed").hidden = false;
    $("sign-in-again").onclick = () => (page.config ? goToLogin() : location.reload());
  }

  start().catch(failed);
})();
