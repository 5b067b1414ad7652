// Drives Debian's chromium (headless, through playwright-core) over every dashboard page and
// prints what a person would see, one JSON object per line, for browser_test.cpp to check:
//   {"page": NAME, "errors": [...], "charts": {id: points}, "rows": N, ...}
// Errors are console errors, uncaught exceptions, failed requests and HTTP statuses >= 400.
// Between the sweep page and the live check it prints {"waiting": "update"} and waits for
// the file GO_FILE: the test adds a metric point to the database meanwhile, and the open
// sweep page must draw it without a reload (polling).
//
//   node browser_check.js URL SWEEP_ID TRIAL_ID GO_FILE [SCREENSHOT_DIR]
// Env: HYLAB_CHROMIUM (default /usr/bin/chromium); NODE_PATH must reach playwright-core.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [url, sweepId, trialId, goFile, shotDir] = process.argv.slice(2);
const TIMEOUT_MS = 30000;

const t0 = Date.now();
function say(obj) { process.stdout.write(JSON.stringify({ ...obj, t: (Date.now() - t0) / 1000 }) + '\n'); }

async function sleep(ms) { return new Promise(r => setTimeout(r, ms)); }

// Points per chart, as drawn: the sum of the datasets' lengths of each Chart.js instance.
async function chartPoints(page) {
  return page.evaluate(() => Object.fromEntries(Object.entries(window.hylab.charts).map(([id, c]) =>
    [id, c.data.datasets.reduce((n, d) => n + d.data.length, 0)])));
}

async function open(context, name, route) {
  const page = await context.newPage();
  const errors = [];
  page.on('console', m => { if (m.type() === 'error') errors.push('console: ' + m.text()); });
  page.on('pageerror', e => errors.push('exception: ' + e.message));
  page.on('requestfailed', r => errors.push('request failed: ' + r.url() + ' ' + (r.failure() || {}).errorText));
  page.on('response', r => { if (r.status() >= 400) errors.push('HTTP ' + r.status() + ': ' + r.url()); });
  await page.goto(url + route, { waitUntil: 'load', timeout: TIMEOUT_MS });
  try {
    await page.waitForFunction(() => window.hylab && window.hylab.ready, null, { timeout: TIMEOUT_MS });
  } catch (e) {
    throw new Error(name + ' page never got ready: ' + e.message + '\nerrors: ' + JSON.stringify(errors));
  }
  return { page, errors, name };
}

async function shoot(p) {
  if (!shotDir) return;
  fs.mkdirSync(shotDir, { recursive: true });
  await p.page.screenshot({ path: path.join(shotDir, p.name + '.png'), fullPage: true });
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hylab-chromium-'));
  // launchPersistentContext: a fresh, empty --user-data-dir of our own.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.HYLAB_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 600 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    // Sweeps.
    let p = await open(context, 'sweeps', '/');
    say({ page: 'sweeps', errors: p.errors, rows: await p.page.locator('#sweeps tbody tr').count(),
      progress: await p.page.locator('#sweeps tbody tr').first().locator('.bar').getAttribute('title') });
    await shoot(p);
    await p.page.close();

    // The sweep: table, curves, Pareto; then sorting, filtering and a live update.
    p = await open(context, 'sweep', '/sweep/' + sweepId);
    const sweepRows = await p.page.locator('#trials tbody tr').count();
    say({ page: 'sweep', errors: p.errors, charts: await chartPoints(p.page), rows: sweepRows,
      groups: await p.page.$$eval('#groups tbody tr', rs => rs.map(r => Array.from(r.cells, c => c.textContent))) });
    await shoot(p);

    await p.page.click('#trials th[data-col="trial_id"]');  // by trial_id, then val_bpb ascending
    await p.page.waitForSelector('#trials th.asc[data-col="trial_id"]');
    await p.page.click('#trials th[data-col="val_bpb"]');
    await p.page.waitForSelector('#trials th.asc[data-col="val_bpb"]');
    const asc = await p.page.$$eval('#trials tbody tr', rs => rs.map(r => Number(r.dataset.trial)));
    await p.page.click('#trials th[data-col="val_bpb"]');  // descending
    await p.page.waitForSelector('#trials th.desc[data-col="val_bpb"]');
    const desc = await p.page.$$eval('#trials tbody tr', rs => rs.map(r => Number(r.dataset.trial)));
    const firstPattern = await p.page.locator('#trials tbody tr').first().getAttribute('data-trial');
    await p.page.fill('#filter', 'no trial matches this');
    await p.page.waitForFunction(() => document.querySelectorAll('#trials tbody tr').length === 0);
    await p.page.fill('#filter', '');
    await p.page.waitForFunction(n => document.querySelectorAll('#trials tbody tr').length === n, sweepRows);
    say({ page: 'sweep-sorting', errors: p.errors, asc, desc, first: Number(firstPattern) });

    // The curves against FLOPs: the same points, x = step x tokens per step x FLOPs per token.
    await p.page.selectOption('#x-axis', 'flops');
    await p.page.waitForFunction(() => window.hylab.charts.loss.options.scales.x.title.text === 'FLOPs');
    const flops = await p.page.evaluate(() => window.hylab.charts.loss.data.datasets.map(d => ({
      label: d.label, last: d.data[d.data.length - 1] })));
    await p.page.selectOption('#x-axis', 'step');
    await p.page.waitForFunction(() => window.hylab.charts.loss.options.scales.x.title.text === 'step');
    say({ page: 'sweep-flops', errors: p.errors, points: (await chartPoints(p.page)).loss, flops });

    const before = (await chartPoints(p.page)).loss;
    say({ waiting: 'update' });
    for (let i = 0; i < TIMEOUT_MS / 100 && !fs.existsSync(goFile); ++i) await sleep(100);
    await p.page.waitForFunction(n => window.hylab.charts.loss &&
      window.hylab.charts.loss.data.datasets.reduce((k, d) => k + d.data.length, 0) > n, before, { timeout: TIMEOUT_MS });
    say({ page: 'sweep-live', errors: p.errors, before, after: (await chartPoints(p.page)).loss });
    await p.page.close();

    // Layer map.
    p = await open(context, 'layers', '/sweep/' + sweepId + '/layers');
    say({ page: 'layers', errors: p.errors,
      order: await p.page.$$eval('tr.layer-row', rs => rs.map(r => Number(r.dataset.trial))),
      cells: await p.page.$$eval('tr.layer-row', rs => rs.map(r =>
        Array.from(r.querySelectorAll('.cell'), c => c.textContent).join(''))) });
    await shoot(p);
    await p.page.close();

    // A trial.
    p = await open(context, 'trial', '/trial/' + trialId);
    say({ page: 'trial', errors: p.errors, charts: await chartPoints(p.page),
      samples: await p.page.locator('#samples li').count(),
      config_rows: await p.page.locator('#config .kv-row').count(),
      run_dir: await p.page.locator('#run-dir').textContent() });
    await shoot(p);
    await p.page.close();
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => say({ done: true }), e => { say({ fatal: String(e && e.stack || e) }); process.exit(1); });
