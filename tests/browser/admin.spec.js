// The integration management page in a real browser, against admin-api and the pipeline running
// as real processes (started by tests/e2e/tests/suites/admin_browser.rs, which passes their addresses):
// sign in, turn auto-sync on, build and save a workflow, dry-run it, let a CRM event create a
// pending user, place the user on a team, and watch the leaderboard change.
const { test, expect } = require('@playwright/test');
const path = require('path');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/browser/run.sh`);
  return value;
};
const shots = process.env.CRM_SYNC_BROWSER_ARTIFACTS || 'test-results';
const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

/// A Salesforce Outbound Message with one won opportunity, as Salesforce posts it.
function outboundMessage(orgId, notificationId, recordId, owner, amount) {
  const fields = {
    Id: recordId, Amount: amount, CloseDate: '2026-11-20', CreatedDate: '2026-11-01T09:00:00.000Z',
    LastModifiedDate: '2026-11-20T15:04:05.000Z', Name: 'Acme - 200 licenses', OwnerId: owner, StageName: 'Closed Won',
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

test('an admin runs auto-sync end to end from the page alone', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // The refused requests are deliberate: the sign-in with a wrong token (401), the
  // credentials with a bad URL and an unknown time zone (422, counted: exactly those two).
  let refusedInput = 0;
  page.on('console', (m) => {
    if (m.type() !== 'error' || /status of 401/.test(m.text())) return;
    if (/status of 422/.test(m.text())) refusedInput += 1;
    else errors.push(m.text());
  });

  // Sign in: a wrong token is refused, the admin token opens the page.
  await page.goto('/admin/');
  await expect(page.getByRole('heading', { name: 'Sign in' })).toBeVisible();
  await page.getByLabel('Admin API token').fill('csa_not_a_token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'not valid' })).toBeVisible();
  await page.getByLabel('Admin API token').fill(env('ADMIN_TOKEN'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#who-text')).toContainText('admin');
  await expect(page.getByRole('heading', { name: 'Integrations' })).toBeVisible();
  // The exact address to paste into Salesforce, with the token's place.
  await expect(page.locator('code[aria-label="Webhook URL of salesforce"]')).toHaveText(
    `${env('INGEST_URL')}/v1/integrations/${env('INTEGRATION_ID')}/salesforce/outbound-messages?token=<webhook token>`);
  await expect(page.getByRole('button', { name: 'Generate new token' })).toBeVisible();
  // No active workflow yet: the integration expects nothing.
  const health = page.locator('td[aria-label="Health of salesforce"]');
  await expect(health).toContainText('Idle');
  await expect(health).toContainText('no active workflow');
  await shot(page, '01-signed-in');

  // Turn auto-sync on.
  const autoSync = page.getByRole('switch', { name: 'Auto-sync users for salesforce' });
  await expect(autoSync).not.toBeChecked();
  await autoSync.check();
  await expect(page.locator('#flash')).toContainText('Auto-sync users is now on for salesforce');
  await page.reload();
  await expect(page.getByRole('switch', { name: 'Auto-sync users for salesforce' })).toBeChecked();
  await shot(page, '02-auto-sync-on');

  // CRM API credentials, write-only: a bad URL is refused naming the field; once saved the page
  // says only that they are set and when, and nothing typed stays on it.
  await page.locator('#credentials summary').click();
  const status = page.locator('#cred-status');
  await expect(status).toContainText('CRM API credentials');
  await expect(status).toContainText('not set');
  await expect(page.locator('[data-part="webhook_secret"]')).toBeHidden();
  const creds = page.locator('#credentials-form');
  await creds.getByLabel('Base URL').fill('ftp://example.my.salesforce.com');
  await creds.getByLabel('Access token').fill('browser-api-token-0001');
  await creds.getByRole('button', { name: 'Save credentials' }).click();
  await expect(page.locator('#credentials-error')).toContainText('api/base_url');
  await creds.getByLabel('Base URL').fill('https://example.my.salesforce.com');
  await creds.getByRole('button', { name: 'Save credentials' }).click();
  await expect(page.locator('#flash')).toContainText('Credentials saved');
  await expect(status.getByRole('row', { name: /CRM API credentials/ })).toContainText(/set\s*\d{4}-\d{2}-\d{2}/);
  await expect(creds.getByLabel('Access token')).toHaveValue('');
  expect(await page.content()).not.toContain('browser-api-token-0001');
  await shot(page, '02b-credentials');

  // Build a workflow with the condition builder; a bad number is refused with the field named.
  await page.getByRole('link', { name: 'Workflows' }).click();
  await page.getByRole('button', { name: 'New workflow' }).click();
  const builder = page.locator('#workflow-form');
  await builder.getByLabel('Workflow name').fill('Browser wins');
  await builder.getByLabel('CRM object').fill('Opportunity');
  await builder.getByRole('button', { name: 'Add condition' }).click();
  const second = builder.locator('#condition-rows li').nth(1);
  await second.getByLabel('Field').fill('Amount');
  await second.getByLabel('Operator').selectOption('gte');
  await second.getByLabel('Type').selectOption('number');
  await second.getByLabel('Value').fill('lots');
  await builder.getByLabel('Counts as activity type').fill('browser_deal');
  await builder.getByLabel('Active', { exact: true }).check();
  await builder.getByRole('button', { name: 'Save workflow' }).click();
  await expect(page.locator('#workflow-error')).toContainText('conditions/all/1/value');
  await second.getByLabel('Value').fill('100');
  await shot(page, '03-workflow-builder');
  await builder.getByRole('button', { name: 'Save workflow' }).click();
  await expect(page.locator('#flash')).toContainText('Workflow Browser wins saved and active');
  await expect(page.getByRole('row', { name: /Browser wins/ })).toContainText('active');
  await expect(page.getByRole('row', { name: /Browser wins/ })).toContainText('salesforce (salesforce)');

  // Dry-run it: the default sample matches; a small amount says which condition failed.
  await expect(page.getByRole('heading', { name: 'Dry run' })).toBeVisible();
  await page.getByRole('button', { name: 'Run dry run' }).click();
  await expect(page.locator('#dryrun-result')).toContainText('Matches');
  await expect(page.locator('#dryrun-result')).toContainText('would record 1250 browser_deal');
  // Every part of the verdict is a node: no stray "null" where a part is absent.
  await expect(page.locator('#dryrun-result')).not.toContainText('null');
  const dryRun = page.locator('#dryrun-form');
  await dryRun.getByLabel('Sample record fields (JSON object)').fill('{"StageName": "Closed Won", "Amount": 50, "OwnerId": "005X"}');
  await dryRun.getByLabel('Change', { exact: true }).selectOption('created');
  await page.getByRole('button', { name: 'Run dry run' }).click();
  await expect(page.locator('#dryrun-result')).toContainText('Does not match');
  await expect(page.locator('#dryrun-result')).toContainText('conditions/all/1: Amount is 50');
  // The whole tree, each condition with its verdict.
  await page.locator('#dryrun-tree summary').click();
  await expect(page.locator('#dryrun-tree')).toContainText('✓ holds — StageName eq "Closed Won"');
  await expect(page.locator('#dryrun-tree')).toContainText('✗ fails — Amount gte 100: Amount is 50');
  await shot(page, '04-dry-run');

  // Previous values: a workflow on the stage's change matches only when the stage moved.
  const auth = { Authorization: `Bearer ${env('ADMIN_TOKEN')}` };
  const companyId = (await (await request.get(`${env('ADMIN_URL')}/admin/v1/session`, { headers: auth })).json()).company_id;
  const created = await request.post(`${env('ADMIN_URL')}/admin/v1/companies/${companyId}/workflows`, {
    headers: auth,
    data: {
      integration_id: env('INTEGRATION_ID'), name: 'Stage moved to won', object_type: 'Opportunity', triggers: ['updated'],
      conditions: { all: [{ field: 'StageName', op: 'changed_to', value: 'Closed Won' }] }, user_field: 'OwnerId',
      activity_type: 'browser_stage', active: false,
    },
  });
  expect(created.status()).toBe(201);
  await page.getByRole('link', { name: 'Integrations' }).click();
  await page.getByRole('link', { name: 'Workflows' }).click();
  await page.getByRole('row', { name: /Stage moved to won/ }).getByRole('button', { name: 'Dry run' }).click();
  await dryRun.getByLabel('Sample record fields (JSON object)').fill('{"StageName": "Closed Won", "OwnerId": "005X"}');
  await dryRun.getByLabel('Change', { exact: true }).selectOption('updated');
  const previous = dryRun.getByLabel('Previous values (JSON object; optional, for updates)');
  await previous.fill('{"StageName": "Closed Won"}');
  await page.getByRole('button', { name: 'Run dry run' }).click();
  await expect(page.locator('#dryrun-result')).toContainText('Does not match');
  await previous.fill('{"StageName": "Negotiation/Review"}');
  await page.getByRole('button', { name: 'Run dry run' }).click();
  await expect(page.locator('#dryrun-result')).toContainText('Matches');
  await page.locator('#dryrun-tree summary').click();
  await expect(page.locator('#dryrun-tree')).toContainText('(was "Negotiation/Review")');
  await previous.fill('[1]');
  await page.getByRole('button', { name: 'Run dry run' }).click();
  await expect(page.locator('#dryrun-result')).toContainText('The previous values are not a JSON object.');
  await expect(previous).toHaveAttribute('aria-invalid', 'true');
  await shot(page, '04b-dry-run-previous-values');

  // A comparison the builder's rows cannot show (a typed one) opens in the JSON editor, and
  // saving the workflow from the page keeps it as it was.
  const typed = { all: [{ field: 'Amount', op: 'gt', value: '1000', type: 'number' }] };
  const typedWorkflow = await (await request.patch(
    `${env('ADMIN_URL')}/admin/v1/companies/${companyId}/workflows/${(await created.json()).id}`,
    { headers: auth, data: { conditions: typed } },
  )).json();
  expect(typedWorkflow.conditions).toEqual(typed);
  await page.getByRole('link', { name: 'Integrations' }).click();
  await page.getByRole('link', { name: 'Workflows' }).click();
  await page.getByRole('row', { name: /Stage moved to won/ }).getByRole('button', { name: 'Edit' }).click();
  await expect(page.locator('#conditions-advanced')).toHaveAttribute('open', '');
  await page.locator('#workflow-form').getByRole('button', { name: 'Save workflow' }).click();
  await expect(page.locator('#workflow-form')).toBeHidden();
  const saved = await (await request.get(
    `${env('ADMIN_URL')}/admin/v1/companies/${companyId}/workflows/${typedWorkflow.id}`, { headers: auth },
  )).json();
  expect(saved.conditions).toEqual(typed);

  // A team to place people on.
  await page.getByRole('link', { name: 'Teams' }).click();
  await page.locator('#team-form').getByLabel('New team').fill('Browser team');
  await page.getByRole('button', { name: 'Create team' }).click();
  await expect(page.getByRole('row', { name: /Browser team/ })).toBeVisible();

  // Salesforce reports a won deal of a rep crm-sync has never seen: auto-sync creates a pending user.
  const owner = '005BROWSER000001';
  const posted = await request.post(
    `${env('INGEST_URL')}/v1/integrations/${env('INTEGRATION_ID')}/salesforce/outbound-messages?token=${env('WEBHOOK_TOKEN')}`,
    { headers: { 'content-type': 'text/xml; charset=utf-8', SOAPAction: '""' }, data: outboundMessage(env('ORG_ID'), '04l00000000BR01AAA', '006000000000BR1AAA', owner, '1250.50') },
  );
  expect(posted.status()).toBe(200);

  // The leaderboard does not show the new rep yet: a pending user is on no team.
  await page.getByRole('link', { name: 'Leaderboard' }).click();
  await page.locator('#leaderboard-form').getByLabel('Activity type').fill('browser_deal');
  await page.getByRole('button', { name: 'Show leaderboard' }).click();
  await expect(page.locator('#leaderboard-body')).toContainText('Nobody on a team');
  await shot(page, '05-leaderboard-before');

  await page.getByRole('link', { name: 'Users' }).click();
  const row = page.getByRole('row', { name: new RegExp(owner) });
  await expect(async () => {
    await page.getByRole('button', { name: 'Show', exact: true }).click();
    await expect(row).toBeVisible({ timeout: 1_000 });
  }).toPass({ timeout: 60_000 });
  await expect(row).toContainText('pending');
  await expect(row).toContainText('auto-synced');
  await shot(page, '06-pending-user');

  // Place the user on the team: active, and on the leaderboard with the deal recorded before.
  await row.getByLabel(`Team for ${owner}`).selectOption({ label: 'Browser team' });
  await row.getByRole('button', { name: `Place ${owner} on team` }).click();
  await expect(page.locator('#flash')).toContainText(`${owner} placed on Browser team and now active`);
  await page.locator('#users-filter').getByLabel('Show', { exact: true }).selectOption('active');
  await page.getByRole('button', { name: 'Show', exact: true }).click();
  await expect(page.getByRole('row', { name: new RegExp(owner) })).toContainText('Browser team');
  // Which CRM identity the user has.
  await expect(page.getByRole('row', { name: new RegExp(owner) })).toContainText(`salesforce (salesforce): ${owner}`);

  await page.getByRole('link', { name: 'Leaderboard' }).click();
  await page.locator('#leaderboard-form').getByLabel('Activity type').fill('browser_deal');
  await page.getByRole('button', { name: 'Show leaderboard' }).click();
  const entry = page.locator('#leaderboard-body tr').first();
  await expect(entry).toContainText(owner);
  await expect(entry).toContainText('1250.50');
  await expect(entry).toContainText('Browser team');
  await shot(page, '07-leaderboard-after');

  // Periods in the company's time zone: an unknown zone is refused naming the field.
  await expect(page.locator('#tz-current')).toHaveText('UTC');
  await page.getByLabel('Company time zone').fill('Mars/Olympus_Mons');
  await page.getByRole('button', { name: 'Save settings' }).click();
  await expect(page.locator('#tz-error')).toContainText('time_zone');
  await page.getByLabel('Company time zone').fill('Europe/Oslo');
  await page.getByRole('button', { name: 'Save settings' }).click();
  await expect(page.locator('#flash')).toContainText('Periods now run in Europe/Oslo');
  await expect(page.locator('#tz-current')).toHaveText('Europe/Oslo');
  await expect(page.locator('#leaderboard-body tr').first()).toContainText(owner);
  await shot(page, '07b-time-zone');

  // The integration's health now: an active workflow, a webhook minutes ago, one match.
  await page.getByRole('link', { name: 'Integrations' }).click();
  await expect(health).toContainText('OK');
  await expect(health).toContainText(/Last webhook (just now|\d+ min ago)/);
  await expect(health).toContainText('Last refused request 2 h ago: 401 invalid_signature');
  await expect(health).toContainText('Last hour: 1 matched (0 unmapped)');
  await expect(health).not.toContainText('null');
  await shot(page, '07c-health');

  // Every change is in the audit log.
  await page.getByRole('link', { name: 'Audit log' }).click();
  // Readable: who, what on which object by name, and before → after.
  const audit = page.locator('#audit-body');
  await expect(audit).toContainText(`placed user ${owner} on team Browser team`);
  await expect(audit.getByRole('row', { name: /changed integration salesforce/ })).toContainText('auto sync users: off → on');
  await expect(audit).toContainText('created workflow Browser wins');
  await expect(audit.getByRole('row', { name: /changed settings of company/ })).toContainText('time zone: UTC → Europe/Oslo');
  await shot(page, '08-audit-log');
  expect(errors).toEqual([]);
  expect(refusedInput).toBe(2);
});

test('a viewer sees everything and can change nothing', async ({ page }) => {
  await page.goto('/admin/');
  await page.getByLabel('Admin API token').fill(env('VIEWER_TOKEN'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#who-text')).toContainText('viewer');
  await expect(page.getByRole('switch', { name: 'Auto-sync users for salesforce' })).toBeDisabled();
  await expect(page.getByText('Add an integration')).toBeHidden();
  await page.locator('#credentials summary').click();
  await expect(page.locator('#cred-status')).toContainText('CRM API credentials');
  await expect(page.locator('#credentials-form')).toBeHidden();
  await page.getByRole('link', { name: 'Workflows' }).click();
  await expect(page.getByRole('button', { name: 'New workflow' })).toBeHidden();
  await expect(page.getByRole('row', { name: /Browser wins/ })).toBeVisible();
  await expect(page.getByRole('button', { name: 'Dry run' })).toHaveCount(0);
  await page.getByRole('link', { name: 'Leaderboard' }).click();
  await expect(page.locator('#tz-current')).toHaveText('Europe/Oslo');
  await expect(page.locator('#tz-form')).toBeHidden();
  await shot(page, '09-viewer');
});
