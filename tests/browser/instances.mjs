// The instances panel of the accounts page (web/js/views/accounts.js) in
// Debian's chromium through playwright-core, against two bridge instances
// sharing one PostgreSQL store.
//
//   node tests/browser/instances.mjs PLAN.json
//
// PLAN (written by tests/integration/test_web.py):
//   base_url        the dashboard of the instance that stays ("http://127.0.0.1:PORT/")
//   token           a token it accepts
//   out_dir         screenshots (<step>.png) and result.json
//   chromium        the browser binary (default /usr/bin/chromium)
//   instances       [{id, public_url}, ...]: the two instances; the second is
//                   the one killed
//   accounts        every account name (each is polled by one instance)
//
// Steps: both instances listed, with a recent heartbeat, their API URL, and
// between them every account, each once; an account's poll history (on the
// instance that stays) names the instance holding it in its Instance column;
// then the script prints "ready" and
// waits for a line on stdin (the caller has killed the second instance with
// kill -9): the killed instance's row goes away once its heartbeat is older
// than store.lease, the survivor's heartbeat moves on, and it takes every
// account over.  Prints "ok <step>" / "FAIL <step>: why"; exit status 0 when
// every step passed.  Every wait is bounded (STEP_TIMEOUT_MS, KILL_WAIT_MS);
// the whole run by RUN_TIMEOUT_MS.  The run, the browser and the sign-in:
// common.mjs.

import path from 'node:path';
import readline from 'node:readline';
import { check, gotoAccounts, loadPlan, signIn, startRun, until, STEP_TIMEOUT_MS } from './common.mjs';

const KILL_WAIT_MS = 30000;     // store.lease (3 s) + the page's refresh (5 s), with room
const RUN_TIMEOUT_MS = 120000;

const { plan, out, base } = loadPlan();
const [stays, killed] = plan.instances;
const result = { ok: false, steps: [], page_errors: [], console_errors: [] };
const run = startRun(out, result, RUN_TIMEOUT_MS);
const step = run.step;

function nextLine() {
  const rl = readline.createInterface({ input: process.stdin });
  return new Promise((resolve) => rl.once('line', (l) => { rl.close(); resolve(l); }));
}

// The panel as the person sees it: {id: {host, api, started, heartbeat (ms), accounts}}.
async function panel(page) {
  return page.evaluate(() => {
    const rows = {};
    for (const tr of document.querySelectorAll('#instances-body table.instances tbody tr')) {
      const td = tr.querySelectorAll('td');
      const hb = td[4] && td[4].querySelector('time');
      const acc = td[5] ? td[5].textContent.trim() : '';
      rows[tr.dataset.instance] = {
        host: td[1] ? td[1].textContent.trim() : '',
        api: td[2] ? td[2].textContent.trim() : '',
        heartbeat: hb ? Date.parse(hb.getAttribute('datetime')) : NaN,
        heartbeat_text: td[4] ? td[4].textContent.trim() : '',
        accounts: acc === '—' || acc === '' ? [] : acc.split(',').map((s) => s.trim()),
      };
    }
    return rows;
  });
}

function allAccounts(rows, ids) {
  const seen = ids.flatMap((id) => (rows[id] ? rows[id].accounts : []));
  return JSON.stringify([...seen].sort()) === JSON.stringify([...plan.accounts].sort());
}

async function main() {
  const page = await run.launch(plan, {});
  page.on('pageerror', (e) => result.page_errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') result.console_errors.push(m.text()); });

  await step('sign in', async () => {
    await page.goto(base);
    await page.locator('#sign-in').waitFor();
    await signIn(page, plan.token);
  });

  let before = null;
  await step('both instances listed with their accounts and heartbeat', async () => {
    await gotoAccounts(page, base);
    const rows = await until(async () => {
      const r = await panel(page);
      return Object.keys(r).length === 2 && r[stays.id] && r[killed.id] && allAccounts(r, [stays.id, killed.id]) ? r : null;
    }, STEP_TIMEOUT_MS, 'two rows holding every account between them');
    const title = await page.locator('#instances-body table.instances caption').textContent().catch(() => '');
    check(/postgresql/.test(title), 'the panel names the store: ' + title);
    for (const i of plan.instances) {
      const r = rows[i.id];
      check(r.api === i.public_url, i.id + ': API ' + r.api);
      check(Math.abs(Date.now() - r.heartbeat) < 15000, i.id + ': a recent heartbeat: ' + r.heartbeat_text);
      check(r.heartbeat_text && !/never/.test(r.heartbeat_text), i.id + ': the heartbeat shown: ' + r.heartbeat_text);
    }
    await page.screenshot({ path: path.join(out, 'instances-both.png'), fullPage: true });
    before = rows;
    return rows;
  });

  await step('an account\'s poll history names the instance that polled it', async () => {
    // an account the other instance holds, if it holds one: this instance
    // answers from what that one saved
    const holder = before[killed.id].accounts.length ? killed.id : stays.id;
    const account = before[holder].accounts[0];
    await page.goto(base + '#/accounts/' + encodeURIComponent(account) + '/details');
    const cell = page.locator('table.polls tbody tr').first().locator('td.poll-instance');
    let shown = null;
    // polled every second: the newest poll is the holder's once it has polled it
    await until(async () => {
      if (shown !== null) await page.locator('#account-refresh').click();
      shown = (await cell.count()) ? (await cell.textContent()).trim() : '';
      return shown === holder;
    }, STEP_TIMEOUT_MS, account + '\'s newest poll by ' + holder);
    const th = await page.locator('table.polls th.poll-instance').textContent();
    check(th.trim() === 'Instance', 'the column\'s heading: ' + th);
    await page.screenshot({ path: path.join(out, 'instances-poll-history.png'), fullPage: true });
    await gotoAccounts(page, base);
    return { account, instance: shown };
  });

  console.log('ready');
  const line = await nextLine();
  check(line.trim() === 'killed', 'the caller said ' + JSON.stringify(line));

  await step('the killed instance goes away after its lease; the other takes its accounts', async () => {
    const t0 = Date.now();
    const rows = await until(async () => {
      const r = await panel(page);
      return Object.keys(r).length === 1 && r[stays.id] && allAccounts(r, [stays.id]) &&
        r[stays.id].heartbeat > before[stays.id].heartbeat ? r : null;
    }, KILL_WAIT_MS, 'one row, the survivor, holding every account, its heartbeat newer');
    await page.screenshot({ path: path.join(out, 'instances-after-kill.png'), fullPage: true });
    return { rows, seconds: (Date.now() - t0) / 1000 };
  });

  check(result.page_errors.length === 0, 'page errors: ' + result.page_errors.join('; '));
  result.ok = true;
}

main().then(() => run.finish(0)).catch((e) => {
  console.log('FAIL run: ' + (e && e.message ? e.message.split('\n')[0] : e));
  run.finish(1);
});
