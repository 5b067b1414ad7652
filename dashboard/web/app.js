// The hylab dashboard: plain JS, no build step. One HTML shell; the path picks the page:
//   /                   sweeps (progress, ETA)
//   /sweep/ID           trials table, curves, Pareto plot (and groups when the API has them)
//   /sweep/ID/layers    layer map: one row of T/M cells per trial, ordered by val_bpb
//   /trial/ID           config, provenance, curves, samples, run directory
// Data comes from the JSON API (/api/..., docs/DASHBOARD.md), polled every few seconds.
// Charts are Chart.js; window.hylab.charts names each chart and window.hylab.ready turns
// true after the first render (the browser test reads both).
'use strict';

const POLL_MS = 5000;
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
  '#7f7f7f', '#bcbd22', '#17becf'];
const X_AXES = { step: 'step', tokens: 'tokens', flops: 'FLOPs' };
const PARETO_AXES = {
  tok_per_s: 'training tok/s', decode_tok_per_s_b1: 'decode tok/s (batch 1)',
  peak_mem_gib: 'peak memory (GiB)', cache_bytes: 'inference cache (bytes)',
};
// Columns of the trials table (from /api/sweeps/ID) that the table leaves out.
const HIDDEN_COLUMNS = new Set(['sweep_id', 'sweep']);

window.hylab = { ready: false, charts: {} };

// ---- small helpers ----

async function api(path) {
  const res = await fetch('/api/' + path, { headers: { Accept: 'application/json' } });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

// el('td', {class: 'num'}, 'text', childNode, ...)
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function fmt(v) {
  if (v === null || v === undefined) return '';
  if (typeof v !== 'number') return typeof v === 'object' ? JSON.stringify(v) : String(v);
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e4) return String(v);
  if (a >= 1e12) return (v / 1e12).toFixed(2) + 'T';
  if (a >= 1e9) return (v / 1e9).toFixed(2) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(2) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'K';
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(2);
  return v.toFixed(4);
}

function duration(s) {
  if (s === null || s === undefined) return '';
  s = Math.round(s);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

function when(unix) { return unix ? new Date(unix * 1000).toLocaleString() : ''; }

function stateBadge(state) { return el('span', { class: 'state ' + state }, state); }

function setCrumbs(...links) {
  const nav = document.getElementById('crumbs');
  nav.replaceChildren(...links.map(([text, href]) => href ? el('a', { href }, text) : el('span', {}, text)));
}

function setStatus(text, isError) {
  const s = document.getElementById('status');
  s.textContent = text;
  s.className = isError ? 'error' : '';
}

// Creates or updates a named chart in place (keeps zoom-free redraws cheap while polling).
function chart(id, canvas, config) {
  const existing = window.hylab.charts[id];
  if (existing && existing.canvas === canvas) {
    existing.data = config.data;
    existing.options = config.options;
    existing.update('none');
    return existing;
  }
  if (existing) existing.destroy();
  const c = new Chart(canvas, config);
  window.hylab.charts[id] = c;
  return c;
}

function lineOptions(xTitle, yTitle, showLegend) {
  return {
    animation: false, parsing: false, normalized: true, responsive: true, maintainAspectRatio: false,
    elements: { point: { radius: 0, hitRadius: 6 }, line: { borderWidth: 1.5 } },
    interaction: { mode: 'nearest', intersect: false },
    scales: { x: { type: 'linear', title: { display: true, text: xTitle } },
      y: { title: { display: true, text: yTitle } } },
    plugins: { legend: { display: showLegend, position: 'right' } },
  };
}

// A series' x for a step: the step, tokens seen (step x tokens per step) or FLOPs.
function xOf(series, step, axis) {
  if (axis === 'step') return step;
  const tokens = step * series.tokens_per_step;
  return axis === 'tokens' ? tokens : (series.flops_per_token === null ? null : tokens * series.flops_per_token);
}

// ---- page: sweeps ----

async function sweepsPage(main) {
  setCrumbs(['sweeps']);
  const sweeps = await api('sweeps');
  const rows = sweeps.map(s => el('tr', {},
    el('td', { class: 'num' }, s.sweep_id),
    el('td', {}, el('a', { href: '/sweep/' + s.sweep_id }, s.name)),
    el('td', {}, stateBadge(s.state)),
    el('td', {}, el('div', { class: 'bar', title: (100 * s.progress).toFixed(1) + ' %' },
      el('div', { style: 'width:' + (100 * s.progress).toFixed(1) + '%' })),
    el('span', { class: 'muted' }, ' ' + (100 * s.progress).toFixed(0) + ' %')),
    el('td', { class: 'num' }, s.trials),
    el('td', {}, [['succeeded', s.succeeded], ['running', s.running], ['pending', s.pending],
      ['failed', s.failed], ['stopped', s.stopped]].filter(([, n]) => n > 0)
      .map(([k, n]) => el('span', { class: 'count ' + k }, n + ' ' + k))),
    el('td', {}, duration(s.elapsed_s)),
    el('td', {}, s.eta_s === null ? (s.state === 'running' ? '…' : '') : duration(s.eta_s)),
    el('td', { class: 'muted' }, when(s.created_at)),
    el('td', {}, el('a', { href: '/sweep/' + s.sweep_id + '/layers' }, 'layer map'))));
  main.replaceChildren(el('h1', {}, 'Sweeps'),
    sweeps.length === 0 ? el('p', { class: 'muted' }, 'No sweeps in this database yet.') :
      el('table', { id: 'sweeps' },
        el('thead', {}, el('tr', {}, ['id', 'name', 'state', 'progress', 'trials', 'states', 'elapsed',
          'ETA', 'created', ''].map(h => el('th', {}, h)))),
        el('tbody', {}, rows)));
}

// ---- page: one sweep ----

const sweepView = { sort: 'val_bpb', desc: false, filter: '', state: '', xAxis: 'step', paretoX: 'tok_per_s',
  hidden: new Set() };

function trialsTable(sweep) {
  const cols = sweep.columns.filter(c => !HIDDEN_COLUMNS.has(c));
  const needle = sweepView.filter.toLowerCase();
  let trials = sweep.trials.filter(t => (!sweepView.state || t.state === sweepView.state) &&
    (!needle || cols.some(c => fmt(t[c]).toLowerCase().includes(needle))));
  const key = sweepView.sort, sign = sweepView.desc ? -1 : 1;
  trials = trials.slice().sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1;
    if (y === null || y === undefined) return -1;
    return sign * (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y)));
  });
  const head = el('tr', {}, el('th', { title: 'show in the curves' }, 'plot'), cols.map(c => el('th', {
    class: 'sortable' + (c === key ? (sweepView.desc ? ' desc' : ' asc') : ''), 'data-col': c,
    on: { click: () => { sweepView.desc = c === key ? !sweepView.desc : false; sweepView.sort = c; render(); } },
  }, c)));
  const body = trials.map(t => el('tr', { 'data-trial': t.trial_id },
    el('td', {}, el('input', { type: 'checkbox', checked: !sweepView.hidden.has(t.trial_id), on: { change: e => {
      if (e.target.checked) sweepView.hidden.delete(t.trial_id); else sweepView.hidden.add(t.trial_id);
      render();
    } } })),
    cols.map(c => el('td', { class: typeof t[c] === 'number' ? 'num' : '' },
      c === 'trial_id' ? el('a', { href: '/trial/' + t.trial_id }, t.trial_id) :
        c === 'state' ? stateBadge(t.state) : fmt(t[c])))));
  return el('div', { class: 'scroll' }, el('table', { id: 'trials' }, el('thead', {}, head), el('tbody', {}, body)),
    el('p', { class: 'muted' }, trials.length + ' of ' + sweep.trials.length + ' trials shown'));
}

function curveChart(id, canvas, curves, yTitle, colorOf) {
  const datasets = curves.trials.filter(s => !sweepView.hidden.has(s.trial_id)).map(s => ({
    label: '#' + s.trial_id + ' ' + s.block_pattern,
    borderColor: colorOf(s.trial_id), backgroundColor: colorOf(s.trial_id),
    data: s.points.map(([step, v]) => ({ x: xOf(s, step, sweepView.xAxis), y: v })).filter(p => p.x !== null),
  })).filter(d => d.data.length > 0);
  chart(id, canvas, { type: 'line', data: { datasets },
    options: lineOptions(X_AXES[sweepView.xAxis], yTitle, datasets.length <= 12) });
}

// Pareto: val_bpb against the chosen axis; the front (from /api/sweeps/ID/pareto) highlighted.
function paretoChart(canvas, pareto) {
  const pts = pareto.points.map(p => ({ x: p.x, y: p.y, trial_id: p.trial_id, front: p.front }));
  const front = pts.filter(p => p.front).sort((a, b) => a.x - b.x);
  const rest = pts.filter(p => !p.front);
  const options = lineOptions(PARETO_AXES[sweepView.paretoX], 'val_bpb', true);
  options.elements.point.radius = 4;
  options.interaction = { mode: 'nearest', intersect: true };
  options.plugins.tooltip = { callbacks: { label: c => '#' + c.raw.trial_id + ': ' + fmt(c.raw.x) + ', ' +
    fmt(c.raw.y) } };
  options.onClick = (e, items) => { if (items.length) location.href = '/trial/' + items[0].element.$context.raw.trial_id; };
  chart('pareto', canvas, { type: 'scatter', data: { datasets: [
    { label: 'Pareto front', data: front, showLine: true, borderColor: '#d62728', backgroundColor: '#d62728',
      pointRadius: 6 },
    { label: 'other trials', data: rest, borderColor: '#7f7f7f', backgroundColor: '#9e9e9e' },
  ] }, options });
}

function groupsTable(groups) {
  if (!groups || !groups.groups) return null;
  const keys = groups.group_by;
  return el('div', { class: 'scroll' }, el('table', { id: 'groups' },
    el('thead', {}, el('tr', {}, keys.map(k => el('th', {}, k)),
      ['n', 'trials', groups.metric + ' mean ± std', 'mark', 'p vs best', 'note'].map(h => el('th', {}, h)))),
    el('tbody', {}, groups.groups.map(g => el('tr', { class: g.mark === 'best' ? 'mark-best' : g.mark === 'worse' ? 'mark-worse' : '' },
      keys.map(k => el('td', {}, fmt(g.key[k]))),
      el('td', { class: 'num' }, g.n), el('td', { class: 'num' }, g.trials),
      el('td', { class: 'num' }, g.mean === null ? '' : fmt(g.mean) + (g.std === null ? '' : ' ± ' + fmt(g.std))),
      el('td', {}, g.mark), el('td', { class: 'num' }, g.p_vs_best === null ? '' : g.p_vs_best.toPrecision(2)),
      el('td', { class: 'muted' }, g.note))))),
  el('p', { class: 'muted', id: 'groups-footer' }, groups.footer || ''));
}

function select(options, value, onChange, id) {
  return el('select', { id, on: { change: e => onChange(e.target.value) } },
    Object.entries(options).map(([v, text]) => el('option', { value: v, selected: v === value }, text)));
}

// Builds a page's fixed parts once (controls keep focus, canvases keep their charts); later
// polls only refill the parts named by id.
function skeleton(main, key, build) {
  if (main.dataset.page !== key) {
    main.dataset.page = key;
    main.replaceChildren(...build());
  }
  return id => main.querySelector('#' + id);
}

async function sweepPage(main, id) {
  const [sweep, loss, bpb, pareto, groups] = await Promise.all([
    api('sweeps/' + id), api('sweeps/' + id + '/curves?metric=train_loss'),
    api('sweeps/' + id + '/curves?metric=val_bpb'), api('sweeps/' + id + '/pareto?x=' + sweepView.paretoX),
    api('sweeps/' + id + '/groups')]);
  setCrumbs(['sweeps', '/'], [sweep.name + ' (#' + id + ')']);
  const index = new Map(sweep.trials.map((t, i) => [t.trial_id, i]));
  const colorOf = tid => PALETTE[(index.get(tid) || 0) % PALETTE.length];
  const part = skeleton(main, 'sweep/' + id, () => [
    el('h1', { id: 'title' }), el('p', { id: 'summary' }),
    el('h2', {}, 'Trials'),
    el('div', { id: 'controls' },
      el('input', { type: 'search', id: 'filter', placeholder: 'filter trials…', value: sweepView.filter,
        on: { input: e => { sweepView.filter = e.target.value; render(); } } }),
      select({ '': 'any state', pending: 'pending', running: 'running', succeeded: 'succeeded', failed: 'failed',
        diverged: 'diverged', oom: 'oom', stopped: 'stopped', cancelled: 'cancelled' }, sweepView.state,
      v => { sweepView.state = v; render(); })),
    el('div', { id: 'trials-box' }),
    el('div', { id: 'groups-box' }),
    el('h2', {}, 'Curves against ', select(X_AXES, sweepView.xAxis, v => { sweepView.xAxis = v; render(); },
      'x-axis')),
    el('div', { class: 'charts' }, el('div', { class: 'chart' }, el('canvas', { id: 'chart-loss' })),
      el('div', { class: 'chart' }, el('canvas', { id: 'chart-bpb' }))),
    el('h2', {}, 'Pareto: val_bpb against ', select(PARETO_AXES, sweepView.paretoX,
      v => { sweepView.paretoX = v; render(); }, 'pareto-x')),
    el('div', { class: 'charts' }, el('div', { class: 'chart wide' }, el('canvas', { id: 'chart-pareto' })))]);
  part('title').replaceChildren(sweep.name + ' ', stateBadge(sweep.state));
  const eta = sweep.eta_s === null ? '' : ', ETA ' + duration(sweep.eta_s);
  part('summary').replaceChildren((100 * sweep.progress).toFixed(0) + ' % done (' + sweep.succeeded +
    ' succeeded, ' + sweep.running + ' running, ' + sweep.pending + ' pending, ' + sweep.failed + ' failed, ' +
    sweep.stopped + ' stopped), ' + duration(sweep.elapsed_s) + ' elapsed' + eta + ' · ',
  el('a', { href: '/sweep/' + id + '/layers' }, 'layer map'),
  ' · metric ' + sweep.metric.name + ' (' + sweep.metric.goal + ')');
  part('trials-box').replaceChildren(trialsTable(sweep));
  part('groups-box').replaceChildren(...(groups ? [el('h2', {}, 'Groups by ' + groups.group_by.join(', ')),
    groupsTable(groups)] : []));
  curveChart('loss', part('chart-loss'), loss, 'train loss', colorOf);
  curveChart('bpb', part('chart-bpb'), bpb, 'val bpb', colorOf);
  paretoChart(part('chart-pareto'), pareto);
}

// ---- page: layer map ----

async function layersPage(main, id) {
  const [sweep, rows] = await Promise.all([api('sweeps/' + id), api('sweeps/' + id + '/layers')]);
  setCrumbs(['sweeps', '/'], [sweep.name + ' (#' + id + ')', '/sweep/' + id], ['layer map']);
  const depth = Math.max(0, ...rows.map(r => r.layers.length));
  const head = el('tr', {}, el('th', {}, 'rank'), el('th', {}, 'trial'), el('th', {}, 'val_bpb'),
    el('th', {}, 'state'), el('th', { class: 'cells' }, Array.from({ length: depth }, (_, i) => el('span',
      { class: 'cell idx' }, i))));
  const body = rows.map((r, i) => el('tr', { class: 'layer-row', 'data-trial': r.trial_id },
    el('td', { class: 'num' }, r.val_bpb === null ? '' : i + 1),
    el('td', {}, el('a', { href: '/trial/' + r.trial_id }, '#' + r.trial_id)),
    el('td', { class: 'num' }, fmt(r.val_bpb)), el('td', {}, stateBadge(r.state)),
    el('td', { class: 'cells', title: r.block_pattern },
      Array.from(r.layers, (l, k) => el('span', { class: 'cell ' + l, title: 'layer ' + k + ': ' +
        (l === 'T' ? 'attention' : 'Mamba') }, l)))));
  main.replaceChildren(el('h1', {}, 'Layer map: ' + sweep.name),
    el('p', { class: 'muted' }, 'One row per trial, best val_bpb first; ', el('span', { class: 'cell T' }, 'T'),
      ' attention, ', el('span', { class: 'cell M' }, 'M'), ' Mamba; layer 0 is nearest the embedding.'),
    el('table', { id: 'layers' }, el('thead', {}, head), el('tbody', {}, body)));
}

// ---- page: one trial ----

// Key/value pairs as a grid that flows into as many columns as fit.
function kvTable(id, obj) {
  const entries = Object.entries(obj || {});
  if (entries.length === 0) return el('p', { class: 'muted' }, 'not recorded');
  return el('div', { id, class: 'kv' }, entries.map(([k, v]) => el('div', { class: 'kv-row' },
    el('span', { class: 'k' }, k), el('span', { class: 'v' }, Array.isArray(v) ? v.join(', ') : fmt(v)))));
}

const TRIAL_CHARTS = ['train_loss', 'val_bpb', 'lr', 'tok_per_s'];

async function trialPage(main, id) {
  const [t, curves] = await Promise.all([api('trials/' + id), api('trials/' + id + '/curves')]);
  const tr = t.trial, s = t.summary || {};
  const sweepLink = t.sweep ? [t.sweep.name + ' (#' + t.sweep.sweep_id + ')', '/sweep/' + t.sweep.sweep_id] : ['?'];
  setCrumbs(['sweeps', '/'], sweepLink, ['trial ' + id]);
  const part = skeleton(main, 'trial/' + id, () => [
    el('h1', { id: 'title' }), el('p', { id: 'pattern' }), el('p', { id: 'run-dir-line' }), el('div', { id: 'figures-box' }),
    el('h2', {}, 'Curves'),
    el('div', { class: 'charts' }, TRIAL_CHARTS.map(m => el('div', { class: 'chart', id: 'box-' + m },
      el('canvas', { id: 'chart-trial-' + m })))),
    el('h2', {}, 'Samples'), el('div', { id: 'samples-box' }),
    el('h2', {}, 'Provenance'), el('div', { id: 'provenance-box' }),
    el('h2', {}, 'Config'), el('div', { id: 'config-box' }),
    el('h2', {}, 'Attempts'), el('div', { id: 'attempts-box' })]);
  const figures = { val_bpb: s.final_val_bpb, val_bpb_2x: s.val_bpb_2x, val_bpb_4x: s.val_bpb_4x,
    recall_acc: s.recall_acc, train_loss: s.final_train_loss, params: s.params_total, steps: s.steps,
    'tok/s': s.tok_per_s, mfu: s.mfu, 'peak mem GiB': s.peak_mem_gib, 'decode tok/s b1': s.decode_tok_per_s_b1,
    'decode tok/s b32': s.decode_tok_per_s_b32, 'cache bytes': s.cache_bytes, 'time s': s.total_time_s,
    'disk bytes': s.disk_bytes };
  const rd = t.run_dir;
  part('title').replaceChildren('Trial ' + id + ' ', stateBadge(tr.state));
  part('pattern').replaceChildren(el('code', {}, tr.block_pattern), ' · ',
    Object.entries(t.params).map(([k, v]) => k + '=' + fmt(v)).join(' '),
    tr.reason ? el('span', { class: 'muted' }, ' · ' + tr.reason) : '');
  part('run-dir-line').replaceChildren('run directory: ', el('code', { id: 'run-dir' }, rd.resolved || rd.path || '(none)'),
    rd.exists ? '' : el('span', { class: 'muted' }, ' (not found on this machine; pass --work_dir)'));
  part('figures-box').replaceChildren(kvTable('figures',
    Object.fromEntries(Object.entries(figures).filter(([, v]) => v !== undefined && v !== null))));
  part('samples-box').replaceChildren(t.samples.length ? el('ul', { id: 'samples' }, t.samples.map(x => el('li', {}, x))) :
    el('p', { class: 'muted' }, 'none (the trainer writes samples when sample_every > 0)'));
  part('provenance-box').replaceChildren(kvTable('provenance', t.provenance));
  part('config-box').replaceChildren(kvTable('config', t.config));
  part('attempts-box').replaceChildren(el('table', { id: 'attempts' }, el('thead', {}, el('tr', {}, ['attempt', 'worker',
    'state', 'exit', 'started', 'finished', 'reason'].map(h => el('th', {}, h)))),
  el('tbody', {}, t.attempts.map(a => el('tr', {}, el('td', { class: 'num' }, a.attempt), el('td', {}, a.worker_id),
    el('td', {}, stateBadge(a.state)), el('td', { class: 'num' }, fmt(a.exit_code)), el('td', {}, when(a.started_at)),
    el('td', {}, when(a.finished_at)), el('td', {}, a.reason,
      a.log_tail ? el('details', {}, el('summary', {}, 'log tail'), el('pre', {}, a.log_tail)) : null))))));
  TRIAL_CHARTS.forEach((m, i) => {
    const points = curves.metrics[m] || [];
    part('box-' + m).hidden = points.length === 0;
    chart('trial-' + m, part('chart-trial-' + m), { type: 'line', data: { datasets: [{ label: m,
      borderColor: PALETTE[i], backgroundColor: PALETTE[i], data: points.map(([step, v]) => ({ x: step, y: v })) }] },
    options: lineOptions('step', m, false) });
  });
}

// ---- routing and polling ----

function route() {
  const p = location.pathname;
  let m;
  if ((m = p.match(/^\/sweep\/(\d+)\/layers$/))) return main => layersPage(main, m[1]);
  if ((m = p.match(/^\/sweep\/(\d+)$/))) return main => sweepPage(main, m[1]);
  if ((m = p.match(/^\/trial\/(\d+)$/))) return main => trialPage(main, m[1]);
  return sweepsPage;
}

let rendering = null, again = false;
async function render() {
  if (rendering) {  // one render at a time; a click during one renders once more after it
    again = true;
    return rendering;
  }
  const main = document.getElementById('main');
  rendering = (async () => {
    try {
      if (typeof Chart === 'undefined') throw new Error('the chart library did not load (run scripts/fetch_web.sh)');
      await route()(main);
      setStatus('updated ' + new Date().toLocaleTimeString(), false);
      window.hylab.ready = true;
    } catch (e) {
      setStatus(e.message, true);
      console.error('dashboard: ' + e.message);
    } finally {
      rendering = null;
      if (again) {
        again = false;
        render();
      }
    }
  })();
  return rendering;
}

render();
setInterval(render, POLL_MS);
