// The record trail on the management page, against admin-api and the pipeline running as real
// processes (started by tests/e2e/tests/suites/admin_browser.rs): an admin finds why a deal did not
// count, fixes the workflow, and sees the record's next event count; the integration's health
// shows the events of the last hour; a viewer reads the same story; the recent events and dead
// letters load older pages on "more".
const { test, expect } = require('@playwright/test');
const path = require('path');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/browser/run.sh`);
  return value;
};
const shots = process.env.CRM_SYNC_BROWSER_ARTIFACTS || 'test-results';
const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
const RECORD = '006000000000TR1AAA';

/// A Closed Won opportunity of `amount` in an Outbound Message notification.
function notification(notificationId, record, amount) {
  const fields = {
    Id: record, Amount: amount, CloseDate: '2026-11-20', CreatedDate: '2026-11-01T09:00:00.000Z',
    LastModifiedDate: '2026-11-20T15:04:05.000Z', Name: 'Trail - 5 licenses', OwnerId: '005TRAIL00000001', StageName: 'Closed Won',
  };
  const sobject = Object.entries(fields).map(([k, v]) => `<sf:${k}>${v}</sf:${k}>`).join('');
  return `<Notification><Id>${notificationId}</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">${sobject}</sObject>
   </Notification>`;
}

/// A Salesforce Outbound Message with the notifications.
function outboundMessage(notifications) {
  const orgId = env('ORG_ID');
  return `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>${orgId}</OrganizationId><ActionId>04k5g000000XYZAAA2</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/59.0/${orgId}</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/59.0/${orgId}</PartnerUrl>
   ${notifications.join('')}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>`;
}

async function post(request, notificationId, amount) {
  await postNotifications(request, [notification(notificationId, RECORD, amount)]);
}

async function postNotifications(request, notifications) {
  const posted = await request.post(
    `${env('INGEST_URL')}/v1/integrations/${env('INTEGRATION_ID')}/salesforce/outbound-messages?token=${env('WEBHOOK_TOKEN')}`,
    { headers: { 'content-type': 'text/xml; charset=utf-8', SOAPAction: '""' }, data: outboundMessage(notifications) },
  );
  expect(posted.status()).toBe(200);
}

async function signIn(page, token) {
  await page.goto('/admin/');
  await page.getByLabel('Admin API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.locator('#who-text')).not.toBeEmpty();
}

/// Waits until the evaluator judges events by the workflow `name` saved a moment ago: it learns
/// of saved workflows asynchronously, so an event that overtakes that is judged without it. A
/// probe record of its own, with a new amount each time, is reported until its trail names the
/// workflow.
async function untilEvaluatorJudgesBy(request, auth, companyId, name) {
  const probe = '006000000000TP1AAA';
  const trail = `${env('ADMIN_URL')}/admin/v1/companies/${companyId}/integrations/${env('INTEGRATION_ID')}/records/${probe}/trail`;
  let round = 0;
  await expect(async () => {
    round += 1;
    await postNotifications(request, [notification(`04l00000000TP${String(round).padStart(2, '0')}AAA`, probe, String(round))]);
    await expect(async () => {
      const got = await request.get(trail, { headers: auth });
      expect(got.status()).toBe(200);
      expect(JSON.stringify((await got.json()).events[0]?.decisions ?? [])).toContain(name);
    }).toPass({ timeout: 3_000 });
  }).toPass({ timeout: 60_000 });
}

/// Shows the record's trail until `text` is in it (the pipeline takes a moment).
async function showTrailUntil(page, text, between) {
  const story = page.locator('#trail-story');
  await expect(async () => {
    if (between) await between();
    await page.getByLabel('CRM record id').fill(RECORD);
    await page.getByRole('button', { name: 'Show trail' }).click();
    await expect(story).toContainText(text, { timeout: 1_500 });
  }).toPass({ timeout: 60_000 });
  return story;
}

test('an admin finds why a deal did not count, fixes the workflow and sees the next event count', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

  // A workflow that counts only deals of 1000 or more; the CRM reports one of 50 (which no
  // other workflow counts either).
  const auth = { Authorization: `Bearer ${env('ADMIN_TOKEN')}` };
  const companyId = (await (await request.get(`${env('ADMIN_URL')}/admin/v1/session`, { headers: auth })).json()).company_id;
  const created = await request.post(`${env('ADMIN_URL')}/admin/v1/companies/${companyId}/workflows`, {
    headers: auth,
    data: {
      integration_id: env('INTEGRATION_ID'), name: 'Trail deals', object_type: 'Opportunity', triggers: ['created', 'updated'],
      conditions: { all: [{ field: 'StageName', op: 'eq', value: 'Closed Won' }, { field: 'Amount', op: 'gte', value: 1000 }] },
      user_field: 'OwnerId', value_field: 'Amount', activity_type: 'trail_deal', active: true,
    },
  });
  expect(created.status()).toBe(201);
  await untilEvaluatorJudgesBy(request, auth, companyId, 'Trail deals');
  await post(request, '04l00000000TR01AAA', '50');

  // "Why didn't this deal count?": the recent events offer the record; its trail says why.
  await signIn(page, env('ADMIN_TOKEN'));
  await page.getByRole('link', { name: 'Record trail' }).click();
  await expect(page.getByRole('heading', { name: 'Record trail' })).toBeVisible();
  const recent = page.locator('#trail-recent-body');
  await expect(async () => {
    await page.getByLabel('Only events that did not count').setChecked(false);
    await page.getByLabel('Only events that did not count').setChecked(true);
    await expect(recent).toContainText(RECORD, { timeout: 1_500 });
  }).toPass({ timeout: 60_000 });
  await recent.getByRole('button', { name: `Show the trail of Opportunity ${RECORD}` }).first().click();
  const story = page.locator('#trail-story');
  await expect(story).toContainText('Trail deals: did not count');
  await expect(story).toContainText('Amount is "50"; the condition wants gte 1000');
  await expect(story).toContainText('via salesforce webhook (event');
  await expect(story).toContainText('delivery 04l00000000TR01AAA');
  await shot(page, '20-trail-did-not-count');

  // Fix the workflow in the page: 10 is the threshold the company meant.
  await page.getByRole('link', { name: 'Workflows' }).click();
  await page.getByRole('row', { name: /Trail deals/ }).getByRole('button', { name: 'Edit' }).click();
  const amount = page.locator('#workflow-form #condition-rows li').nth(1);
  await expect(amount.getByLabel('Field')).toHaveValue('Amount');
  await amount.getByLabel('Value').fill('10');
  await page.locator('#workflow-form').getByRole('button', { name: 'Save workflow' }).click();
  await expect(page.locator('#flash')).toContainText('Workflow Trail deals saved and active');
  await shot(page, '21-trail-workflow-fixed');

  // The record's next event counts (sent again until the evaluator has the fixed workflow),
  // and the trail shows it counted and what followed.
  await page.getByRole('link', { name: 'Record trail' }).click();
  let round = 0;
  await showTrailUntil(page, 'Trail deals: counted', async () => {
    round += 1;
    await post(request, `04l00000000TR${String(10 + round).padStart(2, '0')}AAA`, String(50 + round));
  });
  await expect(story).toContainText(/Trail deals: activity recorded/);
  await expect(story).toContainText('Trail deals: did not count');
  await shot(page, '22-trail-counted');

  // The integration's health now counts the events of the last hour and the share counted.
  await page.getByRole('link', { name: 'Integrations' }).click();
  const health = page.locator('td[aria-label="Health of salesforce"]');
  await expect(health).toContainText(/Last hour: \d+ events, \d+% counted/);
  await expect(health).toContainText(/Dead letters: \d+ last hour/);
  await shot(page, '23-trail-health');
  expect(errors).toEqual([]);
});

test('a viewer reads a record trail', async ({ page }) => {
  await signIn(page, env('VIEWER_TOKEN'));
  await page.getByRole('link', { name: 'Record trail' }).click();
  const story = await showTrailUntil(page, 'Trail deals: counted');
  await expect(story).toContainText('Amount is "50"; the condition wants gte 1000');
  await expect(page.locator('#trail-dead-body')).toBeVisible();
  await shot(page, '24-trail-viewer');
});

test('the recent events and the dead letters load older pages on "more"', async ({ page, request }) => {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // 35 events, newer than any before: the first page (30) shows only some of them, the rest
  // come with "Load older events".
  const records = Array.from({ length: 35 }, (_, i) => `006PAGE000000${String(i).padStart(2, '0')}A`);
  await postNotifications(request, records.map((r, i) => notification(`04l0000000PG${String(i).padStart(2, '0')}AAA`, r, '5')));
  const shown = async (locator) => {
    const text = await locator.innerText();
    return records.filter((r) => text.includes(r)).length;
  };

  // Until the evaluator has recorded every one of them (the page is opened after).
  const auth = { Authorization: `Bearer ${env('ADMIN_TOKEN')}` };
  const companyId = (await (await request.get(`${env('ADMIN_URL')}/admin/v1/session`, { headers: auth })).json()).company_id;
  const trailApi = `${env('ADMIN_URL')}/admin/v1/companies/${companyId}/integrations/${env('INTEGRATION_ID')}/trail?limit=100`;
  await expect(async () => {
    const items = (await (await request.get(trailApi, { headers: auth })).json()).items;
    expect(records.filter((r) => items.some((e) => e.record_id === r)).length).toBe(35);
  }).toPass({ timeout: 60_000 });

  await signIn(page, env('ADMIN_TOKEN'));
  await page.getByRole('link', { name: 'Record trail' }).click();
  const recent = page.locator('#trail-recent-body');
  await expect(recent.locator('tr')).toHaveCount(30);
  expect(await shown(recent)).toBe(30);
  const olderEvents = page.getByRole('button', { name: 'Load older events' });
  await expect(olderEvents).toBeVisible();
  await olderEvents.click();
  await expect(async () => expect(await shown(recent)).toBe(35)).toPass({ timeout: 5_000 });
  expect(await recent.locator('tr').count()).toBeGreaterThan(30);

  // The 35 dead letters the runner recorded: 30, then the 5 oldest, then no more button.
  const dead = page.locator('#trail-dead-body');
  await expect(dead).toContainText('dead letter number 34');
  await expect(dead).not.toContainText('dead letter number 4');
  await page.getByRole('button', { name: 'Load older dead letters' }).click();
  await expect(dead).toContainText('dead letter number 0');
  await expect(dead.locator('tr')).toHaveCount(35);
  await expect(page.getByRole('button', { name: 'Load older dead letters' })).toBeHidden();
  await shot(page, '25-trail-more');
  expect(errors).toEqual([]);
});
