// Drives the admin panel in the system Chromium: the main flow, axe-core on every page and after
// every change, keyboard reachability with visible focus, a form on another origin, and a
// signed-out session cookie. Run by tests/it/admin_browser.rs, which starts the server and
// seeds the ledger; it reads the environment below and exits non-zero on the first failure.
//
//   PANEL_URL        the server, e.g. http://127.0.0.1:41234
//   PANEL_LOGIN, PANEL_PASSWORD
//   PENDING_REFUND   a New refund of order 2001 to cancel
//   SPARE_REFUND     a New refund the attack page tries to cancel (it must stay New)
//   CHROMIUM         the browser (default /usr/bin/chromium)
//   SCREENSHOT_DIR   when set, the list, a source page and a refund page are saved there

import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const base = process.env.PANEL_URL;
const login = process.env.PANEL_LOGIN;
const password = process.env.PANEL_PASSWORD;
const pending = process.env.PENDING_REFUND;
const spare = process.env.SPARE_REFUND;
const screenshots = process.env.SCREENSHOT_DIR;
const axeSource = readFileSync(new URL('../it/vendor/axe.min.js', import.meta.url), 'utf8');

function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

const cspViolations = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

function watch(page) {
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) {
      cspViolations.push(message.text());
    }
  });
}

// axe-core with the WCAG 2.1 A and AA rules; evaluated through the DevTools protocol, which the
// page's CSP does not govern, so the product need not allow any script.
async function axe(page, where) {
  await page.evaluate(axeSource);
  const results = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    }),
  );
  const violations = results.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`,
  );
  check(violations.length === 0, `axe on ${where}:\n  ${violations.join('\n  ')}`);
  console.log(`axe: 0 violations on ${where} (${results.passes.length} rules passed)`);
}

async function shot(page, name) {
  if (screenshots) {
    await page.screenshot({ path: path.join(screenshots, name), fullPage: true });
  }
}

async function notice(page) {
  return (await page.getByRole('status').first().textContent()).trim();
}

const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
watch(page);

// Sign in.
await page.goto(`${base}/admin`);
check(page.url().endsWith('/admin/login'), `not sent to sign in: ${page.url()}`);
await axe(page, 'the sign-in page');
await page.getByLabel('Login').fill(login);
await page.getByLabel('Password').fill(password);
await page.getByRole('button', { name: 'Sign in' }).click();
await page.waitForURL(`${base}/admin`);
check(
  await page.getByRole('table', { name: 'Refunds awaiting approval' }).isVisible(),
  'no list after sign-in',
);
await axe(page, 'the list');

// Filter: claims only, then orders.
await page.getByLabel('Source type').selectOption('rma');
await page.getByRole('button', { name: 'Filter' }).click();
await page.waitForURL(/sourceType=rma/);
check(
  !(await page.getByRole('button', { name: `Confirm refund ${pending}` }).count()),
  'an order refund is listed under claims',
);
await axe(page, 'the list filtered to claims');
await page.getByLabel('Source type').selectOption('order');
await page.getByRole('button', { name: 'Filter' }).click();
await page.waitForURL(/sourceType=order/);
check(
  (await page.getByRole('button', { name: `Confirm refund ${pending}` }).count()) === 1,
  'the order refund is not listed under orders',
);

// Search for the order; add a manual refund on its page.
await page.getByLabel('Order, return, claim or refund id').fill('2001');
await page.getByRole('button', { name: 'Search' }).click();
await page.waitForURL(`${base}/admin/orders/2001`);
await axe(page, 'the page of order 2001');
await shot(page, 'admin-source.png');
await page.locator('#manual-amount').fill('15.00');
await page.getByLabel('Payment form id').fill('5');
await page.getByLabel('Account (optional)', { exact: true }).fill('PL61 1090 1014 0000 0712 1981 2874');
await page.getByRole('button', { name: 'Add manual refund' }).click();
await page.waitForURL(/result=/);
const added = (await notice(page)).match(/^Refund (\d+) added\.$/);
check(added, `no "added" notice: ${await notice(page)}`);
const refund = added[1];
await axe(page, 'the order page after adding a refund');

// Edit its amount from the list.
await page.goto(`${base}/admin`);
await page.getByRole('button', { name: `Edit amount of refund ${refund}` }).click();
await page.getByLabel(`New amount of refund ${refund} (PLN)`).fill('12.00');
await axe(page, 'the list while editing an amount');
await page.getByRole('button', { name: `Save amount of refund ${refund}` }).click();
await page.waitForURL(/result=/);
check((await notice(page)) === `Amount of refund ${refund} changed.`, await notice(page));
await axe(page, 'the list after editing an amount');

// Confirm it.
await page.getByRole('button', { name: `Confirm refund ${refund}` }).click();
await page.waitForURL(/result=/);
check((await notice(page)) === `Refund ${refund} confirmed.`, await notice(page));
check(
  !(await page.getByRole('button', { name: `Confirm refund ${refund}` }).count()),
  'a confirmed refund is still listed',
);
await axe(page, 'the list after confirming');

// Cancel the other one: asked first.
await page.getByRole('button', { name: `Cancel refund ${pending}` }).click();
const yes = page.getByRole('button', { name: `Yes, cancel refund ${pending}` });
check(await yes.isVisible(), 'cancel did not ask first');
await axe(page, 'the list asking to cancel');
await yes.click();
await page.waitForURL(/result=/);
check((await notice(page)) === `Refund ${pending} canceled.`, await notice(page));
await axe(page, 'the list after cancelling');
await shot(page, 'admin-list.png');

// Keyboard: every control of the list is reached by Tab, each with a visible focus.
const controls = await page.$$eval('a[href], button, input:not([type=hidden]), select', (all) =>
  all.map((element) => element.outerHTML.slice(0, 120)),
);
const reached = new Set();
for (let presses = 0; presses < controls.length * 2 + 10; presses += 1) {
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => {
    const element = document.activeElement;
    if (!element || element === document.body) {
      return null;
    }
    const style = getComputedStyle(element);
    return {
      html: element.outerHTML.slice(0, 120),
      visible: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
    };
  });
  if (focused) {
    check(focused.visible, `no visible focus on ${focused.html}`);
    reached.add(focused.html);
  }
}
const unreached = controls.filter((html) => !reached.has(html));
check(unreached.length === 0, `not reachable by keyboard:\n  ${unreached.join('\n  ')}`);
console.log(`keyboard: ${controls.length} controls reached, each with a visible focus`);

// The refund page shows the history: who, through which face.
await page.goto(`${base}/admin/orders/2001`);
await page.getByRole('link', { name: refund, exact: true }).click();
await page.waitForURL(`${base}/admin/refunds/${refund}`);
const history = page.getByRole('table', { name: 'Status history' });
check(await history.isVisible(), 'no status history');
const historyText = await history.textContent();
for (const expected of ['addManualRefund', 'updateRefund', 'confirmRefund', `panel:${login}`, 'admin']) {
  check(historyText.includes(expected), `history lacks ${expected}: ${historyText}`);
}
await axe(page, `the page of refund ${refund}`);
await shot(page, 'admin-refund.png');

// A form on another origin (127.0.0.2) posting to the panel is refused.
const attack = http.createServer((request, response) => {
  response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  response.end(`<!DOCTYPE html><html lang="en"><title>win a prize</title>
<form method="post" action="${base}/admin/actions/cancelRefund">
<input type="hidden" name="sourceType" value="order"><input type="hidden" name="sourceId" value="2001">
<input type="hidden" name="paymentId" value="${spare}"><input type="hidden" name="formToken" value="attack">
<button type="submit">Claim prize</button></form></html>`);
});
await new Promise((resolve) => attack.listen(0, '127.0.0.2', resolve));
const attackPage = await context.newPage();
await attackPage.goto(`http://127.0.0.2:${attack.address().port}/`);
const [answer] = await Promise.all([
  attackPage.waitForResponse((response) => response.url().includes('/admin/actions/')),
  attackPage.getByRole('button', { name: 'Claim prize' }).click(),
]);
check(answer.status() === 403, `the cross-origin form got ${answer.status()}`);
attack.close();
await attackPage.close();
await page.goto(`${base}/admin?sourceType=all`);
check(
  (await page.getByRole('button', { name: `Confirm refund ${spare}` }).count()) === 1,
  'the cross-origin form changed the refund',
);
console.log('attack: a form on 127.0.0.2 was refused (403)');

// Sign out; the old session cookie no longer works.
const [session] = (await context.cookies()).filter((cookie) => cookie.name.startsWith('__Host-'));
check(session && session.httpOnly && session.secure && session.sameSite === 'Strict', 'cookie attributes');
await page.getByRole('button', { name: 'Sign out' }).click();
await page.waitForURL(`${base}/admin/login`);
const replay = await browser.newContext();
await replay.addCookies([session]);
const replayPage = await replay.newPage();
watch(replayPage);
await replayPage.goto(`${base}/admin`);
check(replayPage.url().endsWith('/admin/login'), `a signed-out cookie still works: ${replayPage.url()}`);
await replay.close();
console.log('sign-out: the old session cookie is refused');

check(cspViolations.length === 0, `CSP violations in the console:\n  ${cspViolations.join('\n  ')}`);
await browser.close();
console.log(`panel flow passed; refund ${refund} added, edited and confirmed; ${pending} canceled`);
