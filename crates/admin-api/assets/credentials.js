// An integration's CRM credentials on the management page, write-only: the page shows which parts
// are set and when, never a value, and clears what was typed once it is stored.
// Uses the helpers of app.js (api, el, company, ...), loaded before it.
'use strict';

const CREDENTIAL_NAMES = {
  webhook_secret: 'Webhook signing secret', webhook_basic_auth: 'Webhook basic auth',
  webhook_key: 'Webhook key', api: 'CRM API credentials',
};

async function loadCredentials() {
  const id = $('cred-integration').value;
  const body = $('cred-status');
  body.replaceChildren();
  if (!id) return;
  const view = await api('GET', `${company()}/integrations/${id}/credentials`);
  for (const part of view.parts) {
    // Only the parts this integration's CRM uses are offered.
    document.querySelector(`#credentials-form [data-part="${part.part}"]`).hidden = !part.used_by_crm;
    if (!part.used_by_crm) continue;
    body.append(el('tr', {},
      el('th', { scope: 'row', text: CREDENTIAL_NAMES[part.part] || part.part }),
      el('td', { text: part.set ? 'set' : 'not set' }),
      el('td', { text: part.rotated_at ? part.rotated_at.replace('T', ' ').slice(0, 19) : '' })));
  }
}

/// The parts filled in: a part is sent only when its first field is, and then whole.
function credentialsBody() {
  const v = (id) => $(id).value.trim() || undefined;
  const body = {};
  if (v('cred-secret')) body.webhook_secret = $('cred-secret').value;
  if (v('cred-basic-user')) body.webhook_basic_auth = { username: v('cred-basic-user'), password: $('cred-basic-password').value };
  if (v('cred-key-header') || v('cred-key-query')) {
    body.webhook_key = { header: v('cred-key-header'), query: v('cred-key-query'), value: $('cred-key-value').value };
  }
  if (v('cred-api-url') || v('cred-api-token') || v('cred-oauth-id')) {
    body.api = { base_url: v('cred-api-url'), access_token: v('cred-api-token') };
    if (v('cred-oauth-id')) {
      body.api.oauth = { client_id: v('cred-oauth-id'), client_secret: $('cred-oauth-secret').value, refresh_token: v('cred-oauth-refresh'), tenant_id: v('cred-oauth-tenant') };
    }
  }
  return body;
}

async function saveCredentials(event) {
  event.preventDefault();
  const form = event.target;
  clearError('credentials-error', form);
  await guarded('credentials-error', async () => {
    await api('PATCH', `${company()}/integrations/${$('cred-integration').value}/credentials`, credentialsBody());
    // Write-only: nothing typed stays on the page once stored.
    form.reset();
    flash('Credentials saved.');
    await loadCredentials();
  }, form);
}

document.addEventListener('DOMContentLoaded', () => {
  $('cred-integration').addEventListener('change', () => loadCredentials().catch(reportUnexpected));
  $('credentials-form').addEventListener('submit', saveCredentials);
});
