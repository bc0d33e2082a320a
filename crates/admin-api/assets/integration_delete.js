// Deleting an integration from the integrations table: the page first asks the API what goes
// with it, names the counts, and asks the admin to type the integration's name, which the API
// requires as confirmation. Uses the helpers of app.js, loaded before it.
'use strict';

function deletionText(p) {
  return `Deleting ${p.name} removes ${p.workflows} workflows (${p.active_workflows} active), `
    + `${p.crm_identities} CRM user mappings, ${p.unmapped_activities} unmapped and ${p.recorded_activities} recorded activities `
    + `(retracted from leaderboards), ${p.has_credentials ? 'its credentials, ' : ''}${p.sync_jobs} sync jobs. `
    + 'Users stay. Type the integration name to confirm.';
}

function deleteIntegrationCell(i) {
  const cell = el('td', { class: 'admin-only' });
  if (!isAdmin()) return cell;
  cell.append(el('button', {
    type: 'button', text: 'Delete', 'aria-label': `Delete integration ${i.name}`,
    onclick: async () => {
      try {
        const preview = await api('GET', `${company()}/integrations/${i.id}/deletion`);
        const typed = prompt(deletionText(preview));
        if (typed === null) return;
        const gone = await api('DELETE', `${company()}/integrations/${i.id}${query({ confirm: typed })}`);
        flash(`Integration ${gone.name} deleted with ${gone.workflows} workflows and ${gone.recorded_activities} recorded activities.`);
        await loadIntegrations();
      } catch (e) { flash(e.message); }
    },
  }));
  return cell;
}
