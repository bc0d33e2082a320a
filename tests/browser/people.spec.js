// The people lifecycle in a real browser, against admin-api and the pipeline running as real
// processes (started by tests/e2e/tests/suites/admin_browser.rs): auto-sync creates an account for a
// rep an admin already made by hand, the admin merges the duplicate into it and the leaderboard
// shows one line; the admin deactivates a rep and the leaderboard drops them; an integration is
// deleted after the page names what goes with it. Runs after admin.spec.js, on its own workflow,
// team and activity type.
const { test, expect } = require('@playwright/test');
const path = require('path');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/browser/run.sh`);
  return value;
};
const shots = process.env.CRM_SYNC_BROWSER_ARTIFACTS || 'test-results';
const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

function outboundMessage(orgId, notificationId, recordId, owner, amount) {
  const fields = {
    Id: recordId, Amount: amount, CloseDate: '2026-11-20', CreatedDate: '2026-11-01T09:00:00.000Z',
    LastModifiedDate: '2026-11-20T15:04:05.000Z', Name: 'People deal', OwnerId: owner, StageName: 'Closed Won',
  };
  const sobject = Object.entries(fields).map(([k, v]) => `<sf:${k}>${v}</sf:${k}>`).join('');
  return `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>${orgId}</OrganizationId><ActionId>04k5g000000XYZAAA2</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/59.0/${orgId}</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/59.0/${orgId}</PartnerUrl>
   <Notification><Id>${notificationId}</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">${sobject}</sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>`;
}

test('an admin merges a duplicate, deactivates a rep and deletes an integration', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const dialogs = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.accept(d.type() === 'prompt' ? 'Old CRM' : undefined);
  });

  // Set up through the API: auto-sync on, a workflow of its own, a team, the hand-made account.
  const auth = { Authorization: `Bearer ${env('ADMIN_TOKEN')}` };
  const api = env('ADMIN_URL');
  const companyId = (await (await request.get(`${api}/admin/v1/session`, { headers: auth })).json()).company_id;
  const c = `${api}/admin/v1/companies/${companyId}`;
  expect((await request.patch(`${c}/integrations/${env('INTEGRATION_ID')}`, { headers: auth, data: { auto_sync_users: true } })).status()).toBe(200);
  const workflow = await request.post(`${c}/workflows`, {
    headers: auth,
    data: {
      integration_id: env('INTEGRATION_ID'), name: 'People deals', object_type: 'Opportunity', triggers: ['created', 'updated'],
      conditions: { all: [{ field: 'StageName', op: 'eq', value: 'Closed Won' }] }, user_field: 'OwnerId',
      value_field: 'Amount', activity_type: 'people_deal', active: true,
    },
  });
  expect(workflow.status()).toBe(201);
  const workflowId = (await workflow.json()).id;
  const team = await (await request.post(`${c}/teams`, { headers: auth, data: { name: 'People team' } })).json();
  const grace = await (await request.post(`${c}/users`, { headers: auth, data: { display_name: 'Grace Hopper', email: 'grace@example.com' } })).json();
  expect((await request.put(`${c}/teams/${team.id}/members/${grace.id}`, { headers: auth })).status()).toBe(200);
  const old = await request.post(`${c}/integrations`, { headers: auth, data: { name: 'Old CRM', crm: 'generic', crm_account_id: 'old-1' } });
  expect(old.status()).toBe(201);

  // Salesforce reports won deals of Grace's CRM user and of Alan's: auto-sync makes accounts.
  const duplicate = '005PEOPLE000001';
  const alan = '005PEOPLE000002';
  const deals = [[duplicate, '04l00000000PE01AAA', '006000000000PE1AAA', '900'], [alan, '04l00000000PE02AAA', '006000000000PE2AAA', '400']];
  for (const [owner, notification, record, amount] of deals) {
    const posted = await request.post(
      `${env('INGEST_URL')}/v1/integrations/${env('INTEGRATION_ID')}/salesforce/outbound-messages?token=${env('WEBHOOK_TOKEN')}`,
      { headers: { 'content-type': 'text/xml; charset=utf-8', SOAPAction: '""' }, data: outboundMessage(env('ORG_ID'), notification, record, owner, amount) },
    );
    expect(posted.status()).toBe(200);
  }

  // A user's row by its name cell: other rows name every user too (in their merge choices).
  const userRow = (name) => page.locator('#users-body tr').filter({ has: page.getByRole('rowheader', { name, exact: true }) });

  await page.goto('/admin/');
  await page.getByLabel('Admin API token').fill(env('ADMIN_TOKEN'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#who-text')).toContainText('admin');
  await page.getByRole('link', { name: 'Users' }).click();
  await page.locator('#users-filter').getByLabel('Show', { exact: true }).selectOption('all');
  for (const owner of [duplicate, alan]) {
    const row = userRow(owner);
    await expect(async () => {
      // Each click redraws the table once its list arrives: wait for it, so that no redraw is
      // still coming to reset the team chosen below.
      const listed = page.waitForResponse((r) => /\/users\?/.test(r.url()));
      await page.getByRole('button', { name: 'Show', exact: true }).click();
      await listed;
      await expect(row).toBeVisible({ timeout: 1_000 });
    }).toPass({ timeout: 60_000 });
    await row.getByLabel(`Team for ${owner}`).selectOption({ label: 'People team' });
    await row.getByRole('button', { name: `Place ${owner} on team` }).click();
    await expect(page.locator('#flash')).toContainText(`${owner} placed on People team`);
  }

  const leaderboard = async () => {
    await page.getByRole('link', { name: 'Leaderboard' }).click();
    await page.locator('#leaderboard-form').getByLabel('Activity type').fill('people_deal');
    await page.getByRole('button', { name: 'Show leaderboard' }).click();
    return page.locator('#leaderboard-body');
  };
  let board = await leaderboard();
  await expect(board.locator('tr')).toHaveCount(2);
  await expect(board.locator('tr').first()).toContainText(duplicate);
  await shot(page, '20-people-duplicate-on-leaderboard');

  // Merge the auto-synced duplicate into Grace's account: one line, her name, the CRM identity.
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByRole('button', { name: 'Show', exact: true }).click();
  const graceRow = userRow('Grace Hopper');
  // The table is redrawn by every load still under way: choose once it has settled.
  await page.waitForLoadState('networkidle');
  const mergeSelect = graceRow.getByLabel('Duplicate to merge into Grace Hopper');
  await expect(async () => {
    await mergeSelect.selectOption({ label: duplicate });
    await expect(mergeSelect.locator('option:checked')).toHaveText(duplicate, { timeout: 1_000 });
  }).toPass({ timeout: 20_000 });
  await shot(page, '21-people-merge');
  await graceRow.getByRole('button', { name: 'Merge the selected duplicate into Grace Hopper' }).click();
  // Its deal counted for this workflow and for admin.spec.js's "Browser wins": two activities.
  await expect(page.locator('#flash')).toContainText(`${duplicate} merged into Grace Hopper: 1 CRM identities and 2 activities moved`);
  expect(dialogs.pop()).toContain(`Merge ${duplicate} into Grace Hopper?`);
  await expect(graceRow).toContainText(`salesforce (salesforce): ${duplicate}`);
  await expect(userRow(duplicate)).toHaveCount(0);
  board = await leaderboard();
  await expect(board.locator('tr')).toHaveCount(2);
  await expect(board.locator('tr').first()).toContainText('Grace Hopper');
  await expect(board.locator('tr').first()).toContainText('900');
  await expect(board).not.toContainText(duplicate);
  await shot(page, '22-people-merged-leaderboard');

  // Deactivate Alan: off the leaderboard; reactivating brings him back.
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByRole('button', { name: 'Show', exact: true }).click();
  const alanRow = userRow(alan);
  await alanRow.getByRole('button', { name: `Deactivate ${alan}` }).click();
  await expect(page.locator('#flash')).toContainText(`${alan} is deactivated and off leaderboards`);
  await expect(alanRow).toContainText('inactive');
  await shot(page, '23-people-deactivated');
  board = await leaderboard();
  await expect(board.locator('tr')).toHaveCount(1);
  await expect(board).toContainText('Grace Hopper');
  await expect(board).not.toContainText(alan);
  await shot(page, '24-people-leaderboard-without-deactivated');
  await page.getByRole('link', { name: 'Users' }).click();
  await page.locator('#users-filter').getByLabel('Show', { exact: true }).selectOption('inactive');
  await page.getByRole('button', { name: 'Show', exact: true }).click();
  await expect(page.locator('#users-body tr')).toHaveCount(1);
  await userRow(alan).getByRole('button', { name: `Reactivate ${alan}` }).click();
  await expect(page.locator('#flash')).toContainText(`${alan} is active again`);
  board = await leaderboard();
  await expect(board.locator('tr')).toHaveCount(2);

  // Rename Grace.
  await page.getByRole('link', { name: 'Users' }).click();
  await page.locator('#users-filter').getByLabel('Show', { exact: true }).selectOption('all');
  await page.getByRole('button', { name: 'Show', exact: true }).click();
  await graceRow.getByText('Rename', { exact: true }).click();
  await graceRow.getByLabel('Name', { exact: true }).fill('Grace B. Hopper');
  await graceRow.getByRole('button', { name: 'Save Grace Hopper' }).click();
  await expect(page.locator('#flash')).toContainText('Grace B. Hopper saved');

  // Delete the old integration: the page names what goes, and the name confirms it.
  await page.getByRole('link', { name: 'Integrations' }).click();
  await page.getByRole('button', { name: 'Delete integration Old CRM' }).click();
  await expect(page.locator('#flash')).toContainText('Integration Old CRM deleted');
  expect(dialogs.pop()).toMatch(/Deleting Old CRM removes 0 workflows \(0 active\).*Type the integration name to confirm/);
  await expect(page.getByRole('row', { name: /Old CRM/ })).toHaveCount(0);
  await expect(page.getByRole('row', { name: /salesforce/ }).first()).toBeVisible();
  await shot(page, '25-integration-deleted');

  // The audit log tells the story.
  await page.getByRole('link', { name: 'Audit log' }).click();
  await expect(page.locator('#audit-body')).toContainText('merged');
  expect(errors).toEqual([]);
  // The specs share one company: this workflow counts every won deal, which would count the
  // deals later specs send to show what does not count.
  expect((await request.post(`${c}/workflows/${workflowId}/deactivate`, { headers: auth })).status()).toBe(200);
});
