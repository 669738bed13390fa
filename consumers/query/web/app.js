/*
 * app.js - the Loanwire risk dashboard (served by loanwire-query at "/").
 *
 * Sign-in exchanges a bearer token for an HttpOnly session cookie (POST
 * /session, token in the Authorization header only); every call after that
 * goes to the API's own endpoints with the cookie. Live alerts arrive as
 * Server-Sent Events (/v1/alerts/stream); the backlog is loaded from
 * /v1/alerts once the stream is open, so nothing falls between the two.
 *
 * Money: amounts are integer fen in the JSON. They are parsed straight from
 * their source text into BigInt (JSON.parse's reviver sees the digits) and
 * printed as integer yuan + two digits of fen; no amount ever passes
 * through a floating-point number.
 *
 * Every value from the server is put in the page as text (textContent),
 * never as markup.
 */
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const MAX_ROWS = 500;

  /* ---- Money ------------------------------------------------------------- */

  // JSON with every *_fen member as a BigInt made from its digits.
  function parseJSON(text) {
    return JSON.parse(text, function (key, value, ctx) {
      if (typeof value === 'number' && (key.endsWith('_fen') || key === 'limit')) {
        if (ctx && typeof ctx.source === 'string') return BigInt(ctx.source);
        if (Number.isSafeInteger(value)) return BigInt(value);
        return null; // cannot be exact: shown as "?"
      }
      return value;
    });
  }

  // 1234567n -> "12,345.67" (fen to yuan, thousands separators, 2 decimals).
  function formatFen(fen) {
    if (typeof fen !== 'bigint') return '?';
    const neg = fen < 0n;
    const abs = neg ? -fen : fen;
    const yuan = (abs / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    const cents = (abs % 100n).toString().padStart(2, '0');
    return (neg ? '-' : '') + yuan + '.' + cents;
  }
  // For test_dashboard.py's cross-check of the money arithmetic.
  window.lwFormatFen = formatFen;
  window.lwParseJSON = parseJSON;

  /* ---- DOM helpers -------------------------------------------------------- */

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function row(cells) {
    const tr = document.createElement('tr');
    for (const c of cells) tr.appendChild(c instanceof Node ? c : el('td', null, c));
    return tr;
  }
  function td(text, cls) { return el('td', cls, text); }
  function sevBadge(sev) {
    const cell = el('td');
    cell.appendChild(el('span', 'sev sev-' + (/^[A-Z]+$/.test(sev) ? sev : 'X'), sev));
    return cell;
  }
  function table(head, rows, numCols) {
    const t = el('table');
    const tr = document.createElement('tr');
    head.forEach((h, i) => tr.appendChild(el('th', numCols && numCols.includes(i) ? 'num' : null, h)));
    const thead = el('thead');
    thead.appendChild(tr);
    t.appendChild(thead);
    const tb = el('tbody');
    rows.forEach((r) => tb.appendChild(r));
    t.appendChild(tb);
    return t;
  }
  function fmtTime(ms) {
    if (typeof ms !== 'number') return '';
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' +
      p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }
  function status(text, live) {
    $('status').textContent = text;
    $('status').classList.toggle('live', !!live);
  }

  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ credentials: 'same-origin', cache: 'no-store' }, opts || {}));
    if (r.status === 401) { showSignIn(); throw new Error('signed out'); }
    return r;
  }

  /* ---- Sign-in ------------------------------------------------------------ */

  let started = false;
  let es = null;
  let statsTimer = null;

  function showSignIn() {
    if (es) { es.close(); es = null; }
    if (statsTimer) { clearInterval(statsTimer); statsTimer = null; }
    started = false;
    $('dash').hidden = true;
    $('signout').hidden = true;
    $('signin').hidden = false;
    status('');
    $('token').focus();
  }

  async function signIn(ev) {
    ev.preventDefault();
    const token = $('token').value.trim();
    const err = $('signin-error');
    err.hidden = true;
    let r;
    try {
      r = await fetch('/session', { method: 'POST', credentials: 'same-origin',
        headers: { Authorization: 'Bearer ' + token } });
    } catch (e) {
      err.textContent = 'The server did not answer.';
      err.hidden = false;
      return;
    }
    $('token').value = '';
    if (r.status !== 200) {
      err.textContent = r.status === 401 ? 'Token refused.' : 'Sign-in failed (HTTP ' + r.status + ').';
      err.hidden = false;
      return;
    }
    startDashboard();
  }

  async function signOut() {
    await fetch('/session/end', { method: 'POST', credentials: 'same-origin' });
    showSignIn();
  }

  /* ---- Live alerts -------------------------------------------------------- */

  const seen = new Set();
  const rules = new Set();
  let shown = 0;

  function matches(a) {
    const rule = $('f-rule').value, sev = $('f-sev').value;
    return (!rule || a.rule_id === rule) && (!sev || a.severity === sev);
  }

  function addRuleOption(rule) {
    if (rules.has(rule)) return;
    rules.add(rule);
    const opt = el('option', null, rule);
    opt.value = rule;
    $('f-rule').appendChild(opt);
  }

  function alertRow(a, fresh) {
    const b = el('a', 'borrower mono', a.borrower_id);
    b.href = '#';
    b.addEventListener('click', (e) => { e.preventDefault(); lookUp(a.borrower_id); });
    const bcell = el('td');
    bcell.appendChild(b);
    const ms = typeof a.stream_id === 'string' ? Number(a.stream_id.split('-')[0]) : a.raised_at;
    const tr = row([td(fmtTime(ms).slice(11)), sevBadge(a.severity), td(a.rule_id), bcell,
      td(formatFen(a.total_outstanding_fen), 'num'), td(a.reason, 'reason')]);
    tr.dataset.streamId = a.stream_id || '';
    tr.dataset.rule = a.rule_id;
    tr.dataset.severity = a.severity;
    tr.title = 'recorded ' + fmtTime(ms) + ', event time ' + fmtTime(a.raised_at) + ', alert ' + a.alert_id;
    if (fresh) tr.classList.add('new');
    tr.dataset.receivedAt = String(Date.now()); // when the page got it (the test's latency)
    tr.dataset.live = fresh ? '1' : '0';
    tr.hidden = !matches(a);
    return tr;
  }

  // Newest first; alerts are inserted by stream id, so the backlog and the
  // live stream may arrive in any order.
  function addAlert(a, fresh) {
    if (!a || typeof a.stream_id !== 'string' || seen.has(a.stream_id)) return;
    seen.add(a.stream_id);
    addRuleOption(a.rule_id);
    const tbody = $('alerts').tBodies[0];
    const tr = alertRow(a, fresh);
    // "<ms>-<seq>", or on a Redis Cluster "<ms>-<seq>:<slot>" (ties by slot)
    const sidKey = (s) => {
      const [id, slot] = s.split(':');
      const [ms, seq] = id.split('-').map(Number);
      return [ms, seq, Number(slot || 0)];
    };
    const key = sidKey(a.stream_id);
    let before = null;
    for (const r of tbody.rows) {
      const k = sidKey(r.dataset.streamId);
      if (k[0] < key[0] || (k[0] === key[0] && (k[1] < key[1] ||
          (k[1] === key[1] && k[2] < key[2])))) { before = r; break; }
    }
    tbody.insertBefore(tr, before);
    shown++;
    while (tbody.rows.length > MAX_ROWS) {
      const last = tbody.rows[tbody.rows.length - 1];
      seen.delete(last.dataset.streamId);
      last.remove();
    }
    $('alert-count').textContent = shown + ' received';
  }

  function applyFilters() {
    const rule = $('f-rule').value, sev = $('f-sev').value;
    for (const r of $('alerts').tBodies[0].rows)
      r.hidden = !((!rule || r.dataset.rule === rule) && (!sev || r.dataset.severity === sev));
  }

  function openStream() {
    es = new EventSource('/v1/alerts/stream');
    es.addEventListener('open', async () => {
      status('live', true);
      try {
        const r = await api('/v1/alerts?limit=200');
        if (r.ok) parseJSON(await r.text()).forEach((a) => addAlert(a, false));
      } catch (e) { /* shown by the status line */ }
    });
    es.addEventListener('alert', (m) => {
      try { addAlert(parseJSON(m.data), true); } catch (e) { /* a malformed entry: skip */ }
    });
    es.addEventListener('error', async () => {
      status('reconnecting…', false);
      // An expired session ends the stream: check, and show the sign-in.
      try {
        const r = await fetch('/session', { credentials: 'same-origin', cache: 'no-store' });
        if (r.ok && (await r.json()).signed_in !== true) showSignIn();
      } catch (e) { /* the server is away: EventSource retries */ }
    });
  }

  /* ---- Charts (uPlot, served by loanwire-query itself) -------------------- */

  const PALETTE = ['#dc2626', '#2563eb', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];
  let alertChart = null, alertRules = '', rateChart = null;

  function chartWidth(id) { return Math.max(240, $(id).clientWidth - 4); }

  function drawStats(s) {
    const names = Object.keys(s.alerts_per_minute).sort();
    const x = s.minute_ms.map((ms) => ms / 1000);
    const data = [x].concat(names.map((n) => s.alerts_per_minute[n]));
    if (!alertChart || alertRules !== names.join('|')) {
      if (alertChart) alertChart.destroy();
      alertRules = names.join('|');
      alertChart = new uPlot({
        width: chartWidth('chart-alerts'), height: 200,
        series: [{}].concat(names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 2 }))),
        axes: [{}, { label: 'alerts / min' }],
        scales: { x: { time: true } },
      }, data, $('chart-alerts'));
    } else {
      alertChart.setData(data);
    }
    const rdata = [s.rate_ms.map((ms) => ms / 1000), s.events_per_s];
    if (!rateChart) {
      rateChart = new uPlot({
        width: chartWidth('chart-rate'), height: 200,
        series: [{}, { label: 'events/s', stroke: '#2563eb', fill: 'rgba(37,99,235,0.12)', width: 2 }],
        axes: [{}, { label: 'events / s' }],
        scales: { x: { time: true } },
      }, rdata, $('chart-rate'));
    } else {
      rateChart.setData(rdata);
    }
  }

  async function loadStats() {
    try {
      const r = await api('/v1/dashboard/stats');
      if (r.ok) drawStats(JSON.parse(await r.text()));
    } catch (e) { /* next tick */ }
  }

  window.addEventListener('resize', () => {
    if (alertChart) alertChart.setSize({ width: chartWidth('chart-alerts'), height: 200 });
    if (rateChart) rateChart.setSize({ width: chartWidth('chart-rate'), height: 200 });
  });

  /* ---- Borrower look-up -------------------------------------------------- */

  const OPEN = new Set(['ACTIVE', 'DELINQUENT']); // the statuses the totals count

  function sumBy(loans, key) {
    const m = new Map();
    for (const l of loans) {
      if (!OPEN.has(l.status)) continue;
      const cur = m.get(l[key]) || { fen: 0n, n: 0 };
      cur.fen += typeof l.outstanding_fen === 'bigint' ? l.outstanding_fen : 0n;
      cur.n++;
      m.set(l[key], cur);
    }
    return [...m.entries()].sort((a, b) => (a[1].fen < b[1].fen ? 1 : a[1].fen > b[1].fen ? -1 : 0));
  }

  function alertsTable(list) {
    return table(['Rule', 'State', 'Severity', 'Raised (event time)', 'Outstanding (¥)', 'Reason'],
      list.map((h) => row([td(h.rule_id), td(h.state), sevBadge(h.alert ? h.alert.severity : ''),
        td(h.alert ? fmtTime(h.alert.raised_at) : ''), td(h.alert ? formatFen(h.alert.total_outstanding_fen) : '', 'num'),
        td(h.alert ? h.alert.reason : '', 'reason')])), [4]);
  }

  function renderExposure(x, history) {
    const out = $('lookup-result');
    out.replaceChildren();
    const head = el('p', 'total');
    head.appendChild(document.createTextNode('Total outstanding ¥ '));
    const total = el('strong', null, formatFen(x.total_outstanding_fen));
    total.id = 'lookup-total';
    head.appendChild(total);
    out.appendChild(el('div', 'mono muted', x.borrower_id));
    out.appendChild(head);
    const facts = el('div', 'facts');
    [['active loans', x.active_loans], ['lenders', x.active_lenders], ['platforms', x.active_platforms],
      ['past due ¥', formatFen(x.past_due_fen)],
      ['annual income ¥', x.annual_income_fen === null ? 'not declared' : formatFen(x.annual_income_fen)],
      ['as of', fmtTime(x.as_of)]].forEach(([k, v]) => facts.appendChild(el('span', null, k + ': ' + v)));
    out.appendChild(facts);

    const grid = el('div', 'grid2');
    const by = (title, key) => {
      const d = el('div');
      d.appendChild(el('h3', null, title));
      d.appendChild(table([key === 'platform_id' ? 'Platform' : 'Lender', 'Loans', 'Outstanding (¥)'],
        sumBy(x.loans, key).map(([k, v]) => row([td(k), td(v.n, 'num'), td(formatFen(v.fen), 'num')])), [1, 2]));
      return d;
    };
    grid.appendChild(by('By platform', 'platform_id'));
    grid.appendChild(by('By lender', 'lender_id'));
    const w = el('div');
    w.appendChild(el('h3', null, 'Windows'));
    w.appendChild(table(['Window', 'New loans', 'Applications', 'Distinct lenders'],
      Object.entries(x.windows).map(([k, v]) => row([td(k), td(v.new_loans, 'num'), td(v.applications, 'num'),
        td(v.distinct_lenders, 'num')])), [1, 2, 3]));
    grid.appendChild(w);
    out.appendChild(grid);

    const loans = el('div', 'scroll');
    loans.appendChild(table(['Platform', 'Loan', 'Lender', 'Product', 'Status', 'Outstanding (¥)', 'Limit (¥)',
      'DPD', 'Past due (¥)', 'Seq', 'Updated'],
    x.loans.map((l) => row([td(l.platform_id), td(l.loan_id, 'mono'), td(l.lender_id), td(l.product), td(l.status),
      td(formatFen(l.outstanding_fen), 'num'), td(formatFen(l.credit_limit_fen), 'num'), td(l.days_past_due, 'num'),
      td(formatFen(l.past_due_fen), 'num'), td(l.sequence, 'num'), td(fmtTime(l.updated_at))])), [5, 6, 7, 8, 9]));
    out.appendChild(el('h3', null, 'Loans (' + x.loans.length + ')'));
    out.appendChild(loans);

    out.appendChild(el('h3', null, 'Open alerts (' + x.open_alerts.length + ')'));
    out.appendChild(alertsTable(x.open_alerts.map((o) => ({ rule_id: o.rule_id, state: 'open', alert: o.alert }))));
    out.appendChild(el('h3', null, 'Alert history'));
    if (history === null) out.appendChild(el('p', 'muted', 'not available'));
    else {
      history.sort((a, b) => ((b.alert.raised_at || 0) - (a.alert.raised_at || 0)));
      out.appendChild(alertsTable(history));
      out.appendChild(el('p', 'muted', 'Open alerts, and the last cleared alert of each rule.'));
    }
  }

  async function lookUp(id) {
    const err = $('lookup-error');
    err.hidden = true;
    if (id !== undefined) $('borrower').value = id;
    const b = $('borrower').value.trim();
    if (!/^[A-Za-z0-9_-]{22}$/.test(b)) {
      err.textContent = 'A borrower id is 22 base64url characters.';
      err.hidden = false;
      return;
    }
    try {
      const [r, h] = await Promise.all([api('/v1/borrowers/' + b + '/exposure?purpose=' + encodeURIComponent($('purpose').value)),
        api('/v1/dashboard/borrowers/' + b + '/alerts')]);
      if (r.status === 404) { $('lookup-result').replaceChildren(); err.textContent = 'Unknown borrower.'; err.hidden = false; return; }
      if (!r.ok) { err.textContent = 'Look-up failed (HTTP ' + r.status + ').'; err.hidden = false; return; }
      renderExposure(parseJSON(await r.text()), h.ok ? parseJSON(await h.text()) : null);
      $('lookup-panel').scrollIntoView({ block: 'nearest' });
    } catch (e) {
      if (e.message !== 'signed out') { err.textContent = 'Look-up failed.'; err.hidden = false; }
    }
  }

  /* ---- Start ------------------------------------------------------------- */

  function startDashboard() {
    if (started) return;
    started = true;
    $('signin').hidden = true;
    $('signin-error').hidden = true;
    $('dash').hidden = false;
    $('signout').hidden = false;
    openStream();
    loadStats();
    statsTimer = setInterval(loadStats, 5000);
  }

  document.addEventListener('DOMContentLoaded', async () => {
    $('signin-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', signOut);
    $('f-rule').addEventListener('change', applyFilters);
    $('f-sev').addEventListener('change', applyFilters);
    $('lookup-form').addEventListener('submit', (e) => { e.preventDefault(); lookUp(); });
    const r = await fetch('/session', { credentials: 'same-origin', cache: 'no-store' });
    if (r.ok && (await r.json()).signed_in === true) startDashboard(); else showSignIn();
  });
})();
