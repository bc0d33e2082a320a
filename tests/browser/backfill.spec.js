// Backfills and the sync status on the management page, against admin-api as a real process
// (started by tests/e2e/tests/suites/admin_browser.rs, whose stand-in for ingest's job runner advances
// every backfill the page starts and stops it when asked): an admin starts a backfill, watches
// its progress bar move, cancels it and reads the sync status; a viewer only reads.
const { test, expect } = require('@playwright/test');
const path = require('path');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/browser/run.sh`);
  return value;
};
const shots = process.env.CRM_SYNC_BROWSER_ARTIFACTS || 'test-results';
const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

async function signIn(page, token) {
  await page.goto('/admin/');
  await page.getByLabel('Admin API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#who-text')).not.toBeEmpty();
  await page.locator('#sync summary').click();
}

test('an admin starts a backfill, watches it move and cancels it', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // The refused requests are deliberate: the 422 of an unknown object, counted.
  let refusedInput = 0;
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (/status of 422/.test(m.text())) refusedInput += 1;
    else errors.push(m.text());
  });
  // A backfill pulls with the CRM API credentials (the admin test may already have set them).
  const session = await (await request.get('/admin/v1/session', { headers: { Authorization: `Bearer ${env('ADMIN_TOKEN')}` } })).json();
  const credentials = await request.patch(
    `/admin/v1/companies/${session.company_id}/integrations/${env('INTEGRATION_ID')}/credentials`,
    { headers: { Authorization: `Bearer ${env('ADMIN_TOKEN')}` }, data: { api: { base_url: 'https://example.my.salesforce.com', access_token: 'browser-api-token-0002' } } },
  );
  expect(credentials.status()).toBe(200);

  await signIn(page, env('ADMIN_TOKEN'));
  // The sync status as ingest and the evaluator recorded it.
  const status = page.locator('#sync-status');
  await expect(status).toContainText('120 scanned, 3 published, 4 API calls');
  await expect(status).toContainText(/Missed webhooks fixed\s*3/);
  await expect(status).toContainText(/Last webhook request refused\s*.*401 invalid_signature/);
  await expect(status).toContainText(/Backfill in progress\s*none/);

  // The date picker starts 30 days back; an object no workflow reads is refused, naming it.
  const form = page.locator('#backfill-form');
  const monthAgo = new Date(Date.now() - 30 * 86400e3).toISOString().slice(0, 10);
  await expect(form.getByLabel('Backfill since')).toHaveValue(monthAgo);
  await form.getByLabel(/^Objects/).fill('Opportunity, Lead');
  await form.getByRole('button', { name: 'Start backfill' }).click();
  await expect(page.locator('#backfill-error')).toContainText('objects/1');
  await expect(form.getByLabel(/^Objects/)).toHaveAttribute('aria-invalid', 'true');

  await form.getByLabel(/^Objects/).fill('Opportunity');
  await form.getByRole('button', { name: 'Start backfill' }).click();
  await expect(page.locator('#flash')).toContainText(`Backfill of Opportunity since ${monthAgo} started`);

  // The runner picks it up: the bar fills as pages are published, without reloading the page.
  const row = page.locator('#backfills-body tr').first();
  const bar = row.getByRole('progressbar');
  await expect(row).toContainText('running');
  await expect.poll(async () => Number(await bar.getAttribute('value') || 0), { timeout: 30_000 }).toBeGreaterThan(0);
  const first = Number(await bar.getAttribute('value'));
  await expect.poll(async () => Number(await bar.getAttribute('value')), { timeout: 30_000 }).toBeGreaterThan(first);
  await expect(row.locator('.progress-text')).toContainText(/\d+\.\d% · \d+ of 1000 scanned · \d+ published · [\d.]+ records\/s · ETA \d/);
  await expect(status).toContainText(/Backfill in progress\s*running/);
  await expect(form.getByRole('button', { name: 'Start backfill' })).toBeDisabled();
  await shot(page, '10-backfill-progress');

  // Cancel: the runner stops after its page, and the row says so.
  page.once('dialog', (d) => d.accept());
  await row.getByRole('button', { name: /^Cancel the backfill/ }).click();
  await expect(row.getByText('cancelled', { exact: true })).toBeVisible({ timeout: 30_000 });
  await expect(row.getByRole('button', { name: /^Cancel the backfill/ })).toHaveCount(0);
  // It stopped where it was: far from done.
  expect(Number(await bar.getAttribute('value'))).toBeLessThan(100);
  await expect(status).toContainText(/Backfill in progress\s*none/);
  await expect(form.getByRole('button', { name: 'Start backfill' })).toBeEnabled();
  await shot(page, '11-backfill-cancelled');

  // Both are in the audit log.
  await page.getByRole('link', { name: 'Audit log' }).click();
  await expect(page.locator('#audit-body')).toContainText('backfill.started');
  await expect(page.locator('#audit-body')).toContainText('backfill.cancel_requested');
  expect(errors).toEqual([]);
  expect(refusedInput).toBe(1);
});

test('a viewer sees the sync status and backfills but cannot start or cancel one', async ({ page }) => {
  await signIn(page, env('VIEWER_TOKEN'));
  await expect(page.locator('#sync-status')).toContainText('120 scanned');
  await expect(page.locator('#backfills-body')).toContainText('cancelled');
  await expect(page.getByRole('button', { name: 'Start backfill' })).toBeHidden();
  await expect(page.getByRole('button', { name: /^Cancel the backfill/ })).toHaveCount(0);
  await shot(page, '12-backfill-viewer');
});
