// Drives the dashboard (web/) in Debian's chromium through playwright-core,
// against a running bridge whose API and mailbox the caller prepared.
//
//   node tests/browser/dashboard.mjs PLAN.json
//
// PLAN (written by tests/integration/test_web.py):
//   base_url        "http://127.0.0.1:PORT/"
//   token           a token the bridge accepts; bad_token one it refuses
//   out_dir         screenshots (<step>.png), result.json, requests.log
//   chromium        the browser binary (default /usr/bin/chromium)
//   account         the account with the messages
//   listing         [[number, uidl, size], ...] as the POP3 server shows it
//   xss_uidl, xss_subject         a message whose subject is markup
//   html_uidl, html_marker        a message with an HTML part showing marker
//   remote_marker   a string in the URL of a remote image in that HTML part
//   delete_uidl     the message to delete
//   oauth2_account  (optional) an account to connect with "Connect" (OAuth2
//                   device code); oauth2_verification_uri the page the
//                   dashboard must show, oauth2_ca the CA of its server: the
//                   script enters the shown code there, as the person would
//   headers         {uidl: {from, subject, date}} of messages whose From (display
//                   name), Subject and Date (ISO) the mailbox list must show
//   filter_text, filter_uidl      typed in the mailbox filter box: only that row stays
//   webhook         the webhook; webhook_attempts, webhook_delivered: its attempts so far
//   tls_name        a text in the server certificate's subject and issuer
//
// Prints one line per step ("ok <step>" / "FAIL <step>: why") and writes
// result.json {ok, steps:[{name, ok, ms, detail}], dialogs, page_errors,
// console_errors, requests}.  Exit status 0 when every step passed.  Every
// wait is bounded (STEP_TIMEOUT_MS); the whole run is bounded by RUN_TIMEOUT_MS.
// The run, the browser and the sign-in: common.mjs.

import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { check, gotoAccounts, loadPlan, signIn, startRun, until, STEP_TIMEOUT_MS } from './common.mjs';

const DELIVERY_WAIT_MS = 45000;
const RUN_TIMEOUT_MS = 240000;

const { plan, out, base } = loadPlan();
const baseOrigin = new URL(base).origin;

const result = { ok: false, steps: [], dialogs: [], page_errors: [], console_errors: [], requests: [] };
const run = startRun(out, result, RUN_TIMEOUT_MS, (dir) => {
  fs.writeFileSync(path.join(dir, 'requests.log'), result.requests.map((r) => r.method + ' ' + r.url + ' ' + (r.status ?? '')).join('\n') + '\n');
});
const step = run.step;

function eq(actual, expected, what) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(what + ': expected ' + JSON.stringify(expected) + ', got ' + JSON.stringify(actual));
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(out, name + '.png'), fullPage: true });
}

function rowFor(page, table, attr, value) {
  return page.locator('table.' + table + ' tbody tr[data-' + attr + '="' + value.replace(/"/g, '\\"') + '"]');
}

// The person at the verification page: enters the code the dashboard showed.
function enterCode(pageUrl, code) {
  const u = new URL(pageUrl);
  u.searchParams.set('user_code', code);
  return new Promise((resolve, reject) => {
    const req = https.get(u, { ca: fs.readFileSync(plan.oauth2_ca), timeout: STEP_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy(new Error('the verification page did not answer')));
    req.on('error', reject);
  });
}

// ---- OAuth2: "Connect" walks through the device-code flow ----------------
async function oauth2Steps(page) {
  const name = plan.oauth2_account;
  const row = () => rowFor(page, 'accounts', 'account', name);
  let code = null;
  await step('an OAuth2 account without a grant offers Connect', async () => {
    await page.goto(base + '#/accounts');
    await row().waitFor();
    await until(async () => /auth error/.test(await row().locator('td').nth(1).textContent()), STEP_TIMEOUT_MS, 'state auth error');
    check(await row().locator('button[data-action="connect"]').count() === 1, 'a Connect button');
    // the machine-readable last_error_code, in words, beside the text
    const code = row().locator('td').nth(4).locator('.error-code');
    eq(await code.getAttribute('data-code'), 'no_grant', 'the last error code of an account without a grant');
    eq((await code.textContent()).trim(), 'No OAuth2 grant', 'the code in words');
    check(await rowFor(page, 'accounts', 'account', plan.account).locator('button[data-action="connect"]').count() === 0,
      'no Connect button on a password account');
  });

  await step('Connect shows the page and the code', async () => {
    const resp = page.waitForResponse((r) => r.request().method() === 'POST' && /\/oauth2\/device$/.test(r.url()));
    await row().locator('button[data-action="connect"]').click();
    eq((await resp).status(), 201, 'POST oauth2/device status');
    const panel = page.locator('#oauth2-connect');
    await panel.locator('#oauth2-user-code').waitFor();
    eq(await panel.locator('#oauth2-verification-uri').textContent(), plan.oauth2_verification_uri, 'the page shown');
    eq(await panel.locator('#oauth2-verification-uri').getAttribute('href'), plan.oauth2_verification_uri, 'the link');
    code = (await panel.locator('#oauth2-user-code').textContent()).trim();
    check(/^[0-9A-F]{4}-[0-9A-F]{4}$/.test(code), 'a user code: ' + code);
    check(/Waiting for the approval/.test(await panel.locator('#oauth2-state').textContent()), 'says it waits');
    // the table refreshes under it: the panel stays
    await page.click('#refresh');
    await page.waitForTimeout(300);
    check(await panel.isVisible(), 'the panel survives a refresh of the table');
    await shot(page, '05a-oauth2-connect');
  });

  await step('approved at the page: connected, polled, Connect gone', async () => {
    eq(await enterCode(plan.oauth2_verification_uri, code), 200, 'the verification page');
    const panel = page.locator('#oauth2-connect');
    await until(async () => /Connected/.test(await panel.locator('#oauth2-state').textContent()), STEP_TIMEOUT_MS, 'the dashboard to see the approval');
    await page.locator('#toast', { hasText: 'Account ' + name + ' is connected' }).waitFor();
    await until(async () => /idle/.test(await row().locator('td').nth(1).textContent()) &&
      (await row().locator('button[data-action="connect"]').count()) === 0, STEP_TIMEOUT_MS, 'the account idle without Connect');
    check(!/never/.test(await row().locator('td').nth(2).textContent()), 'a last success is shown');
    await shot(page, '05b-oauth2-connected');
    await page.click('#oauth2-close');
    check(await panel.isHidden(), 'Close hides the panel');
  });
}

async function main() {
  const page = await run.launch(plan, { timezoneId: plan.timezone || undefined });
  const context = run.context;

  page.on('dialog', async (d) => {
    result.dialogs.push({ type: d.type(), message: d.message() });
    await d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => result.page_errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const loc = m.location() || {};
    result.console_errors.push({ text: m.text(), url: loc.url || '' });
  });
  context.on('request', (r) => result.requests.push({ method: r.method(), url: r.url(), frame: r.frame() ? r.frame().url() : '' }));
  context.on('requestfinished', async (r) => {
    const resp = await r.response().catch(() => null);
    const rec = result.requests.find((x) => x.url === r.url() && x.status === undefined);
    if (rec && resp) rec.status = resp.status();
  });

  context.on('requestfailed', (r) => {
    const rec = result.requests.find((x) => x.url === r.url() && x.status === undefined && !x.failure);
    if (rec) rec.failure = (r.failure() && r.failure().errorText) || 'failed';
  });

  const headers = {}; // security headers of the page itself
  page.on('response', (r) => {
    if (r.url() === base) {
      headers.csp = r.headers()['content-security-policy'] || '';
      headers.nosniff = r.headers()['x-content-type-options'] || '';
    }
  });

  // ---- sign-in -----------------------------------------------------------
  await step('sign-in page', async () => {
    await page.goto(base);
    await page.locator('#sign-in').waitFor();
    check(headers.csp && /default-src/.test(headers.csp), 'the page has a Content-Security-Policy (got ' + JSON.stringify(headers.csp) + ')');
    eq(headers.nosniff.toLowerCase(), 'nosniff', 'X-Content-Type-Options');
    await shot(page, '01-sign-in');
  });

  await step('wrong token is refused with a clear message', async () => {
    await page.fill('#token', plan.bad_token);
    await page.click('#sign-in-btn');
    const err = page.locator('#sign-in-error');
    await err.waitFor();
    const text = await err.textContent();
    check(/not accepted/.test(text), 'message says the token was not accepted: ' + text);
    check(await page.evaluate(() => !sessionStorage.getItem('pop3bridge.token')), 'a refused token is not kept');
    check(await page.locator('#nav').isHidden(), 'navigation stays hidden');
    check(await page.locator('#sign-out').isHidden(), 'no Sign out button before signing in');
    await shot(page, '02-sign-in-wrong-token');
  });

  await step('sign in with the right token', async () => {
    await signIn(page, plan.token);
    eq(await page.evaluate(() => sessionStorage.getItem('pop3bridge.token')), plan.token, 'token in sessionStorage');
    check(!page.url().includes(plan.token), 'no token in the page URL');
  });

  // ---- accounts ----------------------------------------------------------
  let lastAttempt = null;
  await step('accounts table', async () => {
    const row = rowFor(page, 'accounts', 'account', plan.account);
    await row.waitFor();
    const cells = await row.locator('td').allTextContents();
    check(/idle/.test(cells[1]), 'state idle: ' + cells[1]);
    check(!/never/.test(cells[2]), 'a last success is shown: ' + cells[2]);
    const stored = Number(cells[5]);
    check(stored >= plan.listing.length, 'stored count ' + cells[5] + ' >= ' + plan.listing.length);
    lastAttempt = await row.locator('td').nth(3).locator('time').getAttribute('datetime');
    check(lastAttempt, 'last attempt time shown');
    if (plan.timezone) {
      // shown in the browser's zone, not in UTC
      const tz = await page.locator('#tz').textContent();
      check(tz.includes(plan.timezone), 'the zone is named: ' + tz);
      const local = new Date(lastAttempt).toLocaleTimeString('en-US', {
        timeZone: plan.timezone, hour: '2-digit', minute: '2-digit', hour12: true,
      }).replace(/ [AP]M$/, '');
      const shown = await row.locator('td').nth(3).locator('time').textContent();
      check(shown.includes(local), 'last attempt shown in local time ' + local + ': ' + shown);
    }
    await shot(page, '03-accounts');
    return { cells };
  });

  await step('poll now (by keyboard)', async () => {
    const btn = rowFor(page, 'accounts', 'account', plan.account).locator('button[data-action="poll"]');
    // reach the button with Tab only
    await page.locator('body').focus();
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    let found = false;
    for (let i = 0; i < 40 && !found; i++) {
      await page.keyboard.press('Tab');
      found = await btn.evaluate((b) => b === document.activeElement);
    }
    check(found, 'the Poll now button is reachable with Tab');
    const resp = page.waitForResponse((r) => r.request().method() === 'POST' && /\/poll$/.test(r.url()));
    await page.keyboard.press('Enter');
    eq((await resp).status(), 202, 'POST poll status');
    await page.locator('#toast', { hasText: 'Poll of ' + plan.account + ' started' }).waitFor();
    await until(async () => {
      const t = await rowFor(page, 'accounts', 'account', plan.account).locator('td').nth(3).locator('time').getAttribute('datetime');
      return t && t !== lastAttempt && Date.parse(t) > Date.parse(lastAttempt);
    }, STEP_TIMEOUT_MS, 'the last attempt time to move after Poll now (auto refresh)');
    await shot(page, '04-accounts-after-poll');
  });

  if (plan.oauth2_account) await oauth2Steps(page);

  // ---- mailbox -----------------------------------------------------------
  await step('open the mailbox', async () => {
    await page.click('a[aria-label="Mailbox of ' + plan.account + '"]');
    await page.locator('table.messages').waitFor();
    const rows = page.locator('table.messages tbody tr');
    const got = [];
    for (let i = 0; i < await rows.count(); i++) {
      const r = rows.nth(i);
      got.push([Number(await r.getAttribute('data-number')), await r.getAttribute('data-uidl')]);
    }
    eq(got, plan.listing.map(([n, u]) => [n, u]), 'numbers and UIDLs as on the server');
    const sizes = await page.locator('table.messages tbody tr td[data-label="Size"] span').evaluateAll((els) => els.map((e) => e.title));
    eq(sizes, plan.listing.map(([, , s]) => s + ' octets'), 'sizes as on the server');
    for (const [uidl, want] of Object.entries(plan.headers || {})) {
      const row = rowFor(page, 'messages', 'uidl', uidl);
      eq((await row.locator('td[data-label="From"]').textContent()).trim(), want.from, 'From of ' + uidl);
      eq(await row.locator('td[data-label="Subject"] .subject').textContent(), want.subject, 'Subject of ' + uidl);
      eq(await row.locator('td[data-label="Date"] time').getAttribute('datetime'), want.date, 'Date of ' + uidl);
    }
    const froms = await page.locator('table.messages tbody tr td[data-label="From"]').allTextContents();
    check(froms.every((t) => t.trim() && t.trim() !== '—'), 'every message shows a sender: ' + JSON.stringify(froms));
    const bridge = await page.locator('table.messages tbody tr td[data-label="Bridge"]').allTextContents();
    check(bridge.every((t) => /stored/.test(t)), 'every message is marked stored: ' + JSON.stringify(bridge));
    await page.locator('#mailbox-stat', { hasText: 'STAT' }).waitFor();
    await shot(page, '05-mailbox');
  });

  await step('mailbox filter box', async () => {
    const visible = () => page.locator('table.messages tbody tr:not([hidden])');
    await page.fill('#mailbox-filter', plan.filter_text);
    await until(async () => (await visible().count()) === 1, STEP_TIMEOUT_MS, 'one row left by the filter');
    eq(await visible().first().getAttribute('data-uidl'), plan.filter_uidl, 'the row the filter keeps');
    eq(await page.locator('#mailbox-filter-count').textContent(), '1 of ' + plan.listing.length + ' shown', 'filter count');
    await shot(page, '05b-mailbox-filtered');
    await page.fill('#mailbox-filter', 'no-such-text-' + Date.now());
    await until(async () => (await visible().count()) === 0, STEP_TIMEOUT_MS, 'no row for a text nowhere');
    await page.fill('#mailbox-filter', '');
    await until(async () => (await visible().count()) === plan.listing.length, STEP_TIMEOUT_MS, 'every row back');
  });

  await step('preview (TOP) of the markup-subject message shows it as text', async () => {
    const row = rowFor(page, 'messages', 'uidl', plan.xss_uidl);
    const resp = page.waitForResponse((r) => /\/top\?lines=\d+$/.test(r.url()));
    await row.locator('button[data-action="preview"]').click();
    eq((await resp).status(), 200, 'TOP status');
    const subj = page.locator('#preview-subject');
    await subj.waitFor();
    eq(await subj.textContent(), plan.xss_subject, 'subject shown as text');
    eq(await subj.locator('img').count(), 0, 'no element made from the subject');
    check((await page.locator('#preview-body').textContent()).length > 0, 'preview body shown');
    await shot(page, '06-preview');
  });

  await step('open the markup-subject message', async () => {
    await rowFor(page, 'messages', 'uidl', plan.xss_uidl).locator('a[data-action="open"]').click();
    const h1 = page.locator('#message-subject');
    await page.locator('#message-fields').waitFor();
    eq(await h1.textContent(), plan.xss_subject, 'heading is the subject as text');
    eq(await page.locator('main img').count(), 0, 'no img element on the page');
    check(!page.url().includes(plan.token), 'no token in the page URL');
    await shot(page, '07-message-markup-subject');
  });

  await step('open the HTML message: text, sandboxed HTML, headers, source', async () => {
    await page.goto(base + '#/accounts/' + encodeURIComponent(plan.account) + '/messages/' + encodeURIComponent(plan.html_uidl));
    await page.locator('#message-fields').waitFor();
    check((await page.locator('#message-text').textContent()).includes(plan.text_marker), 'text part shown');
    await page.click('button[data-tab="html"]');
    const frameEl = page.locator('iframe.html-frame');
    await frameEl.waitFor();
    eq(await frameEl.getAttribute('sandbox'), '', 'iframe sandbox attribute is empty (no allow-*)');
    const srcdoc = await frameEl.getAttribute('srcdoc');
    check(/http-equiv="Content-Security-Policy" content="default-src 'none'/.test(srcdoc), 'frame document carries a CSP that allows nothing remote');
    const frame = await frameEl.contentFrame();
    await until(async () => (await frame.locator('body').textContent()).includes(plan.html_marker), STEP_TIMEOUT_MS, 'the HTML part rendered in the frame');
    eq(await page.locator('main').evaluate((m, marker) => m.textContent.includes(marker), plan.html_marker), false,
      'the HTML part is not in the page outside the frame');
    await page.waitForTimeout(500);
    const remote = result.requests.filter((r) => r.url.includes(plan.remote_marker));
    check(remote.every((r) => r.status === undefined && r.failure), 'the remote image was blocked: ' + JSON.stringify(remote));
    await shot(page, '08-message-html');
    await page.keyboard.press('Tab'); // keyboard on tabs: arrow keys
    await page.focus('button[data-tab="html"]');
    await page.keyboard.press('ArrowRight');
    eq(await page.evaluate(() => document.activeElement.dataset.tab), 'headers', 'ArrowRight moves to the next tab');
    check(await page.locator('#msg-panel-headers').isVisible(), 'headers panel shown');
    await page.click('button[data-tab="source"]');
    await until(async () => (await page.locator('#message-source').textContent()).includes(plan.html_marker), STEP_TIMEOUT_MS, 'the source');
  });

  await step('delete: Escape cancels, confirming deletes', async () => {
    await page.goto(base + '#/accounts/' + encodeURIComponent(plan.account));
    await page.locator('table.messages').waitFor();
    const row = rowFor(page, 'messages', 'uidl', plan.delete_uidl);
    await row.locator('button[data-action="delete"]').click();
    const dlg = page.locator('dialog#confirm');
    await dlg.waitFor({ state: 'visible' });
    await shot(page, '09-delete-confirm');
    await page.keyboard.press('Escape');
    await dlg.waitFor({ state: 'hidden' });
    check(!result.requests.some((r) => r.method === 'DELETE'), 'no DELETE after Escape');
    await row.locator('button[data-action="delete"]').click();
    await dlg.waitFor({ state: 'visible' });
    const resp = page.waitForResponse((r) => r.request().method() === 'DELETE');
    await page.click('#confirm-ok');
    eq((await resp).status(), 204, 'DELETE status');
    await until(async () => (await row.count()) === 0, STEP_TIMEOUT_MS, 'the row to go');
    eq(await page.locator('table.messages tbody tr').count(), plan.listing.length - 1, 'one message fewer');
    await shot(page, '10-mailbox-after-delete');
  });

  // ---- deliveries ---------------------------------------------------------
  let failedId = null;
  await step('deliveries: the failed one, by status filter', async () => {
    await page.click('a[data-nav="deliveries"]');
    await page.locator('#deliveries-filter').waitFor();
    await page.locator('#deliveries-body table, #deliveries-body .empty').first().waitFor();
    const filtered = page.waitForResponse((r) => /\/deliveries\?(.*&)?status=failed/.test(r.url()));
    await page.selectOption('#filter-status', 'failed');
    await filtered;
    await page.waitForTimeout(200);
    const rows = page.locator('table.deliveries tbody tr[data-status="failed"]');
    await until(async () => {
      if (await rows.count() > 0) return true;
      await page.click('#deliveries-refresh');
      await page.waitForTimeout(1000);
      return false;
    }, DELIVERY_WAIT_MS, 'a failed delivery');
    eq(await page.locator('table.deliveries tbody tr:not([data-status="failed"])').count(), 0, 'only failed rows with the filter');
    failedId = await rows.first().getAttribute('data-delivery');
    const cells = await rows.first().locator('td').allTextContents();
    check(/500/.test(cells[5]), 'last HTTP status 500 shown: ' + cells[5]);
    check(!page.url().includes(plan.token), 'no token in the page URL');
    check(page.url().includes('status=failed'), 'the filter is in the page address');
    await shot(page, '11-deliveries-failed');
    return { failedId };
  });

  await step('deliveries: filter by account', async () => {
    await page.selectOption('#filter-status', '');
    const filtered = page.waitForResponse((r) => /\/deliveries\?(.*&)?account=/.test(r.url()));
    await page.selectOption('#filter-account', plan.account);
    await filtered;
    await until(async () => (await page.locator('table.deliveries tbody tr').count()) === plan.account_deliveries, STEP_TIMEOUT_MS, 'deliveries of the account');
    const accounts = await page.locator('table.deliveries tbody tr td:nth-child(3)').allTextContents();
    check(accounts.every((a) => a === plan.account), 'only the chosen account: ' + JSON.stringify(accounts));
    await page.selectOption('#filter-account', '');
    await page.selectOption('#filter-status', 'dead');
    await page.locator('#deliveries-body .empty').waitFor();
    await shot(page, '12-deliveries-empty');
  });

  await step('deliveries: "Retry all dead" asks first, then retries in bulk', async () => {
    // the status filter is "dead" (none): the button is there, behind a confirmation
    await page.locator('#deliveries-retry-all').waitFor();
    await page.click('#deliveries-retry-all');
    await page.locator('dialog#confirm[open]').waitFor();
    check(/Retry all dead/.test(await page.locator('#confirm-title').textContent()), 'the dialog names what it retries');
    const bulkPosts = () => result.requests.filter((r) => r.method === 'POST' && /\/deliveries\/retry$/.test(r.url)).length;
    const before = bulkPosts();
    await page.click('#confirm-cancel');
    await page.waitForTimeout(300);
    eq(bulkPosts(), before, 'no bulk retry after Cancel');
    await page.click('#deliveries-retry-all');
    await page.locator('dialog#confirm[open]').waitFor();
    const resp = page.waitForResponse((r) => r.request().method() === 'POST' && /\/deliveries\/retry$/.test(r.url()));
    await page.click('#confirm-ok');
    const r = await resp;
    eq(r.status(), 202, 'bulk retry answer');
    eq((await r.json()).retried, 0, 'nothing dead to retry');
    await until(async () => /No dead deliveries to retry/.test((await page.locator('#toast').textContent()) || ''), STEP_TIMEOUT_MS, 'the toast');
    await page.selectOption('#filter-status', '');
    eq(await page.locator('#deliveries-retry-all').count(), 0, 'no bulk button without a retryable status');
  });

  await step('a delivery\'s attempts, and Retry makes it delivered', async () => {
    await page.goto(base + '#/deliveries/' + encodeURIComponent(failedId));
    await page.locator('table.attempts').waitFor();
    const first = await page.locator('table.attempts tbody tr').first().locator('td').allTextContents();
    check(/500/.test(first[3]), 'attempt shows HTTP 500: ' + first[3]);
    check(/\d/.test(first[2]), 'attempt shows its duration: ' + first[2]);
    check(await page.locator('table.attempts tbody tr').first().locator('time').count() === 1, 'attempt shows when it started');
    await shot(page, '13-delivery-failed');
    // Drop asks first; Cancel leaves it as it is
    await page.click('#delivery-drop');
    await page.locator('dialog#confirm[open]').waitFor();
    check(/Drop delivery/.test(await page.locator('#confirm-title').textContent()), 'the dialog names the delivery');
    await page.click('#confirm-cancel');
    await page.waitForTimeout(300);
    eq(result.requests.filter((x) => x.method === 'DELETE' && /\/deliveries\//.test(x.url)).length, 0,
      'no DELETE after Cancel');
    check(/failed/.test(await page.locator('#delivery-status').textContent()), 'still failed');
    const resp = page.waitForResponse((r) => r.request().method() === 'POST' && /\/retry$/.test(r.url()));
    await page.click('#delivery-retry');
    check((await resp).ok(), 'retry accepted');
    await until(async () => {
      const s = (await page.locator('#delivery-status').textContent()) || '';
      if (s.includes('delivered')) return true;
      await page.reload();
      await page.locator('#delivery-status').waitFor();
      return false;
    }, DELIVERY_WAIT_MS, 'the delivery to become delivered');
    const rows = await page.locator('table.attempts tbody tr').count();
    check(rows >= 2, 'a second attempt is listed');
    check(/200|20\d/.test(await page.locator('table.attempts tbody tr').last().locator('td').nth(3).textContent()), 'last attempt 2xx');
    eq(await page.locator('#delivery-retry').count(), 0, 'no Retry button on a delivered one');
    await shot(page, '14-delivery-retried');
  });

  await step('stored message from the delivery', async () => {
    await page.click('#delivery-fields a.mono');
    await page.locator('#message-fields').waitFor();
    check((await page.locator('#message-subject').textContent()).length > 0, 'subject shown');
    await shot(page, '15-stored-message');
  });

  // ---- webhooks ------------------------------------------------------------
  await step('webhooks page: statistics and the traffic chart', async () => {
    await page.click('a[data-nav="webhooks"]');
    const row = rowFor(page, 'webhooks', 'webhook', plan.webhook);
    await row.waitFor();
    const stat = async (k) => (await row.locator('[data-stat="' + k + '"]').textContent()).trim();
    eq(await stat('hour'), String(plan.webhook_attempts), 'attempts in the last hour');
    eq(await stat('day'), String(plan.webhook_attempts), 'attempts in the last day');
    const rate = plan.webhook_delivered / plan.webhook_attempts;
    eq(await stat('success'), (rate * 100).toFixed(rate === 1 || rate === 0 ? 0 : 1) + ' %', 'success rate');
    check(/^\d+(\.\d+)? m?s$/.test(await stat('p50')), 'p50 shown: ' + await stat('p50'));
    check(/^\d+(\.\d+)? m?s$/.test(await stat('p99')), 'p99 shown: ' + await stat('p99'));
    check(/HTTP 500/.test(await stat('error')), 'last error HTTP 500: ' + await stat('error'));
    eq(await stat('filter'), 'all messages', 'no filter configured');
    const chart = page.locator('svg#traffic-chart');
    await chart.waitFor();
    const bars = async (cls) => chart.locator('rect.' + cls).evaluateAll((els) => els.map((e) => ({
      hour: e.getAttribute('data-hour'), count: Number(e.getAttribute('data-count')), height: Number(e.getAttribute('height')) })));
    const recv = await bars('bar-received');
    const att = await bars('bar-attempts');
    const sum = (xs) => xs.reduce((s, x) => s + x.count, 0);
    eq(sum(recv), plan.listing.length, 'messages received in the chart');
    eq(sum(att), plan.webhook_attempts, 'delivery attempts in the chart');
    const recent = Date.now() - 2 * 3600 * 1000;
    check([...recv, ...att].every((b) => b.height > 0 && Date.parse(b.hour) >= recent - 3600 * 1000),
      'bars only for the hours with traffic (the last two): ' + JSON.stringify([...recv, ...att]));
    check(recv.length >= 1 && att.length >= 1, 'a bar of each kind');
    check((await chart.locator('desc').textContent()).includes(plan.listing.length + ' messages received'), 'chart description');
    await shot(page, '15b-webhooks');
  });

  // ---- account -------------------------------------------------------------
  await step('account page: capabilities, TLS, poll history', async () => {
    await page.goto(base + '#/accounts/' + encodeURIComponent(plan.account));
    await page.click('#mailbox-account-link');
    await page.locator('#account-capa').waitFor();
    const capa = await page.locator('#account-capa li').allTextContents();
    for (const c of ['UIDL', 'TOP']) check(capa.includes(c), c + ' among the capabilities: ' + JSON.stringify(capa));
    check(/^TLSv1\.[23]$/.test(await page.locator('#tls-version').textContent()), 'TLS version');
    check((await page.locator('#tls-subject').textContent()).includes(plan.tls_name), 'certificate subject');
    check((await page.locator('#tls-issuer').textContent()).includes(plan.tls_name), 'certificate issuer');
    const exp = await page.locator('#tls-expires time').getAttribute('datetime');
    check(exp && Date.parse(exp) > Date.now(), 'certificate expiry in the future: ' + exp);
    check(/idle/.test(await page.locator('#account-state-value').textContent()), 'state idle');
    eq((await page.locator('#account-last-error').textContent()).trim(), 'none', 'no last error after a good poll');
    eq(await page.locator('#account-last-error .error-code').count(), 0, 'no error code after a good poll');
    const polls = page.locator('table.polls tbody tr');
    check(await polls.count() >= 2, 'the first poll and Poll now are listed');
    const newest = await polls.first().locator('td').allTextContents();
    const oldest = await polls.last().locator('td').allTextContents();
    eq(await polls.first().getAttribute('data-outcome'), 'ok', 'newest poll ok');
    eq(newest[3], '0', 'Poll now found nothing new');
    eq(oldest[3], String(plan.listing.length), 'the first poll stored every message');
    check(/\d/.test(newest[1]), 'poll duration shown: ' + newest[1]);
    // one instance (SQLite): no poll names an instance, and no column is shown for it
    eq(await page.locator('table.polls th', { hasText: 'Instance' }).count(), 0, 'no Instance column on SQLite');
    eq(newest.length, 6, 'the columns of a poll on SQLite: ' + JSON.stringify(newest));
    await shot(page, '15c-account');
  });

  // ---- API page ------------------------------------------------------------
  await step('API page', async () => {
    await page.click('a[data-nav="api"]');
    await until(async () => (await page.locator('details.op').count()) >= (plan.min_endpoints || 10), STEP_TIMEOUT_MS, 'the endpoints of openapi.yaml');
    const paths = await page.locator('details.op .op-path').allTextContents();
    for (const p of ['/accounts', '/deliveries']) {
      check(paths.some((x) => x.endsWith(p)), 'endpoint ' + p + ' listed');
    }
    await page.locator('details.op').first().locator('summary').press('Enter');
    check(await page.locator('details.op').first().evaluate((d) => d.open), 'an endpoint opens with Enter');
    await shot(page, '16-api');
  });

  // ---- narrow window ------------------------------------------------------
  await step('narrow window', async () => {
    await page.setViewportSize({ width: 380, height: 800 });
    for (const [hash, name, sel] of [['#/accounts', '17-narrow-accounts', 'table.accounts'],
      ['#/accounts/' + encodeURIComponent(plan.account), '18-narrow-mailbox', 'table.messages'],
      ['#/deliveries', '19-narrow-deliveries', 'table.deliveries']]) {
      await page.goto(base + hash);
      await page.locator(sel).waitFor();
      const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      check(over <= 1, name + ': no sideways scrolling (' + over + ' px too wide)');
      await shot(page, name);
    }
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  // ---- sign out, and the whole run's checks -------------------------------
  await step('a token the bridge stops accepting leads back to sign-in', async () => {
    await gotoAccounts(page, base);
    await page.evaluate(() => sessionStorage.setItem('pop3bridge.token', 'no-longer-valid'));
    await page.click('#refresh');
    await page.locator('#sign-in').waitFor();
    check(/no longer accepts/.test(await page.locator('#sign-in-msg').textContent()), 'says why');
    eq(await page.evaluate(() => sessionStorage.getItem('pop3bridge.token')), null, 'token removed');
    await signIn(page, plan.token);
  });

  await step('sign out', async () => {
    await gotoAccounts(page, base);
    await page.click('#sign-out');
    await page.locator('#sign-in').waitFor();
    eq(await page.evaluate(() => sessionStorage.getItem('pop3bridge.token')), null, 'token removed');
  });

  await step('no dialog, no page error, no token in any URL, nothing off this host', async () => {
    eq(result.dialogs, [], 'dialogs');
    eq(result.page_errors, [], 'page errors');
    // expected: the frame's blocked loads and the refused tokens' 401s
    const own = result.console_errors.filter((c) => !c.url.startsWith('about:srcdoc') &&
      !/^Failed to load resource: .*status of 401/.test(c.text));
    eq(own, [], 'console errors of the dashboard');
    const withToken = result.requests.filter((r) => r.url.includes(plan.token) || r.url.includes(plan.bad_token));
    eq(withToken, [], 'requests with a token in the URL');
    // (a blocked request never left the browser: it has a failure, no status)
    const foreign = result.requests.filter((r) => !r.url.startsWith(baseOrigin + '/') && !/^(data|blob|about):/.test(r.url) &&
      !(r.failure && r.status === undefined));
    eq(foreign, [], 'requests to other hosts');
  });
}

main().then(() => {
  result.ok = true;
  run.finish(0);
}, async (e) => {
  result.error = String(e && e.stack || e);
  try {
    const page = run.context && run.context.pages()[0];
    if (page) await page.screenshot({ path: path.join(out, 'failure.png'), fullPage: true });
  } catch (_) {
    /* no screenshot */
  }
  run.finish(1);
});
