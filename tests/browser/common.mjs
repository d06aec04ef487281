// What the browser tests (dashboard.mjs, instances.mjs) share: the plan
// named on the command line, a bounded run of named steps that ends by
// writing result.json, Debian's chromium through playwright-core, and the
// dashboard's sign-in and accounts page.
//
//   const { plan, out, base } = loadPlan();
//   const run = startRun(out, result, RUN_TIMEOUT_MS);
//   const page = await run.launch(plan, {});
//   await run.step('sign in', () => signIn(page, base, plan.token));
//   ... run.finish(0) (or 1: a step failed)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const STEP_TIMEOUT_MS = 20000;   // every wait of a step, unless it names its own
export const LAUNCH_TIMEOUT_MS = 60000; // the browser's start
export const POLL_MS = 250;             // until()'s pause between two looks
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--no-first-run', '--disable-quic', '--disable-sync', '--disable-dev-shm-usage',
];

// The plan (process.argv[2], written by tests/integration/test_web.py), its
// out_dir made, and its base_url ending in '/'.
export function loadPlan() {
  const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  fs.mkdirSync(plan.out_dir, { recursive: true });
  const base = plan.base_url.endsWith('/') ? plan.base_url : plan.base_url + '/';
  return { plan, out: plan.out_dir, base };
}

export function check(cond, what) {
  if (!cond) throw new Error(what);
}

// Poll fn() until it returns a truthy value (returned), at most ms.
export async function until(fn, ms, what) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > end) throw new Error('timed out waiting for ' + what + (last ? ' (last: ' + last + ')' : ''));
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

// A run bounded by runTimeoutMs (then it ends with exit status 2), whose
// steps go into result.steps.  run.finish(code) writes out/result.json (and
// whatever writeMore(out) writes), closes the browser, removes its profile
// and exits with code.
export function startRun(out, result, runTimeoutMs, writeMore = null) {
  const run = { context: null, userDataDir: null };
  const timer = setTimeout(() => {
    console.log('FAIL run: over ' + runTimeoutMs + ' ms');
    run.finish(2);
  }, runTimeoutMs);

  run.finish = (code) => {
    clearTimeout(timer);
    try {
      fs.writeFileSync(path.join(out, 'result.json'), JSON.stringify(result, null, 2));
      if (writeMore) writeMore(out);
    } catch (e) {
      console.log('cannot write results: ' + e.message);
    }
    const close = run.context ? run.context.close().catch(() => {}) : Promise.resolve();
    close.finally(() => {
      if (run.userDataDir) fs.rmSync(run.userDataDir, { recursive: true, force: true });
      process.exit(code);
    });
  };

  // One step: "ok <name>" or "FAIL <name>: why" printed, recorded with its
  // time and what fn returned (or the error, thrown on).
  run.step = async (name, fn) => {
    const t0 = Date.now();
    try {
      const detail = await fn();
      result.steps.push({ name, ok: true, ms: Date.now() - t0, detail: detail ?? null });
      console.log('ok   ' + name);
    } catch (e) {
      result.steps.push({ name, ok: false, ms: Date.now() - t0, detail: String(e && e.stack || e) });
      console.log('FAIL ' + name + ': ' + (e && e.message ? e.message.split('\n')[0] : e));
      throw e;
    }
  };

  // Chromium (plan.chromium, default /usr/bin/chromium) with a fresh
  // profile and `options` added to the context's; its first page.
  run.launch = async (plan, options) => {
    run.userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'p3b-chromium-'));
    run.context = await chromium.launchPersistentContext(run.userDataDir, {
      executablePath: plan.chromium || '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 860 },
      timeout: LAUNCH_TIMEOUT_MS,
      ...options,
    });
    run.context.setDefaultTimeout(STEP_TIMEOUT_MS);
    return run.context.pages()[0] || await run.context.newPage();
  };
  return run;
}

// On the sign-in form: the token entered (Enter), the accounts table shown.
export async function signIn(page, token) {
  await page.fill('#token', token);
  await page.press('#token', 'Enter');
  await page.locator('table.accounts').waitFor();
}

// The accounts page, its table shown.
export async function gotoAccounts(page, base) {
  await page.goto(base + '#/accounts');
  await page.locator('table.accounts').waitFor();
}
