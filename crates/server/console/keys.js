// Web API keys of the chosen organisation: create (the key shown once, with a copy button) and revoke.

import { del, get, post, seg } from './api.js';
import { action, clearStatus, field, form, h, notify, pagedTable, screen, time } from './ui.js';

/**
 * Puts `text` on the clipboard; where the Clipboard API is unavailable (plain HTTP to another host) or refused,
 * selects the key and copies the selection.
 */
async function copy(text, source) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return;
    } catch {
      // Refused (no permission, document not focused): the selection below still works.
    }
  }
  const range = document.createRange();
  range.selectNodeContents(source);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  if (!document.execCommand('copy')) throw new Error('Copying is not available here: the key is selected, copy it with the keyboard.');
}

function state(k) {
  if (k.revoked_at !== null && k.revoked_at !== undefined) return `revoked ${time(k.revoked_at)}`;
  if (k.expires_at !== null && k.expires_at !== undefined && k.expires_at * 1000 <= Date.now()) return 'expired';
  return 'active';
}

export function render(ctx) {
  const base = `/organisations/${seg(ctx.org)}/keys`;
  const shown = h('section', { class: 'panel new-key', 'aria-label': 'The new key', hidden: true });

  const table = pagedTable({
    testid: 'keys-table',
    caption: `Web API keys of ${ctx.org}`,
    empty: 'No keys yet.',
    load: (cursor) => get(base, { cursor }),
    columns: [
      { title: 'Prefix', cell: (k) => k.prefix },
      { title: 'Name', cell: (k) => k.name ?? '' },
      { title: 'User', cell: (k) => k.username },
      { title: 'State', cell: state },
      { title: 'Expires', class: 'time', cell: (k) => time(k.expires_at) },
      { title: 'Last used', class: 'time', cell: (k) => time(k.last_used_at) },
      {
        title: 'Actions',
        class: 'actions-cell',
        cell: (k) =>
          k.revoked_at === null || k.revoked_at === undefined
            ? action('Revoke', `Revoke key ${k.prefix}`, async () => {
                await del(`${base}/${seg(k.id)}`);
                notify(`Key ${k.prefix} revoked; its sessions have ended.`);
                await table.refresh();
              })
            : '',
      },
    ],
  });

  function show(created) {
    const value = h('code', { 'data-testid': 'new-key-value', class: 'secret' }, created.key);
    const copied = h('span', { class: 'hint', role: 'status' });
    shown.replaceChildren(
      h('h2', { tabindex: '-1' }, `New key for ${created.username}`),
      h('p', {}, 'Copy the key now: it is shown this once and cannot be read again.'),
      h('div', { class: 'key-line' }, value),
      h(
        'div',
        { class: 'actions' },
        action('Copy', 'Copy the key', async () => {
          await copy(created.key, value);
          copied.textContent = 'Copied.';
        }),
        h('button', { type: 'button', onclick: () => { shown.replaceChildren(); shown.hidden = true; } }, 'Done'),
        copied,
      ),
    );
    shown.hidden = false;
    shown.querySelector('h2').focus();
  }

  const create = form(
    { 'data-testid': 'create-key-form', 'aria-label': 'Create a key' },
    [
      field('Username', { name: 'username', required: true, autocomplete: 'off' }, 'The user the key logs in as'),
      field('Name', { name: 'name', autocomplete: 'off' }, 'Optional'),
      field('Expires', { name: 'expires_at', type: 'datetime-local' }, 'Optional, your local time'),
    ],
    'Create key',
    async (values, element) => {
      const body = { username: values.username };
      if (values.name) body.name = values.name;
      if (values.expires_at) {
        const at = new Date(values.expires_at).getTime();
        if (Number.isNaN(at)) throw new Error('The expiry is not a date and time.');
        body.expires_at = Math.floor(at / 1000);
      }
      const created = await post(base, body);
      element.reset();
      clearStatus();
      show(created);
      await table.reload();
    },
  );
  screen(`Web API keys of ${ctx.org}`, h('h2', {}, 'Create a key'), create, shown, table.element);
}
