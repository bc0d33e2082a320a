// The workflow dry run on the management page: a sample record (and, for updates, its previous
// values, which change operators such as `changed` and `changed_to` compare with) tested against
// one workflow, showing the verdict, the reason in words and every condition. Nothing is recorded.
// Uses the helpers of app.js (api, el, company, ...), loaded before it.
'use strict';

function openDryRun(w) {
  $('dryrun-form').hidden = false;
  $('dryrun-form').dataset.workflow = w.id;
  $('dryrun-name').textContent = w.name;
  $('dryrun-result').replaceChildren();
  $('dryrun-fields').focus();
}

const VERDICTS = { match: '✓ holds', no_match: '✗ fails', unknown: '? unknown', type_mismatch: '✗ wrong type' };

/// One node of the dry run's condition tree (from WorkflowSpec::explain) as a nested list item.
function conditionNode(n) {
  const what = n.kind === 'compare'
    ? `${n.field} ${n.op}${n.value === undefined ? '' : ` ${JSON.stringify(n.value)}`}`
    : n.kind;
  const shown = n.previous === undefined ? '' : ` (was ${JSON.stringify(n.previous)})`;
  const item = el('li', { class: n.verdict === 'match' ? 'match' : 'nomatch' },
    el('span', { text: `${VERDICTS[n.verdict] || n.verdict} — ${what}${n.reason ? `: ${n.reason}` : ''}${shown}` }));
  const children = n.kind === 'not' ? [n.item] : (n.items || []);
  if (children.length) item.append(el('ul', {}, ...children.map(conditionNode)));
  return item;
}

/// The JSON object in a textarea, or an error naming the box; an empty optional box is null.
function sampleObject(id, label, optional) {
  const text = $(id).value.trim();
  if (optional && !text) return { value: null };
  try {
    const value = JSON.parse(text);
    if (value && typeof value === 'object' && !Array.isArray(value)) return { value };
  } catch (_) { /* reported below */ }
  return { error: `The ${label} are not a JSON object.`, field: id };
}

async function runDryRun(event) {
  event.preventDefault();
  const result = $('dryrun-result');
  const fields = sampleObject('dryrun-fields', 'sample fields', false);
  const previous = sampleObject('dryrun-previous', 'previous values', true);
  const bad = fields.error ? fields : previous.error ? previous : null;
  if (bad) {
    result.replaceChildren(el('p', { class: 'error', text: bad.error }));
    $(bad.field).setAttribute('aria-invalid', 'true');
    return;
  }
  for (const id of ['dryrun-fields', 'dryrun-previous']) $(id).removeAttribute('aria-invalid');
  const body = { change_type: $('dryrun-change').value, fields: fields.value };
  if (previous.value) body.previous_fields = previous.value;
  try {
    const r = await api('POST', `${company()}/workflows/${$('dryrun-form').dataset.workflow}/test`, body);
    const parts = [
      el('p', { class: r.matched ? 'match' : 'nomatch', text: r.matched ? 'Matches' : 'Does not match' }),
      el('p', { text: r.explanation }),
    ];
    if (r.failed_conditions.length) {
      parts.push(el('h4', { text: 'Failed conditions' }),
        el('ul', {}, ...r.failed_conditions.map((f) => el('li', { text: `${f.path}: ${f.message}` }))));
    }
    if (r.conditions) {
      parts.push(el('details', { id: 'dryrun-tree' },
        el('summary', { text: 'Every condition' }), el('ul', {}, conditionNode(r.conditions))));
    }
    // replaceChildren would print a null as the text "null": only nodes are passed.
    result.replaceChildren(...parts);
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    result.replaceChildren(el('p', { class: 'error', text: e.field ? `${e.message} (field: ${e.field})` : e.message }));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('dryrun-form').addEventListener('submit', runDryRun);
  $('dryrun-close').addEventListener('click', () => { $('dryrun-form').hidden = true; });
});
