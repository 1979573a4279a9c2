/* rl-supervisor dashboard: a dependency-free single-page app (uPlot for charts).
 *
 * Safety rule: every text that comes from a trial, a config or the server is put
 * into the page with textContent / element properties, never as HTML. There is
 * no innerHTML, insertAdjacentHTML or document.write in this file.
 */
'use strict';
(function () {
  // ------------------------------------------------------------------ helpers
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    if (props) {
      for (const k of Object.keys(props)) {
        const v = props[k];
        if (v == null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = String(v);
        else if (k === 'title') e.title = String(v);
        else if (k === 'style') Object.assign(e.style, v);
        else if (k === 'dataset') Object.assign(e.dataset, v);
        else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of kids.flat(3)) {
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function num(v) {
    if (typeof v === 'number') return v;
    if (v === 'NaN') return NaN;
    if (v === 'Infinity') return Infinity;
    if (v === '-Infinity') return -Infinity;
    return null;
  }

  function fmt(v, digits) {
    v = num(v);
    if (v == null) return '–';
    if (Number.isNaN(v)) return 'NaN';
    if (!Number.isFinite(v)) return v > 0 ? '+inf' : '-inf';
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(+v.toPrecision(digits || 4));
  }

  // Counts such as env steps: 950, 12.5k, 3.2M, 1.4B (the exact figure goes in a tooltip).
  function compact(v) {
    v = num(v);
    if (v == null || !Number.isFinite(v)) return '–';
    const a = Math.abs(v);
    for (const [d, u] of [[1e9, 'B'], [1e6, 'M'], [1e3, 'k']]) {
      if (a >= d) return String(+(v / d).toFixed(a >= 100 * d ? 0 : 1)) + u;
    }
    return String(Math.round(v));
  }

  const grouped = (v) => (num(v) == null ? '–' : Math.round(num(v)).toLocaleString('en-US'));

  function ago(t) {
    if (!t) return '–';
    const s = Math.max(0, Date.now() / 1000 + S.skew - t);
    if (s < 5) return 'just now';
    if (s < 60) return Math.round(s) + 's ago';
    if (s < 3600) return Math.round(s / 60) + 'm ago';
    if (s < 86400) return Math.round(s / 3600) + 'h ago';
    return Math.round(s / 86400) + 'd ago';
  }

  function clock(t) {
    if (!t) return '–';
    const d = new Date(t * 1000);
    return d.toLocaleTimeString([], { hour12: false });
  }

  const trialHref = (id) => '#/trial/' + encodeURIComponent(id);
  const healthClass = (s) => (s == null ? '' : s >= 0.8 ? 'ok' : s >= 0.4 ? 'warn' : 'crit');
  const SEV_RANK = { ok: 0, info: 1, warning: 2, critical: 3 };
  const STATUSES = ['running', 'completed', 'recovered', 'stopped', 'errored', 'lost'];

  function pill(status) {
    const s = String(status || 'unknown');
    return el('span', { class: 'pill ' + (STATUSES.includes(s) || s === 'waiting' ? s : 'unknown'), text: s });
  }
  function sev(s) {
    const v = String(s || 'info');
    return el('span', { class: 'sev ' + (SEV_RANK[v] != null ? v : 'info'), text: v });
  }
  function bar(frac, cls) {
    const inner = el('span');
    const f = Math.max(0, Math.min(1, frac || 0));
    inner.style.width = (f * 100).toFixed(1) + '%';
    return el('div', { class: 'bar ' + (cls || '') }, inner);
  }

  // ------------------------------------------------------------------ state
  const S = {
    mode: null, source: null, controls: { enabled: false }, runs: [], trials: new Map(), nodes: [],
    alerts: [], cursor: 0, supervisor: null, errors: [], skew: 0,
    sort: { key: 'health_score', dir: 1 }, filter: { q: '', status: '', sev: '' },
    showInfo: false, page: null, trial: null, fresh: new Set(), flash: new Set(),
  };
  const pending = new Set();
  let frame = 0;
  function schedule(what) {
    pending.add(what);
    if (!frame) frame = requestAnimationFrame(flush);
  }
  function flush() {
    frame = 0;
    const todo = new Set(pending);
    pending.clear();
    if (todo.has('header')) renderHeader();
    if (todo.has('feed')) renderFeed();
    if (S.page === 'overview') {
      if (todo.has('kpis')) renderKpis();
      if (todo.has('nodes')) renderNodes();
      if (todo.has('trials')) renderTrials();
    } else if (S.page === 'trial' && S.trial) {
      if (todo.has('trialhead')) renderTrialHead();
      if (todo.has('charts')) updateCharts();
      if (todo.has('events')) renderTrialEvents();
    }
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!r.ok) {
      let msg = r.status + ' ' + r.statusText;
      try { msg = (await r.json()).error || msg; } catch (e) { /* keep status */ }
      const err = new Error(msg); err.status = r.status; throw err;
    }
    return r.json();
  }

  // /api/trial answers in pages of reports: fetch them all, appending each page's columns.
  async function getTrial(id) {
    const base = '/api/trial?id=' + encodeURIComponent(id);
    const detail = await getJSON(base);
    let page = detail.page;
    while (page && page.more) {
      const next = await getJSON(base + '&since_seq=' + encodeURIComponent(page.next_since_seq));
      appendReports(detail.reports, next.reports);
      page = next.page;
    }
    return detail;
  }

  function appendReports(rep, more) {
    const n = rep.seq.length, m = more.seq.length;
    for (const k of ['seq', 'iteration', 'time']) rep[k].push(...more[k]);
    for (const [k, arr] of Object.entries(more.metrics)) {
      if (!rep.metrics[k]) rep.metrics[k] = new Array(n).fill(null);
      rep.metrics[k].push(...arr);
    }
    for (const [k, arr] of Object.entries(rep.metrics)) {
      if (!(k in more.metrics)) for (let i = 0; i < m; i++) arr.push(null);
    }
  }

  function applyState(d) {
    S.mode = d.mode; S.source = d.source; S.controls = d.controls || { enabled: false };
    S.runs = d.runs || []; S.nodes = d.nodes || []; S.supervisor = d.supervisor; S.errors = d.errors || [];
    S.trials = new Map((d.trials || []).map((t) => [t.trial_id, t]));
    S.alerts = (d.alerts || []).slice(-300);
    S.cursor = d.cursor || 0;
    if (d.now) S.skew = d.now - Date.now() / 1000;
    ['header', 'feed', 'kpis', 'nodes', 'trials'].forEach(schedule);
  }

  async function loadState() {
    applyState(await getJSON('/api/state'));
  }

  // ------------------------------------------------------------------ live events
  let es = null;
  function connect() {
    if (es) es.close();
    es = new EventSource('/api/events?last=' + encodeURIComponent(S.cursor));
    es.onopen = () => setConn(true);
    es.onerror = () => setConn(false);
    const on = (type, fn) => es.addEventListener(type, (e) => {
      if (e.lastEventId) S.cursor = +e.lastEventId;
      let d; try { d = JSON.parse(e.data); } catch (err) { return; }
      fn(d);
    });
    on('report', onReport);
    on('finding', onFinding);
    on('intervention', onIntervention);
    on('trial', (t) => {
      const old = S.trials.get(t.trial_id);
      if (!old || old.iteration !== t.iteration) S.flash.add(t.trial_id);
      S.trials.set(t.trial_id, t);
      schedule('trials'); schedule('kpis');
      if (S.trial && S.trial.id === t.trial_id) { S.trial.summary = t; schedule('trialhead'); }
    });
    on('nodes', (d) => { S.nodes = d.nodes || []; schedule('nodes'); schedule('kpis'); });
    on('runs', (d) => { S.runs = d.runs || []; if (d.supervisor !== undefined) S.supervisor = d.supervisor; schedule('header'); });
    on('reset', async () => { await loadState(); if (S.page === 'trial' && S.trial) openTrial(S.trial.id, true); });
  }

  function setConn(ok) {
    const c = $('conn');
    c.classList.toggle('live', ok);
    c.classList.toggle('down', !ok);
    $('conn-label').textContent = ok ? 'live' : 'reconnecting…';
  }

  function onReport(r) {
    const T = S.trial;
    if (!T || T.id !== r.trial_id) return;
    const rep = T.detail.reports;
    if (rep.seq.length && r.seq <= rep.seq[rep.seq.length - 1]) return;
    const n = rep.seq.length;
    rep.seq.push(r.seq); rep.iteration.push(r.iteration); rep.time.push(r.time);
    const m = r.metrics || {};
    for (const k of Object.keys(m)) if (!rep.metrics[k]) rep.metrics[k] = new Array(n).fill(null);
    for (const k of Object.keys(rep.metrics)) rep.metrics[k].push(k in m ? m[k] : null);
    schedule('charts');
  }

  function upsertAlert(a) {
    const i = S.alerts.findIndex((x) => x.kind === a.kind && x.id === a.id && x.run_dir === a.run_dir);
    if (i >= 0) S.alerts[i] = a; else { S.alerts.push(a); S.fresh.add(a.kind + a.id); }
    if (S.alerts.length > 300) S.alerts.splice(0, S.alerts.length - 300);
    schedule('feed');
  }

  function onFinding(f) {
    upsertAlert(f);
    if (S.trial && S.trial.id === f.trial_id) {
      S.trial.detail.findings.push(f);
      schedule('charts'); schedule('events');
    }
  }

  function onIntervention(iv) {
    upsertAlert(iv);
    if (S.trial && S.trial.id === iv.trial_id) {
      const list = S.trial.detail.interventions;
      const i = list.findIndex((x) => x.id === iv.id);
      if (i >= 0) list[i] = iv; else list.push(iv);
      schedule('charts'); schedule('events');
    }
  }

  // ------------------------------------------------------------------ header + feed
  function renderHeader() {
    const run = S.runs.length === 1 ? S.runs[0] : null;
    let src = S.source || '';
    if (run && run.name) src = run.name + ' · ' + src;
    else if (S.runs.length > 1) src = S.runs.length + ' runs · ' + src;
    $('source').textContent = src;
    $('source').title = src;
    const mb = $('mode-badge');
    mb.textContent = S.mode === 'live' ? (S.supervisor === false ? 'live · supervisor not found' : 'live cluster') : 'run folder';
    mb.className = 'badge ' + (S.mode === 'live' ? 'live' : 'ro');
    const cb = $('ctl-badge');
    const c = S.controls || {};
    cb.classList.toggle('hidden', false);
    cb.textContent = c.usable ? 'controls on' : 'read-only';
    cb.className = 'badge ' + (c.usable ? 'ctl' : 'ro');
  }

  function renderFeed() {
    const list = $('feed');
    const items = S.alerts.filter((a) => a.kind === 'intervention' || S.showInfo || a.severity !== 'info');
    const shown = items.slice(-200).reverse();
    $('feed-count').textContent = String(items.length);
    if (!shown.length) {
      list.replaceChildren(el('li', { class: 'empty' }, el('strong', { text: 'All quiet' }),
        'Findings and interventions appear here the moment the supervisor records them.'));
      return;
    }
    list.replaceChildren(...shown.map(alertItem));
    S.fresh.clear();
  }

  function alertItem(a) {
    const isIv = a.kind === 'intervention';
    const cls = 'alert ' + (isIv ? 'intervention' : String(a.severity)) + (S.fresh.has(a.kind + a.id) ? ' fresh' : '');
    const top = el('div', { class: 'alert-top' },
      isIv ? el('span', { class: 'sev action', text: 'action' }) : sev(a.severity),
      el('span', { class: 'what', text: isIv ? a.action : a.detector }),
      el('span', { class: 'when', text: ago(a.time), title: clock(a.time), dataset: { t: String(a.time || '') } }));
    const trial = a.trial_id != null
      ? el('div', { class: 'alert-trial' }, el('a', { href: trialHref(a.trial_id), text: a.trial_id }),
        a.iteration != null && a.iteration >= 0 ? el('span', { class: 'muted', text: ' · iter ' + a.iteration }) : null)
      : el('div', { class: 'alert-trial muted', text: 'cluster' });
    const msg = el('div', { class: 'alert-msg', text: isIv ? a.reason : a.message });
    const meta = isIv ? el('div', { class: 'alert-meta', text: 'outcome: ' + a.outcome + paramsText(a.params, ' · ') }) : null;
    return el('li', { class: cls, dataset: { kind: a.kind, severity: isIv ? 'action' : String(a.severity) } }, top, trial, msg, meta);
  }

  function paramsText(p, prefix) {
    if (!p || typeof p !== 'object') return '';
    const parts = Object.keys(p).filter((k) => k !== 'hparams' && k !== 'checkpoint')
      .map((k) => k + '=' + (typeof p[k] === 'number' ? fmt(p[k]) : String(p[k])));
    return parts.length ? (prefix || '') + parts.join(', ') : '';
  }

  // ------------------------------------------------------------------ overview
  function showOverview() {
    destroyCharts();
    S.page = 'overview'; S.trial = null;
    $('nav-overview').classList.add('active');
    const q = el('input', { type: 'search', id: 'trial-filter', placeholder: 'Filter trials…', value: S.filter.q, 'aria-label': 'Filter trials' });
    q.value = S.filter.q;
    q.addEventListener('input', () => { S.filter.q = q.value; schedule('trials'); });
    const st = el('select', { id: 'status-filter', 'aria-label': 'Status' },
      el('option', { value: '', text: 'All statuses' }), STATUSES.map((s) => el('option', { value: s, text: s })));
    st.value = S.filter.status;
    st.addEventListener('change', () => { S.filter.status = st.value; schedule('trials'); });
    const sv = el('select', { id: 'severity-filter', 'aria-label': 'Worst severity' },
      el('option', { value: '', text: 'Any severity' }), el('option', { value: 'warning', text: 'Warning or worse' }),
      el('option', { value: 'critical', text: 'Critical' }));
    sv.value = S.filter.sev;
    sv.addEventListener('change', () => { S.filter.sev = sv.value; schedule('trials'); });

    $('main').replaceChildren(
      el('div', { id: 'banner' }),
      el('section', { class: 'kpis', id: 'kpis' }),
      el('section', { class: 'panel', id: 'cluster' },
        el('div', { class: 'panel-head' }, el('h2', { text: 'Cluster' }), el('span', { class: 'count', id: 'node-count' })),
        el('div', { class: 'panel-body', id: 'nodes' })),
      el('section', { class: 'panel', id: 'trials' },
        el('div', { class: 'panel-head' }, el('h2', { text: 'Trials' }), el('span', { class: 'count', id: 'trial-count' }),
          el('div', { class: 'toolbar' }, q, st, sv)),
        el('div', { class: 'table-wrap', id: 'trial-table' })));
    renderKpis(); renderNodes(); renderTrials();
  }

  function renderKpis() {
    const box = $('kpis');
    if (!box) return;
    const trials = [...S.trials.values()];
    const running = trials.filter((t) => t.status === 'running').length;
    const unhealthy = trials.filter((t) => t.health_score != null && t.health_score < 0.8).length;
    const critical = S.alerts.filter((a) => a.kind === 'finding' && a.severity === 'critical').length;
    const warnings = S.alerts.filter((a) => a.kind === 'finding' && a.severity === 'warning').length;
    const ivs = S.alerts.filter((a) => a.kind === 'intervention').length;
    const alive = S.nodes.filter((n) => n.alive).length;
    let gpus = 0;
    for (const n of S.nodes) gpus += gpuList(n).length || (num((n.info || {}).gpus_total) || 0);
    const tile = (label, value, sub, cls) => el('div', { class: 'kpi ' + (cls || '') },
      el('div', { class: 'k-label', text: label }), el('div', { class: 'k-value', text: value }), el('div', { class: 'k-sub', text: sub }));
    box.replaceChildren(
      tile('Trials', String(trials.length), running + ' running', 'acc'),
      tile('Unhealthy', String(unhealthy), 'health below 0.8', unhealthy ? 'warn' : 'ok'),
      tile('Critical', String(critical), 'critical findings', critical ? 'crit' : 'ok'),
      tile('Warnings', String(warnings), 'warning findings', warnings ? 'warn' : 'ok'),
      tile('Interventions', String(ivs), 'actions taken', ''),
      stepsTile(trials),
      tile('Nodes', S.nodes.length ? alive + '/' + S.nodes.length : '–', gpus ? gpus + ' GPUs' : 'alive / known', S.nodes.length && alive < S.nodes.length ? 'crit' : ''));
    const banner = $('banner');
    if (banner) {
      const msgs = [...S.errors];
      if (S.mode === 'live' && S.supervisor === false) msgs.push('No supervisor actor found on this cluster yet (namespace rl_supervisor); retrying.');
      banner.replaceChildren(...msgs.map((m) => el('div', { class: 'banner', text: m })));
    }
  }

  function stepsTile(trials) {
    let used = 0, saved = 0;
    for (const t of trials) {
      used += num(t.compute && t.compute.env_steps) || 0;
      saved += num(t.compute && t.compute.saved_env_steps) || 0;
    }
    return el('div', { class: 'kpi', id: 'kpi-steps', title: grouped(used) + ' env steps used, ' + grouped(saved) + ' left unused by supervisor stops' },
      el('div', { class: 'k-label', text: 'Env steps' }), el('div', { class: 'k-value', text: compact(used) }),
      el('div', { class: 'k-sub', text: saved > 0 ? 'saved ' + compact(saved) + ' by stops' : 'used by all trials' }));
  }

  function gpuList(n) {
    const info = n.info || {};
    return Array.isArray(info.gpus) ? info.gpus.filter((g) => g && typeof g === 'object') : [];
  }

  function meter(label, value, frac, text, invert) {
    const f = frac == null ? 0 : frac;
    const cls = frac == null ? '' : (f >= 0.9 ? 'crit' : f >= 0.75 ? 'warn' : 'ok');
    return el('div', { class: 'meter' }, el('span', { class: 'm-label', text: label }), bar(f, invert ? '' : cls),
      el('span', { class: 'm-val', text: text != null ? text : (value == null ? '–' : value) }));
  }

  function pct(v) {
    v = num(v);
    if (v == null || !Number.isFinite(v)) return null;
    return v > 1.0001 ? v / 100 : v; // accept 0..1 or 0..100
  }

  function renderNodes() {
    const box = $('nodes');
    if (!box) return;
    $('node-count').textContent = S.nodes.length ? String(S.nodes.length) : '';
    if (!S.nodes.length) {
      box.replaceChildren(el('div', { class: 'empty', id: 'nodes-empty' }, el('strong', { text: 'No node data yet' }),
        S.mode === 'live' ? 'The node monitors have not reported; nodes and GPUs appear here as they do.'
          : 'This run folder has no node records: nodes and GPUs appear here when node monitors write them.'));
      return;
    }
    box.replaceChildren(el('div', { class: 'nodes' }, S.nodes.map(nodeCard)));
  }

  const KNOWN_NODE_KEYS = new Set(['gpus', 'cpu_percent', 'memory_percent', 'source', 'head', 'gpus_total', 'cpus',
    'monitor', 'heartbeat_age_s', 'hostname', 'disk_percent', 'disk_path', 'net_sent_bytes_per_s',
    'net_recv_bytes_per_s', 'resources', 'gpu_error', 'health']);

  function rate(v) {
    v = num(v);
    if (v == null) return null;
    return v >= 1048576 ? (v / 1048576).toFixed(1) + ' MiB/s' : v >= 1024 ? (v / 1024).toFixed(1) + ' KiB/s' : Math.round(v) + ' B/s';
  }

  // Show what a node reported; for the rest, say why it is missing instead of printing null.
  function nodeCard(n) {
    const info = n.info || {};
    const monitored = info.monitor !== false; // older stores have no flag: trust what is there
    const why = !n.alive ? 'node is down' : !monitored ? 'no monitor on this node' : 'not reported by its monitor';
    const cpu = pct(info.cpu_percent), mem = pct(info.memory_percent), disk = pct(info.disk_percent);
    const kids = [el('div', { class: 'node-head' }, el('span', { class: 'pill ' + (n.alive ? 'alive' : 'dead'), text: n.alive ? 'alive' : 'down' }),
      el('span', { class: 'node-id', text: String(n.node_id || '').slice(0, 16), title: String(n.node_id || '') }),
      info.head ? el('span', { class: 'count-chip', text: 'head' }) : null,
      el('span', { class: 'node-addr', text: [info.hostname, n.address].filter(Boolean).join(' · ') }))];
    const missing = [];
    if (cpu != null) kids.push(meter('CPU', null, cpu, Math.round(cpu * 100) + '%')); else missing.push('CPU');
    if (mem != null) kids.push(meter('Memory', null, mem, Math.round(mem * 100) + '%')); else missing.push('memory');
    if (disk != null) kids.push(meter('Disk', null, disk, Math.round(disk * 100) + '%')); else if (monitored) missing.push('disk');
    const gpus = gpuList(n);
    for (const g of gpus) {
      const util = pct(g.utilization);
      const used = num(g.memory_used), total = num(g.memory_total);
      const memFrac = used != null && total ? used / total : null;
      const temp = num(g.temperature);
      kids.push(el('div', { class: 'gpu' },
        el('div', { class: 'gpu-name' }, el('span', { text: 'GPU ' + (g.index != null ? g.index : '?') }),
          el('span', { class: 'muted', text: g.name || '' }),
          el('span', { class: 'temp' + (temp != null && temp >= 85 ? ' hot' : ''), text: temp == null ? '' : Math.round(temp) + '°C' })),
        meter('Util', null, util, util == null ? 'not reported' : Math.round(util * 100) + '%'),
        meter('Memory', null, memFrac, used == null ? 'not reported' : memText(used) + (total ? ' / ' + memText(total) : ''))));
    }
    const kv = [];
    const sent = rate(info.net_sent_bytes_per_s), recv = rate(info.net_recv_bytes_per_s);
    if (sent != null || recv != null) kv.push(['network', '↑ ' + (sent || '–') + ' ↓ ' + (recv || '–')]);
    else if (monitored) missing.push('network');
    if (info.cpus != null) kv.push(['CPUs', fmt(info.cpus)]);
    if (info.gpus_total != null) kv.push(['GPUs', fmt(info.gpus_total)]);
    const extra = Object.keys(info).filter((k) => !KNOWN_NODE_KEYS.has(k) && info[k] != null && typeof info[k] !== 'object');
    for (const k of extra.slice(0, 8)) kv.push([k, typeof info[k] === 'number' ? fmt(info[k]) : String(info[k])]);
    if (n.last_seen) kv.push(['seen', ago(n.last_seen)]);
    if (kv.length) kids.push(el('div', { class: 'kv' }, kv.map(([k, v]) => el('span', null, k + ' ', el('b', { text: v })))));
    const notes = [];
    if (!gpus.length) {
      if (info.gpu_error) notes.push('GPUs: ' + info.gpu_error);
      else if (monitored && n.alive && info.monitor !== undefined) notes.push('no GPUs');
    }
    if (missing.length) notes.push(missing.join(', ') + ': ' + why);
    if (notes.length) kids.push(el('div', { class: 'node-missing muted' }, notes.map((t) => el('div', { text: t }))));
    return el('div', { class: 'node' + (n.alive ? '' : ' dead'), dataset: { node: String(n.node_id || '') } }, kids);
  }

  function memText(v) {
    // memory_used/memory_total: MiB if large numbers, else as given
    if (v >= 1024) return (v / 1024).toFixed(1) + ' GiB';
    return fmt(v) + ' MiB';
  }

  const COLUMNS = [
    { key: 'trial_id', label: 'Trial' },
    { key: 'status', label: 'Status' },
    { key: 'health_score', label: 'Health' },
    { key: 'iteration', label: 'Iter', num: true },
    { key: 'return', label: 'Return', num: true },
    { key: 'env_steps', label: 'Env steps', num: true },
    { key: 'alerts', label: 'Alerts' },
    { key: 'newest', label: 'Newest finding' },
    { key: 'updated', label: 'Updated', num: true },
  ];

  function sortValue(t, key) {
    switch (key) {
      case 'alerts': return (t.critical || 0) * 1e6 + (t.warning || 0) * 1e3 + (t.interventions || 0);
      case 'newest': return t.newest_finding ? (SEV_RANK[t.newest_finding.severity] || 0) * 1e12 + (t.newest_finding.time || 0) : -1;
      case 'status': return STATUSES.indexOf(t.status);
      case 'trial_id': return String(t.trial_id);
      case 'env_steps': { const v = num(t.compute && t.compute.env_steps); return v == null ? -Infinity : v; }
      default: { const v = num(t[key]); return v == null || Number.isNaN(v) ? -Infinity : v; }
    }
  }

  function filteredTrials() {
    const q = S.filter.q.trim().toLowerCase();
    const minSev = S.filter.sev ? SEV_RANK[S.filter.sev] : 0;
    const rows = [...S.trials.values()].filter((t) => {
      if (S.filter.status && t.status !== S.filter.status) return false;
      if (minSev && (SEV_RANK[t.worst_severity] || 0) < minSev) return false;
      if (q) {
        const hay = [t.trial_id, t.run_id, t.node_id, t.status, t.newest_finding && t.newest_finding.detector,
          t.newest_finding && t.newest_finding.message].join(' ').toLowerCase();
        if (!hay.includes(q)) return false;
      }
      return true;
    });
    const { key, dir } = S.sort;
    rows.sort((a, b) => {
      const va = sortValue(a, key), vb = sortValue(b, key);
      const c = typeof va === 'string' ? va.localeCompare(vb) : va - vb;
      return c * dir || String(a.trial_id).localeCompare(String(b.trial_id));
    });
    return rows;
  }

  function renderTrials() {
    const box = $('trial-table');
    if (!box) return;
    const rows = filteredTrials();
    $('trial-count').textContent = rows.length === S.trials.size ? String(S.trials.size) : rows.length + ' of ' + S.trials.size;
    if (!S.trials.size) {
      box.replaceChildren(el('div', { class: 'panel-body' }, el('div', { class: 'empty', id: 'trials-empty' },
        el('strong', { text: 'No trials yet' }), 'Trials appear here as soon as they register with the supervisor.')));
      return;
    }
    const head = el('tr', null, COLUMNS.map((c) => {
      const active = S.sort.key === c.key;
      return el('th', {
        class: 'sortable' + (c.num ? ' num' : ''), dataset: { key: c.key }, 'aria-sort': active ? (S.sort.dir > 0 ? 'ascending' : 'descending') : 'none',
        onclick: () => { S.sort = { key: c.key, dir: active ? -S.sort.dir : (c.num || c.key === 'alerts' || c.key === 'newest' ? -1 : 1) }; renderTrials(); },
      }, c.label, el('span', { class: 'arrow', text: active ? (S.sort.dir > 0 ? ' ▲' : ' ▼') : '' }));
    }));
    const body = el('tbody', null, rows.map(trialRow));
    if (!rows.length) body.append(el('tr', null, el('td', { colspan: COLUMNS.length, class: 'muted', text: 'No trial matches the filter.' })));
    box.replaceChildren(el('table', { id: 'trials-table' }, el('thead', null, head), body));
    S.flash.clear();
  }

  function trialRow(t) {
    const nf = t.newest_finding;
    const h = num(t.health_score);
    return el('tr', { class: S.flash.has(t.trial_id) ? 'flash' : '', dataset: { trial: String(t.trial_id) } },
      el('td', { class: 'trial-cell' }, el('a', { href: trialHref(t.trial_id), text: t.trial_id, class: 'trial-link' }),
        t.node_id ? el('div', { class: 'muted mono', text: 'node ' + String(t.node_id).slice(0, 12) }) : null),
      el('td', null, pill(t.status)),
      el('td', null, el('div', { class: 'health' }, bar(h, healthClass(h)), el('span', { class: 'health-val', text: h == null ? '–' : h.toFixed(2) }))),
      el('td', { class: 'num iter', text: t.iteration == null ? '–' : String(t.iteration) }),
      el('td', { class: 'num ret', text: fmt(t.return) }),
      stepsCell(t.compute),
      el('td', null, el('div', { class: 'counts' },
        t.critical ? el('span', { class: 'count-chip crit', text: t.critical + ' crit', title: 'critical findings' }) : null,
        t.warning ? el('span', { class: 'count-chip warn', text: t.warning + ' warn', title: 'warning findings' }) : null,
        t.interventions ? el('span', { class: 'count-chip iv', text: t.interventions + ' act', title: 'interventions' }) : null,
        !t.critical && !t.warning && !t.interventions ? el('span', { class: 'muted', text: '–' }) : null)),
      el('td', { class: 'finding-cell' }, nf
        ? [el('div', null, sev(nf.severity), el('span', { class: 'det', text: nf.detector }),
          el('span', { class: 'muted', text: nf.iteration != null ? ' · iter ' + nf.iteration : '' })),
          el('span', { class: 'msg', text: nf.message, title: nf.message })]
        : el('span', { class: 'muted', text: 'none' })),
      el('td', { class: 'num muted when', text: ago(t.updated || t.started), dataset: { t: String(t.updated || t.started || '') } }));
  }

  // What the trial used and, for a trial the supervisor stopped, what of its budget it did not spend.
  function stepsCell(c) {
    if (!c) return el('td', { class: 'num steps muted', text: '–' });
    const saved = num(c.saved_env_steps) || 0;
    return el('td', { class: 'num steps' },
      el('div', { class: 'steps-used', text: compact(c.env_steps), title: grouped(c.env_steps) + ' env steps used' }),
      saved > 0 ? el('div', { class: 'muted steps-saved', text: 'saved ' + compact(saved),
        title: grouped(saved) + ' env steps of the budget (stop.timesteps or stop.iterations) left unused because the supervisor stopped the trial' }) : null);
  }

  // ------------------------------------------------------------------ trial page
  const PALETTE = ['#5b9dff', '#ff9f43', '#3ecf8e', '#b084f5', '#ff6b9a', '#36c5d6', '#f5c542'];
  const CHARTS = [
    // eval_return_mean: only on evaluation iterations (evaluation_interval), drawn as joined points
    { id: 'return', title: 'Episode return', series: [['episode_return_mean', 'mean', 0], ['episode_return_max', 'max', 2, 1], ['episode_return_min', 'min', 4, 1], ['eval_return_mean', 'evaluation', 3, 0, 'y', true]] },
    { id: 'losses', title: 'Losses', series: [['total_loss', 'total', 0], ['policy_loss', 'policy', 1], ['vf_loss', 'value', 2]] },
    { id: 'kl', title: 'KL divergence', unit: 'coefficient on the right axis', series: [['kl', 'kl', 0], ['approx_kl', 'approx kl', 5], ['kl_coeff', 'kl coeff', 1, 0, 'y2']] },
    { id: 'entropy', title: 'Entropy', unit: 'coefficient on the right axis', series: [['entropy', 'entropy', 2], ['entropy_coeff', 'entropy coeff', 1, 0, 'y2']] },
    { id: 'grads', title: 'Gradient norms', unit: 'log scale', log: true, series: [['grad_norm', 'global', 0], ['grad_norm_max', 'max', 4], ['grad_norm_policy', 'policy', 1], ['grad_norm_value', 'value', 2]] },
    { id: 'advantages', title: 'Advantage statistics', unit: 'skew/kurtosis on the right axis', series: [['advantage_mean', 'mean', 0], ['advantage_std', 'std', 2], ['advantage_skew', 'skew', 1, 0, 'y2'], ['advantage_kurtosis', 'kurtosis', 3, 0, 'y2']] },
    { id: 'lr', title: 'Learning rate', unit: 'log scale', log: true, series: [['lr', 'lr', 6]] },
    { id: 'value', title: 'Value function', unit: 'clip fraction on the right axis', series: [['explained_variance', 'explained var', 5], ['clip_fraction', 'clip fraction', 3, 0, 'y2']] },
  ];

  async function openTrial(id, keepScroll) {
    $('nav-overview').classList.remove('active');
    S.page = 'trial';
    let detail;
    try {
      detail = await getTrial(id);
    } catch (e) {
      destroyCharts();
      S.trial = null;
      $('main').replaceChildren(el('div', { class: 'crumbs' }, el('a', { href: '#/', text: 'Overview' }), ' / ', el('span', { text: id })),
        el('div', { class: 'empty' }, el('strong', { text: e.status === 404 ? 'No such trial' : 'Could not load the trial' }), e.message));
      return;
    }
    if (location.hash !== trialHref(id)) return; // navigated away meanwhile
    destroyCharts();
    S.trial = { id, detail, summary: detail.trial, charts: [] };
    S.trial.modules = modulesOf(detail);
    S.trial.module = S.trial.modules.length ? S.trial.modules[0] : null;
    const y = window.scrollY;
    $('main').replaceChildren(
      el('div', { class: 'crumbs' }, el('a', { href: '#/', text: 'Overview' }), ' / trial'),
      el('section', { class: 'panel', id: 'trial-head' }),
      crashPanel(detail.crash),
      controlsPanel(id),
      el('div', { class: 'panel-head panel', id: 'chart-legend' }, el('h2', { text: 'Training signals' }),
        moduleSelect(),
        el('span', { class: 'count', text: 'x axis: iteration · drag to zoom, double-click to reset' }),
        el('div', { class: 'legend-marks' },
          el('span', { class: 'lm' }, el('span', { class: 'sw critical' }), 'critical finding'),
          el('span', { class: 'lm' }, el('span', { class: 'sw warning' }), 'warning'),
          el('span', { class: 'lm' }, el('span', { class: 'sw iv' }), 'intervention'))),
      el('section', { class: 'charts', id: 'charts' }),
      el('section', { class: 'split' },
        el('div', { class: 'panel' }, el('div', { class: 'panel-head' }, el('h2', { text: 'Findings' }), el('span', { class: 'count', id: 'findings-count' })),
          el('div', { id: 'blind' }),
          el('div', { class: 'table-wrap', id: 'findings-table' })),
        el('div', { class: 'panel' }, el('div', { class: 'panel-head' }, el('h2', { text: 'Interventions' }), el('span', { class: 'count', id: 'iv-count' })),
          el('div', { class: 'table-wrap', id: 'iv-table' }))));
    if (!detail.history) {
      $('charts').replaceChildren(el('div', { class: 'empty' }, el('strong', { text: 'No history here' }),
        'The supervisor knows this trial, but its run folder is not readable from this machine.'));
    } else {
      buildCharts();
    }
    renderTrialHead(); renderTrialEvents();
    if (keepScroll) window.scrollTo(0, y);
  }

  // ---- modules: a multi-agent trial's policies, each its own stream (metrics modules/<id>/<name>)
  function modulesOf(detail) {
    const out = new Set();
    for (const k of Object.keys((detail.reports && detail.reports.metrics) || {})) {
      if (k.startsWith('modules/')) out.add(k.slice(8, k.lastIndexOf('/')));
    }
    return Array.from(out).sort();
  }

  function moduleSelect() {
    const mods = S.trial.modules;
    if (!mods.length) return null;
    const sel = el('select', { id: 'module-select', 'aria-label': 'Module' },
      mods.map((m) => el('option', { value: m, text: 'module ' + m })),
      el('option', { value: '', text: 'whole trial (team return; every module\u2019s findings)' }));
    sel.value = S.trial.module || '';
    sel.addEventListener('change', () => {
      S.trial.module = sel.value || null;
      destroyCharts(); buildCharts(); renderTrialEvents();
    });
    return sel;
  }

  function inModule(o) {
    // the selected module's findings and interventions and the trial's own (module null); all for the whole trial
    const m = S.trial && S.trial.module;
    return !S.trial || !S.trial.modules.length || o.module == null || !m || o.module === m;
  }

  function metricKey(rep, key) {
    const m = S.trial && S.trial.module;
    if (m && rep.metrics['modules/' + m + '/' + key]) return 'modules/' + m + '/' + key;
    return key;
  }

  function renderTrialHead() {
    const box = $('trial-head');
    if (!box || !S.trial) return;
    const t = S.trial.summary || {};
    const d = S.trial.detail;
    const h = num(t.health_score);
    const stat = (label, value, cls, id) => el('div', { class: 'stat' }, el('div', { class: 's-label', text: label }),
      el('div', { class: 's-value ' + (cls || ''), text: value, id }));
    const comps = (d.health && d.health.components) || {};
    const compKeys = Object.keys(comps).filter((k) => num(comps[k]) > 0.001);
    box.replaceChildren(...[
      el('div', { class: 'trial-head' },
        el('div', { class: 'trial-title' }, el('h1', { id: 'trial-title', text: S.trial.id }),
          el('div', { class: 'sub' }, pill(t.status), ' ',
            el('span', { text: [t.run_id && 'run ' + t.run_id, t.node_id && 'node ' + String(t.node_id).slice(0, 12), t.started && 'started ' + clock(t.started)].filter(Boolean).join(' · ') }))),
        el('div', { class: 'stats' },
          stat('Health', h == null ? '–' : h.toFixed(2), healthClass(h), 'trial-health'),
          stat('Iteration', t.iteration == null ? '–' : String(t.iteration), '', 'trial-iteration'),
          stat('Return', fmt(t.return), '', 'trial-return'),
          stat('Findings', String((t.critical || 0) + (t.warning || 0)), t.critical ? 'crit' : t.warning ? 'warn' : ''),
          stat('Interventions', String(t.interventions || 0)),
          stat('Updated', ago(t.updated || t.started)))),
      compKeys.length ? el('div', { class: 'components' }, el('span', { class: 'muted', text: 'health penalties:' }),
        compKeys.map((k) => el('span', { class: 'component', text: k + ' −' + fmt(comps[k], 2) }))) : null].filter(Boolean));
  }

  // ---- controls (only when the server has a token configured)
  function controlsPanel(id) {
    const c = S.controls || {};
    if (!c.enabled) return el('div', { class: 'hidden', id: 'controls' });
    const usable = !!c.usable;
    const token = el('input', { type: 'password', id: 'ctl-token', placeholder: 'Token', autocomplete: 'off', 'aria-label': 'Token' });
    token.value = sessionStorage.getItem('supervisor-token') || '';
    token.addEventListener('change', () => sessionStorage.setItem('supervisor-token', token.value));
    const reason = el('input', { type: 'text', class: 'reason', id: 'ctl-reason', placeholder: 'Reason (optional)', maxlength: '200' });
    const lr = el('input', { type: 'number', id: 'ctl-lr', placeholder: 'new lr', step: 'any', min: '0' });
    const msg = el('span', { class: 'ctl-msg', id: 'ctl-msg', text: usable ? '' : (c.note || '') });
    async function send(action, extra) {
      msg.className = 'ctl-msg'; msg.textContent = 'sending…';
      sessionStorage.setItem('supervisor-token', token.value);
      try {
        const r = await fetch('/api/action', {
          method: 'POST', cache: 'no-store',
          headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + token.value },
          body: JSON.stringify(Object.assign({ trial_id: id, action, reason: reason.value },
            S.trial && S.trial.module ? { module: S.trial.module } : {}, extra || {})),
        });
        let d = {}; try { d = await r.json(); } catch (e) { /* empty */ }
        if (r.ok) { msg.className = 'ctl-msg ok'; msg.textContent = 'Queued ' + d.queued.action + ': ' + (d.note || ''); }
        else { msg.className = 'ctl-msg err'; msg.textContent = r.status + ': ' + (d.error || r.statusText); }
      } catch (e) { msg.className = 'ctl-msg err'; msg.textContent = 'request failed: ' + e.message; }
    }
    function armed(label, action) {
      const b = el('button', { class: 'danger', id: 'ctl-' + action, text: label, disabled: !usable });
      let timer = 0;
      b.addEventListener('click', () => {
        if (!b.classList.contains('armed')) {
          b.classList.add('armed'); b.textContent = 'Confirm ' + label.toLowerCase();
          timer = setTimeout(() => { b.classList.remove('armed'); b.textContent = label; }, 4000);
          return;
        }
        clearTimeout(timer); b.classList.remove('armed'); b.textContent = label;
        send(action);
      });
      return b;
    }
    const setLr = el('button', { id: 'ctl-set_lr', text: 'Set lr', disabled: !usable });
    setLr.addEventListener('click', () => {
      const v = parseFloat(lr.value);
      if (!(v > 0)) { msg.className = 'ctl-msg err'; msg.textContent = 'enter a positive learning rate'; return; }
      send('set_lr', { lr: v });
    });
    return el('section', { class: 'panel', id: 'controls' },
      el('div', { class: 'panel-head' }, el('h2', { text: 'Manual controls' }),
        el('span', { class: 'count', text: 'applied before the trial\u2019s next iteration' })),
      el('div', { class: 'controls' }, token, reason, el('span', { class: 'sep' }), armed('Stop trial', 'stop_trial'),
        armed('Roll back', 'rollback'), el('span', { class: 'sep' }), lr, setLr, msg));
  }

  // ---- charts
  function seriesValues(rep, key, log) {
    const arr = rep.metrics[metricKey(rep, key)];
    if (!arr) return rep.seq.map(() => null);
    return arr.map((v) => {
      v = num(v);
      if (v == null || !Number.isFinite(v)) return null;
      if (log && v <= 0) return null;
      return v;
    });
  }

  function chartData(spec) {
    const rep = S.trial.detail.reports;
    return [rep.seq.slice(), ...spec.series.map((s) => seriesValues(rep, s[0], spec.log && s[4] !== 'y2'))];
  }

  function marks() {
    const d = S.trial.detail;
    const out = [];
    const iterToSeq = new Map();
    d.reports.seq.forEach((s, i) => iterToSeq.set(d.reports.iteration[i], s));
    const xOf = (o) => (o.seq != null ? o.seq : iterToSeq.get(o.iteration));
    for (const f of d.findings) {
      if (f.severity !== 'critical' && f.severity !== 'warning') continue;
      if (!inModule(f)) continue;
      const x = xOf(f);
      if (x == null) continue;
      out.push({ x, cls: f.severity, kind: 'finding', sev: f.severity, title: f.severity + ' · ' + f.detector + ' · iter ' + f.iteration + '\n' + f.message });
    }
    for (const iv of d.interventions) {
      if (!inModule(iv)) continue;
      const x = xOf(iv);
      if (x == null) continue;
      out.push({ x, cls: 'iv', kind: 'intervention', sev: 'action', title: 'intervention · ' + iv.action + paramsText(iv.params, ' (') + (paramsText(iv.params) ? ')' : '') + ' · iter ' + iv.iteration + '\n' + iv.reason + '\noutcome: ' + iv.outcome });
    }
    const z = { intervention: 0, warning: 1, critical: 2, action: 0 };
    return out.sort((a, b) => (z[a.sev] || 0) - (z[b.sev] || 0)); // criticals drawn last, on top
  }

  function drawMarks(u) {
    let layer = u.over.querySelector('.mk-layer');
    if (!layer) { layer = el('div', { class: 'mk-layer' }); u.over.append(layer); }
    const min = u.scales.x.min, max = u.scales.x.max;
    const nodes = [];
    if (S.trial && min != null) {
      for (const m of S.trial.marks || []) {
        if (m.x < min || m.x > max) continue;
        const left = u.valToPos(m.x, 'x');
        const d = el('div', { class: 'mk ' + m.cls, dataset: { kind: m.kind, severity: m.sev, x: String(m.x) } }, el('span', { class: 'mk-head', title: m.title }));
        d.style.left = left.toFixed(1) + 'px';
        nodes.push(d);
      }
    }
    layer.replaceChildren(...nodes);
  }

  function iterLabel(x) {
    const rep = S.trial && S.trial.detail.reports;
    if (x == null) return '–';
    if (!rep) return String(x);
    const i = rep.seq.indexOf(Math.round(x));
    return i >= 0 ? String(rep.iteration[i]) : '';
  }

  function lastValue(arr) {
    for (let i = (arr || []).length - 1; i >= 0; i--) if (arr[i] != null) return arr[i];
    return null;
  }

  function axisNum(v) {
    if (v == null) return '';
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(0).replace('e+', 'e');
    return String(+v.toPrecision(3));
  }

  function padRange(u, min, max) {
    if (min == null || max == null) return [0, 1];
    if (min === max) return min === 0 ? [0, 1] : [min - Math.abs(min) * 0.5, max + Math.abs(max) * 0.5];
    const pad = (max - min) * 0.08;
    return [min - pad, max + pad];
  }

  function buildCharts() {
    const box = $('charts');
    S.trial.marks = marks();
    const axis = { stroke: '#8a94a8', grid: { stroke: 'rgba(255,255,255,0.06)', width: 1 }, ticks: { stroke: 'rgba(255,255,255,0.1)', width: 1, size: 4 }, font: '11px system-ui, sans-serif' };
    for (const spec of CHARTS) {
      const body = el('div', { class: 'chart-body' });
      const empty = el('div', { class: 'chart-empty hidden', text: 'no data for these metrics yet' });
      const card = el('div', { class: 'chart', id: 'chart-' + spec.id, dataset: { chart: spec.id } },
        el('div', { class: 'chart-title' }, el('h3', { text: spec.title }), spec.unit ? el('span', { class: 'unit', text: spec.unit }) : null), body, empty);
      box.append(card);
      const hasY2 = spec.series.some((s) => s[4] === 'y2');
      const series = [{ label: 'iter', value: (u, v, si, idx) => iterLabel(idx == null ? lastValue(u.data[0]) : v) }].concat(spec.series.map((s) => ({
        label: s[1], stroke: PALETTE[s[2]], width: s[3] ? 1 : 1.6, dash: s[3] ? [4, 3] : undefined,
        scale: s[4] || 'y', spanGaps: !!s[5], points: { show: !!s[5], size: 5 },
        value: (u, v, si, idx) => fmt(idx == null ? lastValue(u.data[si]) : v),
      })));
      const axes = [
        Object.assign({}, axis, { values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? iterLabel(v) : '')) }),
        Object.assign({}, axis, { scale: 'y', size: 56, values: (u, splits) => splits.map(axisNum) }),
      ];
      if (hasY2) axes.push(Object.assign({}, axis, { scale: 'y2', side: 1, size: 52, grid: { show: false }, values: (u, splits) => splits.map(axisNum) }));
      const scales = { x: { time: false }, y: spec.log ? { distr: 3 } : { range: padRange } };
      if (hasY2) scales.y2 = { range: padRange };
      const width = Math.max(280, body.clientWidth || card.clientWidth - 20);
      const opts = {
        width, height: 210, series, axes, scales,
        cursor: { sync: { key: 'trial-' + S.trial.id }, drag: { x: true, y: false }, points: { size: 6 } },
        legend: { live: true },
        hooks: { draw: [drawMarks] },
      };
      const data = chartData(spec);
      const u = new uPlot(opts, data, body);
      S.trial.charts.push({ spec, u, card, empty });
      empty.classList.toggle('hidden', data.slice(1).some((a) => a.some((v) => v != null)));
    }
    if (window.ResizeObserver) {
      const ro = new ResizeObserver(() => {
        if (!S.trial) return;
        for (const c of S.trial.charts) {
          const w = c.card.clientWidth - 20;
          if (w > 100 && Math.abs(w - c.u.width) > 2) c.u.setSize({ width: w, height: 210 });
        }
      });
      ro.observe(box);
      S.trial.ro = ro;
    }
  }

  function updateCharts() {
    if (!S.trial || !S.trial.charts.length) return;
    S.trial.marks = marks();
    for (const c of S.trial.charts) {
      const data = chartData(c.spec);
      c.u.setData(data);
      c.empty.classList.toggle('hidden', data.slice(1).some((a) => a.some((v) => v != null)));
    }
    const box = $('charts');
    if (box) box.dataset.points = String(S.trial.detail.reports.seq.length);
  }

  function destroyCharts() {
    if (!S.trial) return;
    if (S.trial.ro) S.trial.ro.disconnect();
    for (const c of S.trial.charts) c.u.destroy();
    S.trial.charts = [];
  }

  // The trial's newest crash, explained (trial_crashed): exception, cause and evidence, innermost frames by origin.
  function crashPanel(c) {
    if (!c) return el('span');
    const where = [c.iteration != null ? 'iteration ' + c.iteration : null, c.node_id ? 'node ' + String(c.node_id).slice(0, 12) : null,
      c.phase ? 'phase ' + c.phase : null].filter(Boolean).join(', ');
    const frames = Object.entries(c.frames || {}).map(([origin, fs]) => el('li', null,
      el('strong', { text: origin + ': ' }),
      el('span', { class: 'mono', text: fs.map((f) => String(f.file || '?').split('/').pop() + ':' + f.line + ' ' + f.function).join(' \u2190 ') })));
    return el('section', { class: 'panel', id: 'crash' },
      el('div', { class: 'panel-head' }, el('h2', { text: 'Crash' + (c.crashes > 1 ? ' (' + c.crashes + ')' : '') }), el('span', { class: 'count', text: where })),
      el('div', { class: 'panel-body' },
        el('p', null, sev('critical'), ' ', el('span', { class: 'mono', text: c.exception + ': ' + (c.message || '') })),
        el('p', { text: 'Cause: ' + (c.cause_text || c.cause) }),
        (c.evidence || []).length > 1 ? el('ul', null, c.evidence.slice(1).map((e) => el('li', { text: e }))) : el('span'),
        el('ul', { class: 'frames' }, frames)));
  }

  // detectors left blind by metrics that never arrived (metrics_missing findings, live ones included)
  function renderBlind(findings) {
    const box = $('blind');
    if (!box) return;
    const blind = new Map();
    for (const f of findings) {
      if (f.detector !== 'metrics_missing' || !f.blind) continue;
      const pre = f.module == null || f.module === 'default_policy' ? '' : f.module + '/';  // a policy's, apart
      for (const [det, ms] of Object.entries(f.blind)) if (!blind.has(pre + det)) blind.set(pre + det, ms);
    }
    box.className = blind.size ? 'blind' : 'hidden';
    box.replaceChildren(...(blind.size ? [el('span', { class: 'muted', text: 'Blind detectors (their metrics never arrived):' }),
      ...[...blind].map(([det, ms]) => el('span', { class: 'component', title: 'waits for ' + ms.join(' or '), text: det + ' (' + ms.join(' or ') + ')' }))] : []));
  }

  function renderTrialEvents() {
    if (!S.trial) return;
    const d = S.trial.detail;
    const fBox = $('findings-table'), iBox = $('iv-table');
    if (!fBox || !iBox) return;
    const multi = S.trial.modules.length > 0;
    const modCell = (o) => (multi ? el('td', { class: 'mono', text: o.module == null ? 'trial' : o.module }) : null);
    const modHead = () => (multi ? el('th', { text: 'Module' }) : null);
    const shownF = d.findings.filter(inModule), shownI = d.interventions.filter(inModule);
    $('findings-count').textContent = String(shownF.length);
    renderBlind(d.findings);
    $('iv-count').textContent = String(shownI.length);
    const findings = shownF.slice().reverse();
    fBox.replaceChildren(findings.length
      ? el('table', { class: 'events', id: 'findings' },
        el('thead', null, el('tr', null, el('th', { class: 'num', text: 'Iter' }), modHead(), el('th', { text: 'Severity' }), el('th', { text: 'Detector' }),
          el('th', { text: 'Metric' }), el('th', { class: 'num', text: 'Value' }), el('th', { text: 'Message' }))),
        el('tbody', null, findings.map((f) => el('tr', null,
          el('td', { class: 'num', text: String(f.iteration) }), modCell(f), el('td', null, sev(f.severity)),
          el('td', { class: 'mono', text: f.detector }), el('td', { class: 'mono', text: f.metric || '–' }),
          el('td', { class: 'num', text: fmt(f.value) }), el('td', { class: 'msg', text: f.message })))))
      : el('div', { class: 'panel-body' }, el('div', { class: 'empty' }, el('strong', { text: 'No findings' }), 'Every detector is quiet on this trial.')));
    const ivs = shownI.slice().reverse();
    iBox.replaceChildren(ivs.length
      ? el('table', { class: 'events', id: 'interventions' },
        el('thead', null, el('tr', null, el('th', { class: 'num', text: 'Iter' }), modHead(), el('th', { text: 'Action' }), el('th', { text: 'Params' }),
          el('th', { text: 'Outcome' }), el('th', { text: 'Reason' }))),
        el('tbody', null, ivs.map((iv) => el('tr', null,
          el('td', { class: 'num', text: String(iv.iteration) }), modCell(iv), el('td', { class: 'mono', text: iv.action }),
          el('td', { class: 'params', text: paramsText(iv.params) || '–' }),
          el('td', null, el('span', { class: 'outcome ' + String(iv.outcome), text: iv.outcome }),
            iv.verified === true ? el('span', { class: 'muted', text: ' · verified' }) : iv.verified === false ? el('span', { class: 'muted', text: ' · not verified' }) : null),
          el('td', { class: 'msg', text: iv.reason })))))
      : el('div', { class: 'panel-body' }, el('div', { class: 'empty' }, el('strong', { text: 'No interventions' }), 'The supervisor has not needed to act on this trial.')));
  }

  // ------------------------------------------------------------------ routing + boot
  function route() {
    const h = location.hash || '#/';
    if (h.startsWith('#/trial/')) {
      let id;
      try { id = decodeURIComponent(h.slice('#/trial/'.length)); } catch (e) { id = null; }
      if (id != null) { openTrial(id); return; }
    }
    showOverview();
  }

  function tickTimes() {
    // relative times ("12s ago") refresh without re-rendering
    for (const n of document.querySelectorAll('[data-t]')) {
      const t = parseFloat(n.dataset.t);
      if (t) n.textContent = ago(t);
    }
  }

  function init() {
    // `supervise dashboard --token generate` prints a URL with #token=...: keep it for this tab, drop it from the URL
    const m = /^#token=([^&]+)$/.exec(location.hash);
    if (m) {
      sessionStorage.setItem('supervisor-token', decodeURIComponent(m[1]));
      history.replaceState(null, '', location.pathname + location.search + '#/');
    }
    $('feed-info').addEventListener('change', (e) => { S.showInfo = e.target.checked; renderFeed(); });
    window.addEventListener('hashchange', route);
    boot();
  }

  async function boot() {
    try {
      await loadState();
    } catch (e) {
      $('main').replaceChildren(el('div', { class: 'empty' }, el('strong', { text: 'Cannot reach the dashboard server' }), e.message));
      setTimeout(boot, 3000);
      return;
    }
    flush();
    connect();
    route();
    setInterval(tickTimes, 5000);
  }

  document.addEventListener('DOMContentLoaded', init);
})();
