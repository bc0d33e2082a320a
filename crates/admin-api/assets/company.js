// The company's settings on the leaderboard panel: everyone sees in which time zone dates of
// periods begin and end; admins change it (an IANA name, refused by the API when unknown) and
// after how many minutes without webhooks an integration's health turns red.
// Uses the helpers of app.js (api, el, company, guarded, ...), loaded before it.
'use strict';

async function loadCompanySettings() {
  const settings = await api('GET', `${company()}/settings`);
  $('tz-current').textContent = settings.time_zone;
  $('tz-form').hidden = !isAdmin();
  $('tz-name').value = settings.time_zone;
  $('silence-minutes').value = String(settings.silence_alert_minutes);
  // The browser's list of zones, where it has one, as suggestions.
  if (!$('tz-names').children.length && Intl.supportedValuesOf) {
    $('tz-names').replaceChildren(...Intl.supportedValuesOf('timeZone').map((z) => el('option', { value: z })));
  }
}

async function saveTimeZone(event) {
  event.preventDefault();
  const form = $('tz-form');
  clearError('tz-error', form);
  await guarded('tz-error', async () => {
    const saved = await api('PATCH', `${company()}/settings`, {
      time_zone: $('tz-name').value.trim(), silence_alert_minutes: Number($('silence-minutes').value),
    });
    $('tz-current').textContent = saved.time_zone;
    flash(`Periods now run in ${saved.time_zone}.`);
    await loadLeaderboard();
  }, form);
}

document.addEventListener('DOMContentLoaded', () => {
  $('tz-form').addEventListener('submit', saveTimeZone);
});
