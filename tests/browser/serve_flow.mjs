// The delegated-task flow of `warden serve` in a real browser (Debian's Chromium, driven by the
// pinned playwright-core): a delegate signs in at exosim's login form, runs the read task and
// sees its table, asks for the write, an approver approves it and sees it complete, and an
// outsider sees no task. Run by tests/all/serve_browser.rs, which starts
// `warden serve --demo` and passes its ready file; every step leaves a screenshot in
// $WARDEN_BROWSER_ARTIFACTS. Exits non-zero, naming the step, on the first thing that is wrong.
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const ready = JSON.parse(readFileSync(process.env.WARDEN_READY_FILE, 'utf8'));
const artifacts = process.env.WARDEN_BROWSER_ARTIFACTS;
mkdirSync(artifacts, { recursive: true });
const base = ready.url.replace(/\/$/, '');
const users = ready.exosim.users;
const user = (prefix) => {
  const found = users.find((u) => u.upn.toLowerCase().startsWith(prefix + '@'));
  if (!found) throw new Error(`exosim's ready file has no user ${prefix}@…`);
  return found;
};

// Flags that keep Chromium off the network this machine does not have (see README's testing
// section); playwright adds --headless and, for root, --no-sandbox.
const browser = await chromium.launch({
  executablePath: process.env.WARDEN_CHROMIUM || '/usr/bin/chromium',
  args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

let step = 'start';
let shot = 0;
async function snap(page, name) {
  shot += 1;
  await page.screenshot({ path: join(artifacts, `${String(shot).padStart(2, '0')}-${name}.png`), fullPage: true });
}
function expect(condition, what) {
  if (!condition) throw new Error(what);
}

// A fresh context per person: their own cookies, as on another machine.
async function signedIn(who, label) {
  // exosim's certificates come from the throwaway CA it makes at start, which the system's
  // browser has no reason to trust; warden's own page is plain http on loopback.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const problems = [];
  // Script errors and CSP refusals count; Chromium's note on a non-2xx answer (the form's 422
  // with its field errors, a missing favicon) is not a page problem.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  step = `${label}: open the page`;
  const first = await page.goto(base + '/');
  const csp = first.headers()['content-security-policy'] || '';
  expect(csp.includes("default-src 'self'"), `${step}: no strict Content-Security-Policy (got "${csp}")`);
  step = `${label}: sign in`;
  await page.getByRole('link', { name: 'Sign in' }).or(page.getByRole('button', { name: 'Sign in' })).first().click();
  await page.locator('input[name=login]').fill(who.upn);
  await page.locator('input[name=passwd]').fill(who.password);
  await snap(page, `${label}-login-form`);
  await Promise.all([
    page.waitForURL((u) => u.toString().startsWith(base)),
    page.locator('input[name=passwd]').press('Enter'),
  ]);
  await snap(page, `${label}-signed-in`);
  return { context, page, problems };
}

async function everyFieldLabelled(page) {
  const unlabelled = await page.$$eval('input:not([type=hidden]):not([type=submit]), select, textarea',
    (els) => els.filter((e) => !e.labels || e.labels.length === 0).map((e) => e.name || e.id));
  expect(unlabelled.length === 0, `${step}: fields without a <label>: ${unlabelled.join(', ')}`);
}

async function waitForStatus(page, wanted, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const status = await page.locator('[data-status]').first().getAttribute('data-status');
    if (status === wanted) return;
    expect(Date.now() < deadline, `${step}: status stayed "${status}", wanted "${wanted}"`);
    await page.waitForTimeout(250);
    if (!['queued', 'running', 'pending-approval'].includes(status)) await page.reload();
  }
}

try {
  // 1. The delegate runs the read task and sees its table.
  const helpdesk = await signedIn(user('helpdesk'), 'helpdesk');
  let page = helpdesk.page;
  step = 'helpdesk: the task list';
  const listLink = page.locator('a[href$="/tasks/list-mailboxes"]');
  const renameLink = page.locator('a[href$="/tasks/rename-mailbox"]');
  expect(await listLink.count() === 1 && await renameLink.count() === 1,
    `${step}: the delegate should see both demo tasks`);
  await listLink.click();
  await everyFieldLabelled(page);
  step = 'helpdesk: run the read task';
  await page.getByRole('button', { name: 'Run' }).click();
  await waitForStatus(page, 'completed', 60);
  const rows = page.locator('table tbody tr');
  expect(await rows.count() > 0, `${step}: the completed run shows no result rows`);
  await snap(page, 'helpdesk-read-results');
  const address = (await page.locator('table tbody td').allTextContents()).find((t) => t.includes('@'));
  expect(address, `${step}: no mailbox address in the results table`);

  // 2. A value outside the policy is refused at the field, before anything is queued.
  step = 'helpdesk: a bad value';
  await page.goto(base + '/');
  await renameLink.click();
  await everyFieldLabelled(page);
  await page.locator('[name=identity]').fill(address.trim());
  await page.locator('[name=display_name]').fill('<b>Not</b> allowed; DROP');
  await page.getByRole('button', { name: /Request approval|Run/ }).click();
  const fieldError = page.locator('#display_name-error');
  expect(await fieldError.count() > 0, `${step}: no error next to the DisplayName field`);
  await snap(page, 'helpdesk-field-error');

  // 3. The write waits for an approval; its requester cannot approve it.
  step = 'helpdesk: request the write';
  await page.locator('[name=display_name]').fill('Renamed By Helpdesk');
  await page.getByRole('button', { name: 'Request approval' }).click();
  await waitForStatus(page, 'pending-approval', 20);
  const runUrl = page.url();
  expect(/\/runs\/[^/]+$/.test(new URL(runUrl).pathname), `${step}: not on a run page (${runUrl})`);
  expect(await page.getByRole('button', { name: 'Approve' }).count() === 0,
    `${step}: the requester is offered an Approve button on their own run`);
  await snap(page, 'helpdesk-pending');
  await page.getByRole('button', { name: 'Sign out' }).click();
  expect(helpdesk.problems.length === 0, `helpdesk: console errors: ${helpdesk.problems.join(' | ')}`);
  await helpdesk.context.close();

  // 4. The approver approves; the run completes.
  const lead = await signedIn(user('lead'), 'lead');
  page = lead.page;
  step = 'lead: approvals';
  await page.goto(base + '/approvals');
  await snap(page, 'lead-approvals');
  const runPath = new URL(runUrl).pathname;
  await page.locator(`a[href$="${runPath}"]`).first().click();
  expect((await page.locator('body').textContent()).includes('Renamed By Helpdesk'),
    `${step}: the approver does not see the exact parameters`);
  await page.locator('[name=comment]').fill('ok, ticket 42');
  await page.getByRole('button', { name: 'Approve' }).click();
  await waitForStatus(page, 'completed', 60);
  await snap(page, 'lead-approved-completed');
  expect(lead.problems.length === 0, `lead: console errors: ${lead.problems.join(' | ')}`);
  await lead.context.close();

  // 5. The outsider has no tasks.
  const outsider = await signedIn(user('outsider'), 'outsider');
  step = 'outsider: no tasks';
  expect(await outsider.page.locator('a[href*="/tasks/"]').count() === 0,
    `${step}: the outsider sees a task`);
  const direct = await outsider.page.goto(base + '/tasks/rename-mailbox');
  expect(direct.status() === 403 || direct.status() === 404, `${step}: a task page answered ${direct.status()}`);
  await snap(outsider.page, 'outsider');
  await outsider.context.close();
  console.log(`browser flow: passed (${shot} screenshots in ${artifacts})`);
} catch (error) {
  console.error(`browser flow failed at "${step}": ${error.message}`);
  for (const context of browser.contexts()) {
    for (const page of context.pages()) await snap(page, 'failure').catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
