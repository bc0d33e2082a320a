// The sync status of an integration whose last reconciliation could not read one object (the CRM
// refused it) while it reconciled the others, against admin-api as a real process (the status is
// recorded by tests/e2e/tests/suites/admin_browser.rs as ingest would): the page names the object
// and the CRM's answer, and does not say that the reconciliation failed.
const { test, expect } = require('@playwright/test');
const path = require('path');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/browser/run.sh`);
  return value;
};
const shots = process.env.CRM_SYNC_BROWSER_ARTIFACTS || 'test-results';

test('a reconciliation that could not read one object names it and is not called failed', async ({ page }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto('/admin/');
  await page.getByLabel('Admin API token').fill(env('PARTLY_RECONCILED_VIEWER_TOKEN'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#who-text')).toContainText('viewer');

  // The integration needs attention, and its health says for which object.
  const health = page.locator('td[aria-label="Health of salesforce"]');
  await expect(health).toContainText('Needs attention');
  await expect(health).toContainText('the last reconciliation could not read Quote (INVALID_FIELD');
  await expect(health).toContainText('the other objects were reconciled');
  await expect(health).not.toContainText('reconciliation failed');

  await page.locator('#sync summary').click();
  const status = page.locator('#sync-status');
  await expect(status).toContainText('40 scanned, 2 published, 3 API calls; could not read Quote: INVALID_FIELD');
  await expect(status).not.toContainText('failed');
  await page.screenshot({ path: path.join(shots, '13-sync-status-object-not-read.png'), fullPage: true });
  expect(errors).toEqual([]);
});
